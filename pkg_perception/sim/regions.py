# Copyright 2026 The pkg_perception Authors
# SPDX-License-Identifier: Apache-2.0
"""The pixels a frame's parcels can change: their image, light shadows and stereo shadows.

Each parcel is bounded by its oriented box (8 corners, conveyor frame). A convex box projects
into the image inside the convex hull of its projected corners. Its light shadow on the belt
and the rails lies between the box and its parallel projection along the light onto the belt
plane z = 0, and the surface the stereo camera's second eye cannot see lies between the box and
its central projection from that eye onto z = 0: so the image hulls of the corners together
with those projections bound them. Where a projection reaches past the belt's edge, the
projection onto the floor is added too. Everything else keeps the static background.
"""

from __future__ import annotations

import cv2
import numpy as np

from pkg_perception.frames import CameraModel
from pkg_perception.sim.parcels import ParcelShape
from pkg_perception.transforms import Matrix4

_UNIT_CORNERS = np.array([[x, y, z] for x in (0, 1) for y in (0, 1) for z in (0, 1)], float)
_SUBPIXEL_BITS = 4
_FAR = 1.0e4  # hull vertices farther out than this (pixels) are clipped to the image first
_MIN_DEPTH = 1.0e-3  # metres in front of the camera a corner must be to project
# Image points of a parcel's corners, its light shadow on the belt and on the floor (None:
# hidden under the belt), its stereo shadow on the belt and on the floor.
_Outline = tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray, np.ndarray | None]


def box_corners(shape: ParcelShape, pose: Matrix4) -> np.ndarray:
    """(8, 3) float64 corners of the parcel's oriented bounding box, in the frame of `pose`.

    The parcel frame's origin is the centre of the mesh's bounding box (see parcels.py).
    """
    local = (_UNIT_CORNERS - 0.5) * shape.size
    return local @ pose[:3, :3].T + pose[:3, 3]


class ParcelRegions:
    """Masks of the pixels parcels can change, for one camera, light and stereo eye."""

    def __init__(
        self,
        camera: CameraModel,
        conveyor_from_camera: Matrix4,
        light: np.ndarray,
        second_eye: np.ndarray,
        *,
        belt_half_width: float,
        floor_depth: float,
        floor_pixels: np.ndarray,
        stride: int,
    ) -> None:
        """`floor_pixels`: (H, W) uint8, 1 where the camera sees the floor."""
        self._camera = camera
        self._rot = conveyor_from_camera[:3, :3]
        self._pos = conveyor_from_camera[:3, 3]
        self._light = np.asarray(light, float)
        self._eye = np.asarray(second_eye, float)
        self._half_width = belt_half_width
        self._floor = floor_depth
        self._floor_pixels = floor_pixels
        self._stride = stride
        h, w = camera.height, camera.width
        self._frame = np.array([[-2, -2], [w + 1, -2], [w + 1, h + 1], [-2, h + 1]], np.float32)

    def find(self, corner_sets: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """Masks for the parcels with these (8, 3) box corners.

        Returns:
            roi: (H, W) bool, every pixel that may show a parcel (primary rays to cast).
            blocks: (ceil(H / s), ceil(W / s)) bool, s = stride: the shadow blocks holding any
                pixel a parcel may show, shadow from the light or hide from the second eye.
        """
        h, w = self._camera.height, self._camera.width
        roi = np.zeros((h, w), np.uint8)
        reach = np.zeros((h, w), np.uint8)
        floor = np.zeros((h, w), np.uint8)
        outlines = self._outlines(corner_sets)
        if outlines is None:  # cannot bound it: everything may change
            roi[:] = 1
            reach[:] = 1
        for parcel, light, floor_light, eye, floor_eye in outlines or ():
            _fill(roi, parcel, self._frame)
            _fill(reach, np.concatenate([parcel, light]), self._frame)
            _fill(reach, np.concatenate([parcel, eye]), self._frame)
            for on_floor in (floor_light, floor_eye):
                if on_floor is not None:
                    _fill(floor, on_floor, self._frame)
        reach |= floor & self._floor_pixels
        roi = cv2.dilate(roi, np.ones((3, 3), np.uint8))
        # A block changes if any pixel in it may: spread every pixel to the block that holds
        # it (anchor top-left, so a block's maximum lands on its first pixel), then subsample.
        s = self._stride
        grow = np.ones((s + 2, s + 2), np.uint8)
        blocks = cv2.dilate(reach | roi, grow, anchor=(1, 1))[::s, ::s]
        return roi.astype(bool), blocks.astype(bool)

    def _outlines(self, corner_sets: list[np.ndarray]) -> list[_Outline] | None:
        """Image points bounding each parcel and its shadows; None if it cannot tell.

        Per parcel (each (8, 2) pixels): its corners; their projections along the light onto
        the belt plane and onto the floor; their projections from the second eye onto the same.
        A floor entry is None where it stays under the belt. None if a point falls behind the
        camera or a corner is not below the second eye.
        """
        if not corner_sets:
            return []
        corners = np.stack(corner_sets)  # (P, 8, 3)
        light, eye = self._light, self._eye
        z = corners[..., 2:3]
        if np.any(z >= eye[2] - _MIN_DEPTH):
            return None
        to_floor = (eye[2] + self._floor) / eye[2]
        scale = eye[2] / (eye[2] - z)
        pts = np.stack(
            [
                corners,
                corners - (z / light[2]) * light,
                corners - ((z + self._floor) / light[2]) * light,
                eye + (corners - eye) * scale,
                eye + (corners - eye) * (scale * to_floor),
            ],
            1,
        )  # (P, 5, 8, 3)
        image = self._project(pts.reshape(-1, 3))
        if image is None:
            return None
        image = image.reshape(*pts.shape[:3], 2)
        # The floor only shows beside the belt; under it, the belt hides any shadow.
        beside = np.any(np.abs(pts[..., 1][:, [2, 4]]) > self._half_width, axis=2)
        return [
            (
                image[p, 0],
                image[p, 1],
                image[p, 2] if beside[p, 0] else None,
                image[p, 3],
                image[p, 4] if beside[p, 1] else None,
            )
            for p in range(len(corners))
        ]

    def _project(self, points: np.ndarray) -> np.ndarray | None:
        """(K, 2) image coordinates of (K, 3) conveyor points; None if any is behind the camera."""
        cam_pts = (points - self._pos) @ self._rot
        z = cam_pts[:, 2]
        if np.any(z < _MIN_DEPTH):
            return None
        c = self._camera
        return np.stack([c.fx * cam_pts[:, 0] / z + c.cx, c.fy * cam_pts[:, 1] / z + c.cy], 1)


def _fill(mask: np.ndarray, points: np.ndarray, frame: np.ndarray) -> None:
    """Set the pixels of `mask` inside the convex hull of (K, 2) image points to 1."""
    hull = cv2.convexHull(points.astype(np.float32))
    if np.abs(hull).max() > _FAR:
        area, hull = cv2.intersectConvexConvex(hull, frame)
        if hull is None or area <= 0:
            return
    scale = float(1 << _SUBPIXEL_BITS)
    fixed = np.round(hull.reshape(-1, 2) * scale).astype(np.int32)
    cv2.fillConvexPoly(mask, fixed, 1, lineType=cv2.LINE_8, shift=_SUBPIXEL_BITS)
