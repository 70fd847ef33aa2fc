# Copyright 2026 The pkg_perception Authors
# SPDX-License-Identifier: Apache-2.0
"""The belt plane in the camera frame: height above the belt is what separates parcels."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from pkg_perception.errors import InputError
from pkg_perception.frames import CameraModel, RGBDFrame
from pkg_perception.geometry import normalized_rays


@dataclass(frozen=True)
class BeltPlane:
    """height(p) = normal . p + offset for a point p in the optical frame, metres.

    `normal` is unit length and points from the belt towards the camera.
    """

    normal: npt.NDArray[np.float64]
    offset: float

    @classmethod
    def from_extrinsics(cls, conveyor_from_camera: npt.NDArray[np.float64]) -> BeltPlane:
        """The conveyor frame's z = 0 plane, from T_conveyor_camera (TF or config)."""
        t = np.asarray(conveyor_from_camera, dtype=np.float64)
        if t.shape != (4, 4) or not np.all(np.isfinite(t)):
            raise InputError('conveyor_from_camera must be a finite 4x4 transform')
        return cls(normal=t[2, :3].copy(), offset=float(t[2, 3]))

    def heights(self, points: npt.NDArray[np.floating]) -> npt.NDArray[np.float64]:
        """Height above the belt of (N, 3) optical-frame points."""
        return points @ self.normal + self.offset


def pixel_rays(
    camera: CameraModel, us: npt.NDArray[np.integer], vs: npt.NDArray[np.integer]
) -> npt.NDArray[np.float64]:
    """(len(vs), len(us), 3) rays with z = 1 through those pixels (distortion honoured).

    A gather from the per-camera table the 3D lifting uses, so both agree on every pixel.
    """
    xy = normalized_rays(camera)[np.ix_(vs, us)].astype(np.float64)
    return np.concatenate([xy, np.ones((*xy.shape[:2], 1))], axis=-1)


def estimate_belt_plane(
    depth: npt.NDArray[np.float32],
    camera: CameraModel,
    *,
    stride: int = 8,
    iterations: int = 128,
    tolerance: float = 0.008,
    seed: int = 0,
) -> BeltPlane:
    """RANSAC plane on a sparse grid of depth points, for when no extrinsics are known.

    Among planes facing the camera (within 30 degrees) it keeps the one with most inliers;
    on a conveyor that is the belt unless one parcel covers more of the image than the belt.
    """
    vs = np.arange(stride // 2, depth.shape[0], stride)
    us = np.arange(stride // 2, depth.shape[1], stride)
    z = depth[np.ix_(vs, us)].astype(np.float64)
    pts = (pixel_rays(camera, us, vs) * z[..., None]).reshape(-1, 3)
    pts = pts[np.isfinite(pts).all(axis=1) & (pts[:, 2] > 0)]
    if len(pts) < 50:
        raise InputError(
            f'only {len(pts)} valid depth samples: cannot find the belt plane; '
            'check the depth stream or configure the camera extrinsics'
        )
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(pts), size=(iterations, 3))
    a, b, c = pts[idx[:, 0]], pts[idx[:, 1]], pts[idx[:, 2]]
    normals = np.cross(b - a, c - a)
    norm = np.linalg.norm(normals, axis=1)
    ok = norm > 1e-9
    normals[ok] /= norm[ok, None]
    normals[normals[:, 2] > 0] *= -1.0  # point towards the camera (optical z looks away)
    ok &= -normals[:, 2] > np.cos(np.radians(30))
    offsets = -np.einsum('ij,ij->i', normals, a)
    dist = np.abs(pts @ normals.T + offsets)  # (N, iterations)
    counts = np.where(ok, (dist < tolerance).sum(axis=0), -1)
    best = int(np.argmax(counts))
    if counts[best] < 20:
        raise InputError('no plane facing the camera found in the depth image; is it a belt?')
    inliers = pts[dist[:, best] < tolerance]
    centroid = inliers.mean(axis=0)
    _, _, vt = np.linalg.svd(inliers - centroid, full_matrices=False)
    normal = vt[2] if vt[2, 2] < 0 else -vt[2]
    return BeltPlane(normal=normal, offset=float(-normal @ centroid))


CONVEYOR_FRAME = 'conveyor'


def belt_for_frame(frame: RGBDFrame) -> BeltPlane:
    """The frame's /tf_static (conveyor -> camera), else RANSAC: for offline scoring.

    The node's pipeline also honours configured extrinsics and caches the lookup
    (`Pipeline.belt_plane`).
    """
    if frame.transforms is not None:
        try:
            return BeltPlane.from_extrinsics(
                frame.transforms.lookup(CONVEYOR_FRAME, frame.frame_id)
            )
        except KeyError:
            pass
    return estimate_belt_plane(frame.depth, frame.camera)
