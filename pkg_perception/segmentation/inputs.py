# Copyright 2026 The pkg_perception Authors
# SPDX-License-Identifier: Apache-2.0
"""The model's input tensor, built the same way for training, export checks and inference.

Five channels at the model's input size: RGB normalized, height above the belt (metres /
`height_scale`, 0 where depth is invalid) and a depth-valid flag. Height instead of raw
depth makes the input independent of how high the camera hangs.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np
import numpy.typing as npt

from pkg_perception.errors import InputError
from pkg_perception.frames import CameraModel
from pkg_perception.segmentation.belt import BeltPlane, pixel_rays

INPUT_CHANNELS = 5
MAX_ASPECT_CHANGE = 0.02


@dataclass(frozen=True)
class InputSpec:
    """How frames become the model input; stored in the ONNX metadata."""

    width: int = 320
    height: int = 240
    color_mean: float = 0.5
    color_std: float = 0.25
    height_scale: float = 0.25  # metres per unit of the height channel
    height_range: tuple[float, float] = (-0.05, 0.8)  # metres above the belt kept; rest clipped

    def grid(self, src_width: int, src_height: int) -> tuple[np.ndarray, np.ndarray]:
        """Source pixel columns and rows sampled for each model pixel (nearest)."""
        check_size(self, src_width, src_height)
        return centre_samples(self.width, src_width), centre_samples(self.height, src_height)


def centre_samples(n_out: int, n_src: int) -> npt.NDArray[np.intp]:
    """Index of the source pixel under the centre of each of `n_out` output pixels."""
    return np.minimum(((np.arange(n_out) * 2 + 1) * n_src) // (2 * n_out), n_src - 1)


def check_size(spec: InputSpec, width: int, height: int) -> None:
    """Frames are resized to the model; refuse ones whose shape would be distorted."""
    change = abs((width / height) / (spec.width / spec.height) - 1.0)
    if change > MAX_ASPECT_CHANGE:
        raise InputError(
            f'frame is {width}x{height} but the model takes {spec.width}x{spec.height} '
            f'(aspect ratio differs by {change:.0%}); set the camera to a '
            f'{spec.width}:{spec.height} mode or export a model for this size '
            '(pkg-perception export --input-size W H)'
        )


@lru_cache(maxsize=8)
def _grid_rays(spec: InputSpec, camera: CameraModel) -> tuple[np.ndarray, np.ndarray]:
    """x/z and y/z of the rays through the model's pixels, once per camera.

    Cached apart from the belt's normal: an estimated belt has a new normal every frame.
    """
    us, vs = spec.grid(camera.width, camera.height)
    rays = pixel_rays(camera, us, vs)
    return rays[..., 0].astype(np.float32), rays[..., 1].astype(np.float32)


def _ray_dot(spec: InputSpec, camera: CameraModel, normal: npt.ArrayLike) -> np.ndarray:
    x, y = _grid_rays(spec, camera)
    nx, ny, nz = np.asarray(normal, dtype=np.float32)
    return x * nx + y * ny + nz


@dataclass(frozen=True)
class PreparedInput:
    """The (1, 5, H, W) tensor plus what the post-process and callers need to know."""

    tensor: npt.NDArray[np.float32]
    valid_fraction: float  # share of model pixels with usable depth


def prepare_input(
    spec: InputSpec,
    color: npt.NDArray[np.uint8],
    depth: npt.NDArray[np.float32],
    camera: CameraModel,
    belt: BeltPlane,
) -> PreparedInput:
    """RGB uint8 + depth metres (NaN invalid) -> model input; bad depth is flagged, not fatal."""
    h, w = depth.shape
    if (w, h) == (spec.width, spec.height):
        small = color
    else:
        small = cv2.resize(color, (spec.width, spec.height), interpolation=cv2.INTER_AREA)
    out = np.empty((1, INPUT_CHANNELS, spec.height, spec.width), dtype=np.float32)
    scale = np.float32(1.0 / (255.0 * spec.color_std))
    shift = np.float32(spec.color_mean / spec.color_std)
    np.subtract(np.moveaxis(small, 2, 0) * scale, shift, out=out[0, :3])
    height, valid = height_map(spec, depth, camera, belt)
    out[0, 3] = height / spec.height_scale
    out[0, 4] = valid
    return PreparedInput(out, float(valid.mean()))


def height_map(
    spec: InputSpec, depth: npt.NDArray[np.float32], camera: CameraModel, belt: BeltPlane
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.bool_]]:
    """Height above the belt (clipped to the spec's range, 0 where invalid) at model size."""
    h, w = depth.shape
    us, vs = spec.grid(w, h)
    z = depth[np.ix_(vs, us)]
    with np.errstate(invalid='ignore'):
        valid = np.isfinite(z) & (z > 0)
    dot = _ray_dot(spec, camera, belt.normal)
    height = np.where(valid, z * dot + np.float32(belt.offset), 0.0)
    lo, hi = spec.height_range
    np.clip(height, lo, hi, out=height)
    return height.astype(np.float32, copy=False), valid
