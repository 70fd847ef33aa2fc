# Copyright 2026 The pkg_perception Authors
# SPDX-License-Identifier: Apache-2.0
"""Simulated RGB-D camera over a conveyor of parcels, with ground truth, written as bags."""
