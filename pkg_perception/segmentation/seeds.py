# Copyright 2026 The pkg_perception Authors
# SPDX-License-Identifier: Apache-2.0
"""Growing seed blobs back into instance masks: shared by the model's decoder and the baseline."""

from __future__ import annotations

import cv2
import numpy as np
import numpy.typing as npt


def label_seeds(
    seeds: npt.NDArray[np.bool_], min_pixels: int
) -> tuple[npt.NDArray[np.int32], int]:
    """Connected seed blobs (4-connected) numbered 1..n; blobs under `min_pixels` dropped."""
    n, comp, stats, _ = cv2.connectedComponentsWithStats(seeds.astype(np.uint8), connectivity=4)
    keep = stats[:, cv2.CC_STAT_AREA] >= min_pixels
    keep[0] = False
    lut = np.zeros(n, dtype=np.int32)
    lut[keep] = np.arange(1, int(keep.sum()) + 1, dtype=np.int32)
    return lut[comp], int(keep.sum())


def grow_seeds(
    seed_labels: npt.NDArray[np.int32], foreground: npt.NDArray[np.bool_], max_distance: float
) -> npt.NDArray[np.int32]:
    """Give each foreground pixel the label of the nearest seed within `max_distance` px.

    Seeds are eroded parcels, so the nearest seed is the parcel a pixel belongs to, also
    where two parcels touch; foreground far from every seed (specks, slivers) stays 0.
    """
    is_seed = seed_labels > 0
    if not is_seed.any():
        return np.zeros(seed_labels.shape, dtype=np.int32)
    dist, nearest = cv2.distanceTransformWithLabels(
        (~is_seed).astype(np.uint8), cv2.DIST_L2, 3, labelType=cv2.DIST_LABEL_PIXEL
    )
    lut = np.zeros(int(nearest.max()) + 1, dtype=np.int32)
    lut[nearest[is_seed]] = seed_labels[is_seed]
    grown = lut[nearest]
    grown[~(foreground | is_seed) | (dist > max_distance)] = 0
    return grown
