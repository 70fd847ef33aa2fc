# Copyright 2026 The pkg_perception Authors
# SPDX-License-Identifier: Apache-2.0
"""Training targets from an instance label image: class per pixel and distance to the edge.

The model predicts, at its output stride, a class per pixel (0 = belt) and a truncated
distance from each parcel pixel to the nearest edge of its own instance. Thresholding that
distance leaves one seed blob per parcel even where parcels touch; the post-process grows
the seeds back to full masks.
"""

from __future__ import annotations

from collections.abc import Mapping

import cv2
import numpy as np
import numpy.typing as npt

from pkg_perception.errors import ConfigError
from pkg_perception.segmentation.inputs import centre_samples

EDGE_DISTANCE_PX = 3.0  # distances are truncated here (output pixels), then scaled to 0..1


def downsample_labels(
    labels: npt.NDArray[np.integer], out_width: int, out_height: int
) -> npt.NDArray[np.integer]:
    """Nearest sampling at output pixel centres: no blending of ids."""
    vs = centre_samples(out_height, labels.shape[0])
    us = centre_samples(out_width, labels.shape[1])
    return labels[np.ix_(vs, us)]


def edge_distance(labels: npt.NDArray[np.integer]) -> npt.NDArray[np.float32]:
    """0..1: distance to the nearest pixel of another label, truncated at EDGE_DISTANCE_PX."""
    edge = np.zeros(labels.shape, dtype=bool)
    dx = labels[:, 1:] != labels[:, :-1]
    dy = labels[1:, :] != labels[:-1, :]
    edge[:, 1:] |= dx
    edge[:, :-1] |= dx
    edge[1:, :] |= dy
    edge[:-1, :] |= dy
    inside = ((labels > 0) & ~edge).astype(np.uint8)
    dist = cv2.distanceTransform(inside, cv2.DIST_L2, 3)
    return np.minimum(dist / EDGE_DISTANCE_PX, 1.0).astype(np.float32)


def class_map(
    labels: npt.NDArray[np.integer], class_of: Mapping[int, int]
) -> npt.NDArray[np.uint8]:
    """Per-pixel class id (0 = background) from instance ids and an id -> class table."""
    lut_ids = np.fromiter(class_of.keys(), dtype=np.int64, count=len(class_of))
    lut_cls = np.fromiter(class_of.values(), dtype=np.uint8, count=len(class_of))
    out = np.zeros(labels.shape, dtype=np.uint8)
    if len(lut_ids):
        order = np.argsort(lut_ids)
        lut_ids, lut_cls = lut_ids[order], lut_cls[order]
        pos = np.clip(np.searchsorted(lut_ids, labels), 0, len(lut_ids) - 1)
        hit = (lut_ids[pos] == labels) & (labels > 0)
        out[hit] = lut_cls[pos[hit]]
    return out


def instance_index(labels: npt.NDArray[np.integer]) -> npt.NDArray[np.uint8]:
    """Instance ids renumbered 1..k within the frame (0 stays belt), for the embedding loss."""
    ids, inverse = np.unique(labels, return_inverse=True)
    inverse = inverse.reshape(labels.shape)
    if ids[0] != 0:
        inverse = inverse + 1  # no belt pixel in the frame: ids start at 1 all the same
    if inverse.max() > 255:
        raise ConfigError(
            f'a frame holds {int(inverse.max())} instances; at most 255 fit a training sample'
        )
    return inverse.astype(np.uint8)
