# Copyright 2026 The pkg_perception Authors
# SPDX-License-Identifier: Apache-2.0
"""Training the segmenter in pure PyTorch: model, data, loop, ONNX export."""
