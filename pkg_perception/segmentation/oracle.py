# Copyright 2026 The pkg_perception Authors
# SPDX-License-Identifier: Apache-2.0
"""Ground-truth masks as a segmenter: scores grasping and tracking apart from segmentation."""

from __future__ import annotations

import numpy as np

from pkg_perception.errors import InputError
from pkg_perception.frames import RGBDFrame
from pkg_perception.segmentation.belt import BeltPlane
from pkg_perception.segmentation.instances import Instance, Segmentation, boxes_and_areas


class GroundTruthSegmenter:
    """Returns the simulator's instance labels (ids = parcel ids) with score 1."""

    name = 'ground-truth'
    provider = 'simulator'

    def segment(
        self, frame: RGBDFrame, belt: BeltPlane, belt_velocity: object = None
    ) -> Segmentation:
        gt = frame.ground_truth
        if gt is None:
            raise InputError('frame has no ground truth; use a simulated bag or another segmenter')
        labels = np.asarray(gt.instance_ids, dtype=np.uint16)
        classes = {p.parcel_id: p.parcel_class for p in gt.truth.parcels}
        count = int(labels.max()) if labels.size else 0
        boxes, areas = boxes_and_areas(labels, count)
        instances = [
            Instance(pid, cls, 1.0, tuple(int(v) for v in boxes[pid]), int(areas[pid]))
            for pid, cls in sorted(classes.items())
            if pid <= count and areas[pid] > 0
        ]
        return Segmentation(labels, instances)
