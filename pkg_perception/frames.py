# Copyright 2026 The pkg_perception Authors
# SPDX-License-Identifier: Apache-2.0
"""What enters the pipeline: a camera model and one synchronized RGB-D frame."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from pkg_perception.checks import check_array
from pkg_perception.errors import InputError

if TYPE_CHECKING:
    from pkg_perception.transforms import TransformTree

DEFAULT_OPTICAL_FRAME = 'camera_color_optical_frame'


@dataclass(frozen=True)
class CameraModel:
    """Pinhole intrinsics in pixels, with CameraInfo's distortion (plumb_bob or none).

    Coordinates are in the optical frame (REP 103: x right, y down, z forward).
    """

    width: int
    height: int
    fx: float
    fy: float
    cx: float
    cy: float
    distortion_model: str = 'plumb_bob'
    distortion: tuple[float, ...] = (0.0, 0.0, 0.0, 0.0, 0.0)
    frame_id: str = DEFAULT_OPTICAL_FRAME

    def __post_init__(self) -> None:
        values = (self.fx, self.fy, self.cx, self.cy, *self.distortion)
        if not all(math.isfinite(v) for v in values):
            raise InputError(
                f'camera intrinsics must be finite, got fx={self.fx} fy={self.fy} '
                f'cx={self.cx} cy={self.cy} D={self.distortion}; check the CameraInfo source'
            )
        if self.fx <= 0 or self.fy <= 0 or self.width <= 0 or self.height <= 0:
            raise InputError(
                f'camera model needs positive focal lengths and size, got fx={self.fx} '
                f'fy={self.fy} size={self.width}x{self.height}; is the CameraInfo empty?'
            )

    @property
    def k(self) -> npt.NDArray[np.float64]:
        """(3, 3) intrinsic matrix."""
        return np.array([[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]])


def usable_depth(z: npt.NDArray[np.floating]) -> npt.NDArray[np.bool_]:
    """0 < z < 2 km: one comparison that also rejects NaN and inf (invalid depth)."""
    with np.errstate(invalid='ignore'):
        return np.abs(z - z.dtype.type(1000.0)) < z.dtype.type(1000.0)


def depth_from_millimetres(depth_mm: npt.NDArray[np.uint16]) -> npt.NDArray[np.float32]:
    """16UC1 millimetres (0 invalid) -> float32 metres (NaN invalid)."""
    depth = depth_mm.astype(np.float32) * np.float32(0.001)
    depth[depth_mm == 0] = np.nan
    return depth


@dataclass
class RGBDFrame:
    """One synchronized frame as the pipeline sees it.

    Attributes:
        color: (H, W, 3) uint8 RGB.
        depth: (H, W) float32 metres, aligned to color, NaN where invalid.
        camera: intrinsics of the color camera (depth is registered to it).
        stamp_ns: the color image's header stamp, nanoseconds; travels into every output.
        transforms: static transforms known for this frame (e.g. from /tf_static), if any.
        ground_truth: simulator ground truth when the source has it (see sim.ground_truth).
    """

    color: npt.NDArray[np.uint8]
    depth: npt.NDArray[np.float32]
    camera: CameraModel
    stamp_ns: int
    transforms: TransformTree | None = None
    ground_truth: Any = None

    def __post_init__(self) -> None:
        check_array('color', self.color, shape=(None, None, 3), dtypes=(np.uint8,))
        check_array('depth', self.depth, shape=(None, None), dtypes=(np.float32,))
        if self.color.shape[:2] != self.depth.shape:
            raise InputError(
                f'color is {self.color.shape[1]}x{self.color.shape[0]} but depth is '
                f'{self.depth.shape[1]}x{self.depth.shape[0]}; use the depth aligned to color '
                '(realsense: align_depth.enable:=true)'
            )
        if (self.camera.width, self.camera.height) != (self.color.shape[1], self.color.shape[0]):
            raise InputError(
                f'camera_info is {self.camera.width}x{self.camera.height} but the image is '
                f'{self.color.shape[1]}x{self.color.shape[0]}; use the color camera_info'
            )

    @property
    def frame_id(self) -> str:
        """The optical frame the pixels live in."""
        return self.camera.frame_id
