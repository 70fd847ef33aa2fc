# Copyright 2026 The pkg_perception Authors
# SPDX-License-Identifier: Apache-2.0
"""What leaves the pipeline: parcels in 3D, ranked grasp candidates, timings.

Conventions (README "Grasp poses"): poses are 4x4 homogeneous transforms T_frame_object in
`frame_id`, metres. A grasp pose sits on the parcel surface where the tool touches; its +z
axis is the approach direction (into the parcel, opposite the surface normal); for a
parallel-jaw grasp +y is the closing direction.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from enum import Enum

import numpy as np
import numpy.typing as npt

from pkg_perception.classes import ParcelClass
from pkg_perception.segmentation.instances import Segmentation
from pkg_perception.transforms import Matrix4


class GraspKind(str, Enum):
    """Tool types the cell can carry."""

    SUCTION = 'suction'
    PARALLEL_JAW = 'parallel_jaw'


@dataclass(frozen=True)
class OrientedBox:
    """A box: T_frame_box (centre and axes) and full extents along its x, y, z, metres."""

    pose: Matrix4
    size: npt.NDArray[np.float64]


@dataclass(frozen=True)
class Parcel:
    """One segmented parcel lifted to 3D, in the result's `frame_id`."""

    track_id: int  # stable while the parcel rides through the view (tracking)
    label: int  # its value in the frame's Segmentation.labels
    parcel_class: ParcelClass
    score: float  # segmentation confidence, 0..1
    box: OrientedBox
    top_center: npt.NDArray[np.float64]  # (3,) centre of the visible top surface
    top_normal: npt.NDArray[np.float64]  # (3,) unit, pointing up out of the parcel
    height: float  # top surface above the belt, metres
    supports: tuple[int, ...]  # track ids of parcels lying on this one (pile order)
    velocity: npt.NDArray[np.float64]  # (3,) m/s in frame_id
    point_count: int


@dataclass(frozen=True)
class GraspCandidate:
    """A place to pick one parcel, valid at `stamp_ns` (the color image's stamp)."""

    pose: Matrix4  # T_frame_tool: position on the surface, +z approach, +y closing
    score: float  # 0..1, higher is better
    kind: GraspKind
    width: float  # parallel-jaw opening, or suction cup diameter, metres
    parcel_id: int  # Parcel.track_id
    parcel_class: ParcelClass
    parcel_box: OrientedBox
    frame_id: str
    stamp_ns: int
    velocity: npt.NDArray[np.float64] = field(default_factory=lambda: np.zeros(3))

    def at_time(self, stamp_ns: int) -> GraspCandidate:
        """The same grasp moved with its parcel's velocity to another time."""
        shift = self.velocity * ((stamp_ns - self.stamp_ns) * 1e-9)
        pose = self.pose.copy()
        pose[:3, 3] += shift
        box_pose = self.parcel_box.pose.copy()
        box_pose[:3, 3] += shift
        return replace(
            self,
            pose=pose,
            parcel_box=OrientedBox(box_pose, self.parcel_box.size),
            stamp_ns=stamp_ns,
        )


@dataclass
class PerceptionResult:
    """Everything one frame produced. Stamps equal the input color image's stamp."""

    stamp_ns: int
    frame_id: str  # frame of every pose in here (target frame, or the camera's if TF failed)
    camera_frame_id: str
    segmentation: Segmentation
    parcels: list[Parcel]
    grasps: list[GraspCandidate]  # best first
    timings_ms: dict[str, float] = field(default_factory=dict)  # per stage and 'total'
    flags: tuple[str, ...] = ()  # e.g. 'no_valid_depth', 'tf_fallback_camera_frame'
    segmenter: str = ''
    provider: str = ''
