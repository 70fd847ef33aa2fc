# Copyright 2026 The pkg_perception Authors
# SPDX-License-Identifier: Apache-2.0
"""Simulated RGB-D camera over a conveyor of parcels, with ground truth, written as bags."""

# Bumped whenever the same seed renders different frames (layout, looks, sensor model):
# training caches are keyed by it, so a retrain never reads frames of an older simulator.
# 2: piles settle with their centre supported, at most 0.55 m tall and 0.4 m below the camera.
SIM_VERSION = 2
