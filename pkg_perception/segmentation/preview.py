# Copyright 2026 The pkg_perception Authors
# SPDX-License-Identifier: Apache-2.0
"""Side-by-side pictures: ground truth | model | geometric baseline, one row per frame."""

from __future__ import annotations

from collections.abc import Mapping

import cv2
import numpy as np
import numpy.typing as npt

from pkg_perception.frames import RGBDFrame
from pkg_perception.segmentation.instances import Segmentation
from pkg_perception.sim.preview import CLASS_COLORS_BGR, _caption, instance_overlay


def segmentation_overlay(frame: RGBDFrame, seg: Segmentation) -> npt.NDArray[np.uint8]:
    """BGR colour image with each instance tinted, outlined in its class colour and scored."""
    bgr = cv2.cvtColor(frame.color, cv2.COLOR_RGB2BGR)
    tint = bgr.copy()
    for inst in seg.instances:
        tint[seg.labels == inst.label] = np.random.default_rng(inst.label).integers(60, 255, 3)
    out = cv2.addWeighted(bgr, 0.5, tint, 0.5, 0)
    for inst in seg.instances:
        mask = (seg.labels == inst.label).astype(np.uint8)
        contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(out, contours, -1, CLASS_COLORS_BGR[inst.parcel_class], 2)
        x0, y0, x1, y1 = inst.box
        org = ((x0 + x1) // 2 - 30, (y0 + y1) // 2)
        text = f'{inst.parcel_class.label} {inst.score:.2f}'
        cv2.putText(out, text, org, cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 3, cv2.LINE_AA)
        cv2.putText(out, text, org, cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1)
    return out


def comparison_sheet(
    rows: list[tuple[RGBDFrame, Mapping[str, Segmentation]]], scale: float = 0.5
) -> npt.NDArray[np.uint8]:
    """Rows of: ground truth, then each segmenter's instances (BGR)."""
    out = []
    for frame, segs in rows:
        tiles = [_caption(instance_overlay(frame), 'ground truth')]
        for name, seg in segs.items():
            tiles.append(
                _caption(segmentation_overlay(frame, seg), f'{name}: {len(seg.instances)} parcels')
            )
        row = np.hstack(tiles)
        out.append(cv2.resize(row, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA))
    return np.vstack(out)
