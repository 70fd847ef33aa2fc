# Copyright 2026 The pkg_perception Authors
# SPDX-License-Identifier: Apache-2.0
"""Splitting grown masks where the model's instance embeddings say two parcels meet.

Seeds decide most instances, but two failures of seeds remain: two touching parcels whose
seeds joined into one blob come out as one mask, and a parcel showing only a sliver beside
its neighbour has no seed and is swallowed by the neighbour's mask. The embedding head is
trained to keep a parcel's pixels within PULL_MARGIN of their mean and the means of two
parcels 2 * PUSH_MARGIN apart, so a mask whose pixels form two compact clusters of
embeddings farther apart than that holds two parcels.
"""

from __future__ import annotations

import cv2
import numpy as np
import numpy.typing as npt

from pkg_perception.segmentation.instances import label_means
from pkg_perception.segmentation.seeds import grow_seeds

_OPEN = np.ones((3, 3), dtype=np.uint8)


MAX_PARTS = 4  # parcels one mask may split into


def _parts(
    e: npt.NDArray[np.float32], seed_mean: npt.NDArray[np.float64], gap: float
) -> npt.NDArray[np.intp] | None:
    """Which cluster each pixel's embedding falls in, or None for one cluster.

    Centres start at the seed's mean and then at whichever pixel lies farthest from all
    centres (while more than gap / 2 away), three k-means steps settle them, and centres
    closer than `gap` to a larger one are merged into it: a parcel's embeddings drift
    smoothly across it, so halves of one parcel have means closer than `gap`.
    """
    centres = [seed_mean]
    for _ in range(MAX_PARTS - 1):
        d = np.min([np.linalg.norm(e - c, axis=1) for c in centres], axis=0)
        far = int(d.argmax())
        if d[far] <= gap / 2:
            break
        centres.append(e[far].astype(np.float64))
    if len(centres) == 1:
        return None
    c = np.array(centres)
    for _ in range(3):
        part = np.linalg.norm(e[:, None] - c[None], axis=2).argmin(axis=1)
        sizes = np.bincount(part, minlength=len(c))
        for k in np.flatnonzero(sizes):
            c[k] = e[part == k].mean(axis=0)
        keep = sizes > 0
        for k in np.argsort(sizes):  # smallest first: merged into a larger neighbour
            others = keep.copy()
            others[k] = False
            if keep[k] and others.any() and np.linalg.norm(c[others] - c[k], axis=1).min() < gap:
                keep[k] = False
        c = c[keep]
        if len(c) == 1:
            return None
    return np.linalg.norm(e[:, None] - c[None], axis=2).argmin(axis=1)


def split_by_embedding(
    grown: npt.NDArray[np.int32],
    seeds: npt.NDArray[np.int32],
    emb: npt.NDArray[np.float32],
    n: int,
    threshold: float,
    min_pixels: int,
) -> tuple[npt.NDArray[np.int32], int]:
    """Split masks whose pixels' embeddings form clusters with means `threshold` apart.

    A part becomes a parcel when it keeps `min_pixels` (output pixels) after a 3x3 opening,
    so the thin band where embeddings change over at a boundary is never one; what is left
    of a mask joins the nearest part. Returns the labels and their count.
    """
    if n == 0:
        return grown, n
    _, mu = label_means(seeds, emb, n)  # each seed blob's mean embedding
    e_all = emb.reshape(emb.shape[0], -1)
    out = grown.copy()
    count = n
    for label in range(1, n + 1):
        where = np.flatnonzero(grown.ravel() == label)
        if len(where) < 2 * min_pixels:
            continue
        part = _parts(e_all[:, where].T, mu[label], threshold)
        if part is None:
            continue
        parts = np.zeros(grown.size, dtype=np.int32)
        parts[where] = part + 1
        parts = parts.reshape(grown.shape)
        pieces = np.zeros(grown.shape, dtype=np.int32)
        found = 0
        for k in range(1, part.max() + 2):
            mask = cv2.morphologyEx((parts == k).astype(np.uint8), cv2.MORPH_OPEN, _OPEN)
            _, blobs, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=4)
            for b in np.flatnonzero(stats[1:, cv2.CC_STAT_AREA] >= min_pixels) + 1:
                found += 1
                pieces[blobs == b] = found
        if found < 2:
            continue
        host = parts > 0
        filled = grow_seeds(pieces, host, float(max(grown.shape)))
        out[host] = np.where(filled[host] == 1, label, filled[host] + count - 1)
        count += found - 1
    return out, count
