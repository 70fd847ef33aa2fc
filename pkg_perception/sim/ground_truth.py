# Copyright 2026 The pkg_perception Authors
# SPDX-License-Identifier: Apache-2.0
"""Per-frame ground truth: enough to score masks, grasps and tracks without rendering again.

All poses and vectors are in the conveyor frame (x along travel, z up on the belt surface) at
the frame's stamp. Serialized as JSON on the bag's /ground_truth/scene topic.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from pkg_perception.classes import ParcelClass
from pkg_perception.transforms import Matrix4

SCHEMA = 'pkg_perception/ground_truth/v1'


@dataclass(frozen=True)
class TopFaceTruth:
    """The pickable top face: a rectangle on a plane.

    Attributes:
        center: (3,) metres.
        normal: (3,) unit, pointing away from the parcel (up-ish).
        x_axis: (3,) unit, along the rectangle's first half extent; y = normal x x_axis.
        half_extents: (2,) metres.
        flatness: largest deviation of the real surface from that plane, metres.
        visible_fraction: share of the face the camera sees, 0..1.
    """

    center: npt.NDArray[np.float64]
    normal: npt.NDArray[np.float64]
    x_axis: npt.NDArray[np.float64]
    half_extents: npt.NDArray[np.float64]
    flatness: float
    visible_fraction: float


@dataclass(frozen=True)
class ParcelTruth:
    """One parcel in view (at least one pixel visible)."""

    parcel_id: int
    parcel_class: ParcelClass
    pose: Matrix4  # T_conveyor_parcel; origin at the bounding-box centre, z through the top
    size: npt.NDArray[np.float64]  # (3,) bounding-box extents, metres
    visible_pixels: int
    top_face: TopFaceTruth
    rests_on: tuple[int, ...]  # parcels this one lies on (pile order)
    supports: tuple[int, ...]  # parcels lying on this one
    graspable: bool  # top face mostly visible and nothing rests on it


@dataclass(frozen=True)
class FrameTruth:
    """Everything the simulator knows about one frame, besides the label image."""

    stamp_ns: int
    frame_id: str
    belt_velocity: npt.NDArray[np.float64]  # (3,) m/s in the conveyor frame
    parcels: tuple[ParcelTruth, ...]

    def by_id(self) -> dict[int, ParcelTruth]:
        """Parcels keyed by id (ids match the instance label image)."""
        return {p.parcel_id: p for p in self.parcels}

    def to_json(self) -> str:
        """Compact JSON, the payload of /ground_truth/scene."""
        return json.dumps(
            {
                'schema': SCHEMA,
                'stamp_ns': self.stamp_ns,
                'frame_id': self.frame_id,
                'belt_velocity': _list(self.belt_velocity),
                'parcels': [_parcel_dict(p) for p in self.parcels],
            },
            separators=(',', ':'),
        )

    @classmethod
    def from_json(cls, text: str) -> FrameTruth:
        """Inverse of `to_json`; raises ValueError on another schema."""
        d = json.loads(text)
        if d.get('schema') != SCHEMA:
            raise ValueError(f'ground truth schema {d.get("schema")!r}, expected {SCHEMA!r}')
        return cls(
            stamp_ns=int(d['stamp_ns']),
            frame_id=str(d['frame_id']),
            belt_velocity=np.asarray(d['belt_velocity'], dtype=np.float64),
            parcels=tuple(_parcel_from(p) for p in d['parcels']),
        )


def _list(a: npt.ArrayLike) -> list[Any]:
    return np.round(np.asarray(a, dtype=np.float64), 6).tolist()


def _parcel_dict(p: ParcelTruth) -> dict[str, Any]:
    f = p.top_face
    return {
        'id': p.parcel_id,
        'class': p.parcel_class.label,
        'pose': _list(p.pose),
        'size': _list(p.size),
        'visible_pixels': p.visible_pixels,
        'top_face': {
            'center': _list(f.center),
            'normal': _list(f.normal),
            'x_axis': _list(f.x_axis),
            'half_extents': _list(f.half_extents),
            'flatness': round(f.flatness, 6),
            'visible_fraction': round(f.visible_fraction, 4),
        },
        'rests_on': list(p.rests_on),
        'supports': list(p.supports),
        'graspable': p.graspable,
    }


def _parcel_from(d: dict[str, Any]) -> ParcelTruth:
    f = d['top_face']
    return ParcelTruth(
        parcel_id=int(d['id']),
        parcel_class=ParcelClass.from_label(d['class']),
        pose=np.asarray(d['pose'], dtype=np.float64),
        size=np.asarray(d['size'], dtype=np.float64),
        visible_pixels=int(d['visible_pixels']),
        top_face=TopFaceTruth(
            center=np.asarray(f['center'], dtype=np.float64),
            normal=np.asarray(f['normal'], dtype=np.float64),
            x_axis=np.asarray(f['x_axis'], dtype=np.float64),
            half_extents=np.asarray(f['half_extents'], dtype=np.float64),
            flatness=float(f['flatness']),
            visible_fraction=float(f['visible_fraction']),
        ),
        rests_on=tuple(int(i) for i in d['rests_on']),
        supports=tuple(int(i) for i in d['supports']),
        graspable=bool(d['graspable']),
    )


@dataclass(frozen=True)
class GroundTruth:
    """A frame's truth together with its instance label image (parcel id per pixel)."""

    truth: FrameTruth
    instance_ids: npt.NDArray[np.uint16]  # (H, W), 0 = belt or background
