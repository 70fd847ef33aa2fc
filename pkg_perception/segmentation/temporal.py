# Copyright 2026 The pkg_perception Authors
# SPDX-License-Identifier: Apache-2.0
"""The network's output averaged with the previous frame's, moved along with the belt.

Between two frames everything on the belt moves by the belt's velocity times the time
between them, so where a pixel of this frame was in the last one follows from its depth:
back-project it, step back along the belt, project again. The previous output, sampled
there, is a second look at every parcel for the cost of a remap (about 1 ms at 320x240),
where a mirror-image pass costs a second inference. Pixels that were out of view, or whose
depth is unknown (taken on the belt plane), keep this frame's output alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np
import numpy.typing as npt

from pkg_perception.frames import CameraModel, usable_depth
from pkg_perception.segmentation.belt import BeltPlane

# Frames further apart than this are not fused: a dropped stretch or a new recording.
MAX_GAP_S = 0.25
_BORDER = cv2.BORDER_REPLICATE


@lru_cache(maxsize=4)
def _grid_rays(
    fx: float, fy: float, cx: float, cy: float, w: int, h: int
) -> npt.NDArray[np.float32]:
    """(h, w, 3) pinhole rays (x/z, y/z, 1) of an output grid's pixel centres."""
    u, v = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    rays = np.ones((h, w, 3), dtype=np.float32)
    rays[..., 0] = (u - cx) / fx
    rays[..., 1] = (v - cy) / fy
    return rays


def previous_pixels(
    depth: npt.NDArray[np.float32],
    camera: CameraModel,
    belt: BeltPlane,
    shift: npt.NDArray[np.float64],
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
    """Where each pixel of an (h, w) grid over the frame lay in the previous frame.

    Args:
        depth: (h, w) metres at the grid's resolution, NaN (or 0) where unknown.
        camera: the frame's intrinsics; the grid covers the whole frame.
        belt: the belt plane (optical frame), the depth taken where none is known.
        shift: (3,) metres the belt moved between the frames, in the optical frame.

    Returns:
        (u, v) float32 maps in grid pixels, for `cv2.remap`.
    """
    h, w = depth.shape
    sx, sy = w / camera.width, h / camera.height
    fx, fy = camera.fx * sx, camera.fy * sy
    cx, cy = (camera.cx + 0.5) * sx - 0.5, (camera.cy + 0.5) * sy - 0.5
    rays = _grid_rays(fx, fy, cx, cy, w, h)
    dx, dy, dz = (float(d) for d in shift)  # Python floats keep the arithmetic in float32
    with np.errstate(divide='ignore', invalid='ignore'):
        on_belt = rays @ belt.normal.astype(np.float32)
        np.divide(-float(belt.offset), on_belt, out=on_belt)
        z = np.where(usable_depth(depth), depth, on_belt)
        x = rays[..., 0] * z - dx
        y = rays[..., 1] * z - dy
        z -= dz
        u = fx * x / z + cx
        v = fy * y / z + cy
    bad = ~(np.isfinite(u) & np.isfinite(v) & (z > 0))
    u[bad] = v[bad] = -1.0  # out of view: keeps this frame's output
    return u, v


@dataclass
class TemporalFusion:
    """Keeps the last frame's output and blends it, moved with the belt, into the next.

    `weight` is the previous frame's share (0 turns it off). The previous output is this
    frame's own, not the blend: a parcel's look from two frames ago counts no more.
    """

    weight: float
    _last: tuple[npt.NDArray[np.float32], int] | None = None

    def reset(self) -> None:
        self._last = None

    def fuse(
        self,
        logits: npt.NDArray[np.float32],
        stamp_ns: int,
        depth: npt.NDArray[np.float32],
        camera: CameraModel,
        belt: BeltPlane,
        belt_velocity: npt.NDArray[np.float64] | None,
    ) -> npt.NDArray[np.float32]:
        """(C, h, w) output blended with the previous frame's where that saw the same spot.

        `depth` is the frame's (any resolution with the grid's aspect ratio); without a
        `belt_velocity` (optical frame, m/s) nothing is blended.
        """
        last, self._last = self._last, (logits, stamp_ns)
        if last is None or belt_velocity is None or self.weight <= 0:
            return logits
        gap = (stamp_ns - last[1]) * 1e-9
        if not 0.0 < gap <= MAX_GAP_S or last[0].shape != logits.shape:
            return logits
        h, w = logits.shape[1:]
        small = cv2.resize(depth, (w, h), interpolation=cv2.INTER_NEAREST)
        u, v = previous_pixels(small, camera, belt, np.asarray(belt_velocity) * gap)
        moved = np.empty_like(logits)
        for c in range(len(logits)):
            cv2.remap(last[0][c], u, v, cv2.INTER_LINEAR, dst=moved[c], borderMode=_BORDER)
        moved *= self.weight
        moved += (1.0 - self.weight) * logits
        unseen = ~((u >= 0) & (u <= w - 1) & (v >= 0) & (v <= h - 1))
        np.copyto(moved, logits, where=unseen[None])
        return moved
