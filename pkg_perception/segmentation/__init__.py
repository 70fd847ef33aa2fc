# Copyright 2026 The pkg_perception Authors
# SPDX-License-Identifier: Apache-2.0
"""Instance segmenters with one interface: the ONNX model and the depth-only baseline."""
