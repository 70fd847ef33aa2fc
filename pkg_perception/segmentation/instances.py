# Copyright 2026 The pkg_perception Authors
# SPDX-License-Identifier: Apache-2.0
"""What every segmenter returns: one label image plus a record per instance.

A label image (instead of one boolean mask per instance) costs one array per frame and
makes masks disjoint by construction; per-instance masks are cut out lazily by box.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
from scipy import ndimage

from pkg_perception.classes import ParcelClass

FLAG_NO_DEPTH = 'no_valid_depth'


@dataclass(frozen=True)
class Instance:
    """One segmented parcel. `label` is its value in `Segmentation.labels`."""

    label: int
    parcel_class: ParcelClass
    score: float  # 0..1
    box: tuple[int, int, int, int]  # x0, y0, x1, y1 in pixels, x1/y1 exclusive
    area: int  # pixels
    # Other classes the mask may be, most likely first, each with its score on the scale of
    # `score` (which is that of `parcel_class`): what a segmenter unsure between a mailer
    # and a box says, for COCO scoring and vision_msgs' list of hypotheses.
    alternatives: tuple[tuple[ParcelClass, float], ...] = ()
    # Probability of each ParcelClass in the enum's order, summing to 1: what the tracker's
    # class memory pools over a parcel's frames. Empty where the segmenter gives no
    # distribution (the geometric baseline, ground truth).
    class_probs: tuple[float, ...] = ()


@dataclass
class Segmentation:
    """Instances of one frame at the frame's resolution."""

    labels: npt.NDArray[np.uint16]  # (H, W), 0 = belt / nothing
    instances: list[Instance]
    flags: tuple[str, ...] = ()
    timings_ms: dict[str, float] = field(default_factory=dict)

    def mask(self, inst: Instance) -> npt.NDArray[np.bool_]:
        """Full-frame boolean mask of one instance."""
        out = np.zeros(self.labels.shape, dtype=bool)
        x0, y0, x1, y1 = inst.box
        out[y0:y1, x0:x1] = self.labels[y0:y1, x0:x1] == inst.label
        return out

    def crop(self, inst: Instance) -> npt.NDArray[np.bool_]:
        """The instance's mask inside its box (cheap: no full-frame array)."""
        x0, y0, x1, y1 = inst.box
        return self.labels[y0:y1, x0:x1] == inst.label

    @classmethod
    def empty(cls, height: int, width: int, flags: tuple[str, ...] = ()) -> Segmentation:
        return cls(np.zeros((height, width), dtype=np.uint16), [], flags)


def boxes_and_areas(
    labels: npt.NDArray[np.integer], count: int
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """(count + 1, 4) boxes (x0, y0, x1, y1) and (count + 1,) areas of labels 0..count.

    Rows without pixels (the belt's, an absent label's) are (w, h, 0, 0).
    """
    h, w = labels.shape
    area = np.bincount(labels.ravel(), minlength=count + 1)[: count + 1]
    boxes = np.zeros((count + 1, 4), dtype=np.int64)
    if labels.any():
        boxes[:, 0] = w
        boxes[:, 1] = h
        # One C pass over the image; far faster than ufunc.at on the mask pixels.
        for k, sl in enumerate(ndimage.find_objects(labels, max_label=count), start=1):
            if sl is not None:
                boxes[k] = (sl[1].start, sl[0].start, sl[1].stop, sl[0].stop)
    return boxes, area


def label_means(
    labels: npt.NDArray[np.integer], values: npt.NDArray[np.floating], count: int
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Pixel counts (count + 1,) and means (count + 1, C) of (C, H, W) values per label.

    Labels run 1..count on the values' grid; row 0 (the belt) is left at 0.
    """
    flat = labels.ravel()
    inside = flat > 0
    ids = flat[inside]
    counts = np.bincount(ids, minlength=count + 1).astype(np.float64)
    picked = values.reshape(len(values), -1)[:, inside]
    sums = np.stack([np.bincount(ids, weights=v, minlength=count + 1) for v in picked], axis=1)
    return counts, sums / np.maximum(counts, 1)[:, None]


def group_extrema(
    ids: npt.NDArray[np.integer], values: npt.NDArray[np.floating], count: int
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Min and max of `values` per id 1..count (0 where an id has none).

    A stable sort of small integer ids is a radix sort in numpy, and reduceat then runs
    over contiguous groups: far faster than ufunc.at or scipy's labelled extrema here.
    """
    low, high = np.zeros(count), np.zeros(count)
    if ids.size == 0:
        return low, high
    order = np.argsort(ids, kind='stable')
    ids, values = ids[order], values[order].astype(np.float64)
    starts = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]])
    present = ids[starts].astype(np.int64) - 1
    low[present] = np.minimum.reduceat(values, starts)
    high[present] = np.maximum.reduceat(values, starts)
    return low, high
