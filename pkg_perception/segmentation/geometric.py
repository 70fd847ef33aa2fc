# Copyright 2026 The pkg_perception Authors
# SPDX-License-Identifier: Apache-2.0
"""Depth-only baseline: remove the belt plane, cut at height jumps, grow the pieces back.

It needs no model, so it is the fallback when none loads and the bar the model must clear.
It cannot split parcels of equal height that touch, nor tell a poly bag from a box well.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import cv2
import numpy as np

from pkg_perception.classes import ParcelClass
from pkg_perception.frames import RGBDFrame
from pkg_perception.segmentation.belt import BeltPlane
from pkg_perception.segmentation.inputs import InputSpec, height_map
from pkg_perception.segmentation.instances import (
    FLAG_NO_DEPTH,
    Instance,
    Segmentation,
    boxes_and_areas,
)
from pkg_perception.segmentation.seeds import grow_seeds, label_seeds


@dataclass(frozen=True)
class GeometricParams:
    """Thresholds in metres and working-resolution pixels."""

    min_height: float = 0.006  # above the belt: parcel, not belt
    edge_step: float = 0.010  # height jump between neighbouring pixels that marks an edge
    min_seed_pixels: int = 12
    grow_distance: float = 3.0
    min_valid_depth: float = 0.02
    envelope_height: float = 0.015  # class guesses from the height of the top
    mailer_height: float = 0.06
    bag_roughness: float = 0.006  # std of height on the top above which it is a poly bag


class GeometricSegmenter:
    """Works at 320x240 (any 4:3 frame), returns masks at the frame's size."""

    name = 'geometric'
    provider = 'numpy'

    def __init__(self, params: GeometricParams | None = None) -> None:
        self.params = params or GeometricParams()
        self.spec = InputSpec()

    def segment(
        self, frame: RGBDFrame, belt: BeltPlane, belt_velocity: object = None
    ) -> Segmentation:
        p = self.params
        t0 = time.perf_counter()
        h_full, w_full = frame.depth.shape
        height, valid = height_map(self.spec, frame.depth, frame.camera, belt)
        if valid.mean() < p.min_valid_depth:
            return Segmentation.empty(h_full, w_full, flags=(FLAG_NO_DEPTH,))
        smooth = cv2.medianBlur(height, 5)
        fg = valid & (smooth > p.min_height)
        edge = np.zeros_like(fg)
        dx = np.abs(np.diff(smooth, axis=1)) > p.edge_step
        dy = np.abs(np.diff(smooth, axis=0)) > p.edge_step
        edge[:, 1:] |= dx
        edge[:, :-1] |= dx
        edge[1:, :] |= dy
        edge[:-1, :] |= dy
        seeds = cv2.erode((fg & ~edge).astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
        seed_labels, n = label_seeds(seeds, p.min_seed_pixels)
        # Holes in depth inside a parcel are filled by growing; belt holes stay out (fg only).
        grown = grow_seeds(
            seed_labels, fg | (~valid & cv2.dilate(fg.astype(np.uint8), None) > 0), p.grow_distance
        )
        t1 = time.perf_counter()
        labels = cv2.resize(
            grown.astype(np.uint16), (w_full, h_full), interpolation=cv2.INTER_NEAREST
        )
        boxes, areas = boxes_and_areas(labels, n)
        instances = []
        flat = grown.ravel()
        inside = flat > 0
        counts = np.bincount(flat[inside], minlength=n + 1)
        sums = np.bincount(flat[inside], weights=smooth.ravel()[inside], minlength=n + 1)
        sq = np.bincount(flat[inside], weights=smooth.ravel()[inside] ** 2, minlength=n + 1)
        seed_counts = np.bincount(seed_labels.ravel(), minlength=n + 1)
        dropped: list[int] = []
        for k in range(1, n + 1):
            if areas[k] == 0 or counts[k] == 0:
                continue
            if boxes[k][0] == 0 and boxes[k][2] == w_full:
                dropped.append(k)  # spans the whole view along the belt: a side guard
                continue
            mean = sums[k] / counts[k]
            std = float(np.sqrt(max(sq[k] / counts[k] - mean**2, 0.0)))
            if mean < p.envelope_height:
                cls = ParcelClass.ENVELOPE
            elif std > p.bag_roughness:
                cls = ParcelClass.POLYBAG
            elif mean < p.mailer_height:
                cls = ParcelClass.MAILER
            else:
                cls = ParcelClass.BOX
            score = float(np.clip(seed_counts[k] / counts[k], 0.05, 1.0))
            instances.append(
                Instance(k, cls, score, tuple(int(v) for v in boxes[k]), int(areas[k]))
            )
        if dropped:
            labels[np.isin(labels, dropped)] = 0
        seg = Segmentation(labels, instances)
        seg.timings_ms = {
            'segment': (t1 - t0) * 1e3,
            'postprocess': (time.perf_counter() - t1) * 1e3,
        }
        return seg
