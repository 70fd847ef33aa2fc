# Copyright 2026 The pkg_perception Authors
# SPDX-License-Identifier: Apache-2.0
"""Scoring results against simulator ground truth: masks, grasps, tracks, latency."""
