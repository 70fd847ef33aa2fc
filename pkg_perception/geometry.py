# Copyright 2026 The pkg_perception Authors
# SPDX-License-Identifier: Apache-2.0
"""Depth to 3D and back, plane fits, robust statistics: the numeric core of lifting.

Pixel coordinates follow CameraInfo (OpenCV): integer (u, v) is the centre of pixel
column u, row v. Points are in the camera's optical frame (x right, y down, z forward),
metres. Everything is vectorized; per-parcel work runs on a few thousand points at most.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np
import numpy.typing as npt

from pkg_perception.checks import check_array
from pkg_perception.errors import InputError
from pkg_perception.frames import CameraModel

FloatArray = npt.NDArray[np.float64]

# Distortion models cv2.undistortPoints understands with CameraInfo's coefficient order.
OPENCV_MODELS = ('plumb_bob', 'rational_polynomial')
# 4-neighbourhood kernel for grid morphology (closing gaps, finding neighbours).
CROSS_3X3 = cv2.getStructuringElement(cv2.MORPH_CROSS, (3, 3))

# A fixed table of RANSAC draws (fractions of the point count): deterministic without
# building a random generator per call, and the same frame always gives the same plane.
_DRAWS = np.random.default_rng(20260101).random((256, 3))


def depth_to_metres(depth: npt.NDArray[np.generic]) -> npt.NDArray[np.float32]:
    """Depth image at the boundary -> float32 metres with NaN for invalid.

    Args:
        depth: (H, W) uint16 millimetres (16UC1, 0 invalid) or float32 metres (32FC1,
            0, negative or non-finite invalid).
    """
    check_array('depth', depth, shape=(None, None), dtypes=(np.uint16, np.float32))
    if depth.dtype == np.uint16:
        out = depth.astype(np.float32) * np.float32(0.001)
        out[depth == 0] = np.nan
        return out
    out = depth.astype(np.float32, copy=True)
    with np.errstate(invalid='ignore'):
        out[~(out > 0) | ~np.isfinite(out)] = np.nan
    return out


def has_distortion(camera: CameraModel) -> bool:
    """True when the distortion coefficients move pixels (any non-zero)."""
    return any(c != 0.0 for c in camera.distortion)


def _opencv_distortion(camera: CameraModel) -> npt.NDArray[np.float64]:
    if camera.distortion_model not in OPENCV_MODELS:
        raise InputError(
            f'distortion model {camera.distortion_model!r} with non-zero coefficients is not '
            f'supported; use {" or ".join(OPENCV_MODELS)}, or rectified images (image_rect)'
        )
    return np.asarray(camera.distortion, dtype=np.float64)


def undistort_pixels(
    camera: CameraModel, u: npt.ArrayLike, v: npt.ArrayLike
) -> tuple[FloatArray, FloatArray]:
    """Normalized image coordinates (x/z, y/z) of pixels (u, v), distortion removed."""
    u = np.asarray(u, dtype=np.float64)
    v = np.asarray(v, dtype=np.float64)
    if not has_distortion(camera):
        return (u - camera.cx) / camera.fx, (v - camera.cy) / camera.fy
    pix = np.stack([u.ravel(), v.ravel()], axis=1).reshape(-1, 1, 2)
    # More iterations than OpenCV's default five: strong barrel distortion needs them
    # to land within a thousandth of a pixel at the corners.
    criteria = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 40, 1e-10)
    k, dist = camera.k, _opencv_distortion(camera)
    if hasattr(cv2, 'undistortPointsIter'):  # OpenCV 4
        norm = cv2.undistortPointsIter(pix, k, dist, None, None, criteria)
    else:  # OpenCV 5 takes the criteria in undistortPoints itself
        norm = cv2.undistortPoints(pix, k, dist, None, None, None, criteria)
    norm = norm.reshape(-1, 2)
    return norm[:, 0].reshape(u.shape), norm[:, 1].reshape(v.shape)


@lru_cache(maxsize=4)
def normalized_rays(camera: CameraModel) -> npt.NDArray[np.float32]:
    """(H, W, 2) float32 (x/z, y/z) per pixel, computed once per camera model.

    Undistorting every pixel once (tens of ms) makes per-frame back-projection a gather.
    """
    v, u = np.mgrid[0 : camera.height, 0 : camera.width]
    x, y = undistort_pixels(camera, u, v)
    return np.stack([x, y], axis=-1).astype(np.float32)


@lru_cache(maxsize=4)
def ray_planes(camera: CameraModel) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
    """`normalized_rays` as two contiguous (H, W) planes, x/z and y/z.

    Gathering scattered pixels from each plane costs a third of gathering the (x, y) pairs
    from the interleaved table, and the per-frame lifting does little else with it.
    """
    rays = normalized_rays(camera)
    return np.ascontiguousarray(rays[..., 0]), np.ascontiguousarray(rays[..., 1])


def back_project(
    depth: npt.NDArray[np.generic],
    camera: CameraModel,
    *,
    mask: npt.NDArray[np.bool_] | None = None,
    stride: int = 1,
) -> tuple[FloatArray, npt.NDArray[np.intp]]:
    """Lift valid depth pixels to 3D points in the optical frame.

    Args:
        depth: (H, W) uint16 millimetres or float32 metres; 0 / NaN / negative are invalid.
        camera: intrinsics of the image the depth is registered to (distortion honoured).
        mask: optional (H, W) bool; only these pixels are lifted.
        stride: keep every `stride`-th row and column (subsampling for speed).

    Returns:
        points: (N, 3) float64 metres; pixels: (N, 2) integer (u, v) of each point.

    Raises:
        InputError: when depth or mask do not match the camera's size.
    """
    if stride < 1:
        raise InputError(f'stride {stride} must be at least 1')
    check_array('depth', depth, shape=(camera.height, camera.width))
    z = depth_to_metres(depth[::stride, ::stride])
    keep = np.isfinite(z)
    if mask is not None:
        check_array('mask', mask, shape=(camera.height, camera.width), dtypes=(np.bool_,))
        keep &= mask[::stride, ::stride]
    rows, cols = np.nonzero(keep)
    zs = z[rows, cols].astype(np.float64)
    vs, us = rows * stride, cols * stride
    rays = normalized_rays(camera)[vs, us].astype(np.float64)
    points = np.empty((len(zs), 3))
    points[:, 0] = rays[:, 0] * zs
    points[:, 1] = rays[:, 1] * zs
    points[:, 2] = zs
    return points, np.stack([us, vs], axis=1)


def project_points(camera: CameraModel, points: npt.ArrayLike) -> FloatArray:
    """(N, 3) optical-frame points -> (N, 2) pixel coordinates (u, v), distortion applied.

    Points at or behind the camera (z <= 0) come out as NaN.
    """
    p = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    out = np.full((len(p), 2), np.nan)
    front = p[:, 2] > 1e-9
    if not front.any():
        return out
    q = p[front]
    if has_distortion(camera):
        uv, _ = cv2.projectPoints(
            q.reshape(-1, 1, 3), np.zeros(3), np.zeros(3), camera.k, _opencv_distortion(camera)
        )
        out[front] = uv.reshape(-1, 2)
    else:
        out[front, 0] = camera.fx * q[:, 0] / q[:, 2] + camera.cx
        out[front, 1] = camera.fy * q[:, 1] / q[:, 2] + camera.cy
    return out


@dataclass(frozen=True)
class PlaneFit:
    """n . p + d = 0 with unit `normal`; `inliers` indexes the points it was fitted to."""

    normal: FloatArray  # (3,)
    d: float
    inliers: npt.NDArray[np.bool_]  # (N,)
    rms: float  # of the inliers' distances, metres

    def distances(self, points: npt.NDArray[np.floating]) -> FloatArray:
        """Signed distances of (N, 3) points, positive on the normal's side."""
        return points @ self.normal + self.d


def cross(a: npt.NDArray[np.floating], b: npt.NDArray[np.floating]) -> FloatArray:
    """Row-wise cross product of (..., 3) arrays; np.cross costs ~20 us of overhead per call."""
    out = np.empty(np.broadcast_shapes(a.shape, b.shape))
    out[..., 0] = a[..., 1] * b[..., 2] - a[..., 2] * b[..., 1]
    out[..., 1] = a[..., 2] * b[..., 0] - a[..., 0] * b[..., 2]
    out[..., 2] = a[..., 0] * b[..., 1] - a[..., 1] * b[..., 0]
    return out


def fit_plane(points: npt.NDArray[np.floating]) -> tuple[FloatArray, FloatArray, float]:
    """Least-squares plane of (N >= 3, 3) points: (unit normal, centroid, rms distance).

    The normal's sign is arbitrary; callers orient it.
    """
    normals, centroids, rms = fit_planes(points[None], np.ones((1, len(points))))
    return normals[0], centroids[0], float(rms[0])


def fit_planes(
    points: npt.NDArray[np.floating], weights: npt.NDArray[np.generic]
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Weighted least-squares plane per batch row: points (P, N, 3), weights (P, N) (0/1).

    Returns normals (P, 3) (sign arbitrary), centroids (P, 3) and rms distances (P,). One
    batched eigen-decomposition for all rows: per-call overhead, not arithmetic, is what
    costs at a few hundred points. Points with weight 0 must still be finite.
    """
    w = np.asarray(weights, dtype=np.float64)
    count = np.maximum(w.sum(axis=1), 1.0)
    centroids = (w[:, None, :] @ points)[:, 0, :] / count[:, None]
    second = (points.transpose(0, 2, 1) * w[:, None, :]) @ points / count[:, None, None]
    cov = second - centroids[:, :, None] * centroids[:, None, :]
    evals, evecs = np.linalg.eigh(cov)
    return evecs[:, :, 0], centroids, np.sqrt(np.maximum(evals[:, 0], 0.0))


def ransac_plane(
    points: npt.NDArray[np.floating],
    *,
    tolerance: float,
    up: npt.ArrayLike,
    max_tilt: float,
    iterations: int = 32,
    sample: int = 160,
) -> PlaneFit | None:
    """The plane with most inliers among those within `max_tilt` radians of `up`.

    See `ransac_planes`; this is the single-cloud form.
    """
    return ransac_planes(
        [points], [tolerance], up=up, max_tilt=max_tilt, iterations=iterations, sample=sample
    )[0]


def ransac_planes(
    clouds: list[npt.NDArray[np.floating]],
    tolerances: npt.ArrayLike,
    *,
    up: npt.ArrayLike,
    max_tilt: float,
    iterations: int = 32,
    sample: int = 160,
) -> list[PlaneFit | None]:
    """Per cloud, the plane with most inliers among those within `max_tilt` of `up`.

    All clouds are processed together (padded to one array), so ten parcels cost little
    more than one. Hypotheses come from a fixed table of draws (deterministic); they are
    scored on an evenly strided subset of at most `sample` points, and the winner is
    refitted by least squares to its inliers. Normals are oriented along `up`.

    Args:
        clouds: (N_i, 3) points each, metres.
        tolerances: inlier distance per cloud, metres.
        up: (3,) the direction normals must face (the belt normal).
        max_tilt: largest angle between a plane's normal and `up`, radians.
        iterations: hypotheses per cloud (at most 256).
        sample: points per cloud that score the hypotheses.

    Returns:
        A PlaneFit per cloud (inliers index that cloud), or None where fewer than three
        points or no hypothesis faces `up`.
    """
    p_count = len(clouds)
    if p_count == 0:
        return []
    counts = np.array([len(c) for c in clouds], dtype=np.intp)
    pad = np.zeros((p_count, max(int(counts.max()), 3), 3))
    for i, c in enumerate(clouds):
        pad[i, : len(c)] = c
    normal, d, inl, rms, good = ransac_padded(
        pad, counts, tolerances, up=up, max_tilt=max_tilt, iterations=iterations, sample=sample
    )
    return [
        PlaneFit(normal[i].copy(), float(d[i]), inl[i, : counts[i]].copy(), float(rms[i]))
        if good[i]
        else None
        for i in range(p_count)
    ]


def ransac_padded(
    pad: FloatArray,
    counts: npt.NDArray[np.intp],
    tolerances: npt.ArrayLike,
    *,
    up: npt.ArrayLike,
    max_tilt: float,
    valid: npt.NDArray[np.bool_] | None = None,
    iterations: int = 32,
    sample: int = 160,
    close_enough: float = 0.8,
    refits: int = 1,
) -> tuple[FloatArray, FloatArray, npt.NDArray[np.bool_], FloatArray, npt.NDArray[np.bool_]]:
    """`ransac_planes` on clouds already padded: pad (P, N, 3), rows filled to counts[i].

    `valid` (P, N) can mark points inside counts[i] to ignore (outliers), which is cheaper
    than compacting the rows. Hypotheses with at least `close_enough` of the best support
    compete on how upright they are. The winner is refitted `refits` times by least
    squares to its inliers. Returns normals (P, 3), offsets d (P,), inliers (P, N), rms
    (P,) and whether a plane was found (P,).
    """
    p_count, n_max = pad.shape[:2]
    filled = np.arange(n_max)[None, :] < counts[:, None]
    valid = filled if valid is None else valid & filled
    tol = np.asarray(tolerances, dtype=np.float64).reshape(p_count)
    up = np.asarray(up, dtype=np.float64)
    cos_tilt = math.cos(max_tilt)
    rows = np.arange(p_count)
    # Gathers go through flat indices and np.take: indexing with (row, column) index
    # arrays costs two to three times as much.
    points = pad.reshape(-1, 3)
    draws = (_DRAWS[None, :iterations] * counts[:, None, None]).astype(np.intp)
    draws += rows[:, None, None] * n_max
    tri = np.take(points, draws, axis=0)  # (P, H, 3 corners, 3)
    a = tri[:, :, 0]
    normals = cross(tri[:, :, 1] - a, tri[:, :, 2] - a)
    norm = np.linalg.norm(normals, axis=-1)
    ok = (norm > 1e-12) & valid.ravel()[draws].all(axis=2)
    normals /= np.where(ok, norm, 1.0)[..., None]
    facing = normals @ up
    normals *= np.where(facing < 0, -1.0, 1.0)[..., None]
    upright = np.abs(facing)  # = normals @ up now that they are turned up
    ok &= upright >= cos_tilt
    offsets = -np.einsum('phi,phi->ph', normals, a)
    # Scoring: (P, H, 4) hypotheses [normal, offset] times (P, 4, S) points [x, y, z, 1]
    # gives every distance in one product, laid out so the count runs along the last axis;
    # float32 halves the cost.
    idx = rows[:, None] * n_max + (np.arange(sample)[None, :] * counts[:, None]) // sample
    sub = np.ones((p_count, sample, 4), np.float32)
    sub[:, :, :3] = np.take(points, idx, axis=0)
    sub[~valid.ravel()[idx]] = np.nan  # never near any plane
    hyp = np.empty((p_count, normals.shape[1], 4), np.float32)
    hyp[:, :, :3] = normals
    hyp[:, :, 3] = offsets
    dist = hyp @ sub.transpose(0, 2, 1)
    np.abs(dist, out=dist)
    near = np.count_nonzero(dist < tol.astype(np.float32)[:, None, None], axis=2)
    score = np.where(ok, near, -1)
    # Among hypotheses nearly as well supported as the best, the most upright wins: on a
    # dome (a poly bag) a plane along a flank holds as many points as the one on the crown.
    close = score >= np.ceil(close_enough * score.max(axis=1, keepdims=True))
    best = np.where(close & ok, upright, -2.0).argmax(axis=1)
    good = ok[rows, best] & (counts >= 3)
    normal, d = normals[rows, best], offsets[rows, best]
    for _ in range(refits):
        dist = (pad @ normal[:, :, None])[:, :, 0] + d[:, None]
        inl = valid & (np.abs(dist) < tol[:, None])
        refit, centroid, _ = fit_planes(pad, inl)
        refit *= np.where(refit @ up < 0, -1.0, 1.0)[:, None]
        accept = (inl.sum(axis=1) >= 3) & (refit @ up >= cos_tilt)
        normal = np.where(accept[:, None], refit, normal)
        d = np.where(accept, -np.einsum('pi,pi->p', refit, centroid), d)
    dist = (pad @ normal[:, :, None])[:, :, 0] + d[:, None]
    inl = valid & (np.abs(dist) < tol[:, None])
    n_in = inl.sum(axis=1)
    good &= n_in >= 3
    rms = np.sqrt(np.where(inl, dist * dist, 0.0).sum(axis=1) / np.maximum(n_in, 1))
    return normal, d, inl, rms, good


def plane_basis(normal: npt.ArrayLike) -> tuple[FloatArray, FloatArray]:
    """Two unit vectors spanning the plane orthogonal to `normal` (any in-plane rotation)."""
    n = np.asarray(normal, dtype=np.float64)
    helper = np.array([1.0, 0.0, 0.0]) if abs(n[0]) < 0.9 else np.array([0.0, 1.0, 0.0])
    e1 = cross(n, helper)
    e1 /= np.linalg.norm(e1)
    return e1, cross(n, e1)


def footprint_rectangle(
    points: npt.NDArray[np.floating], normal: npt.ArrayLike
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Minimum-area rectangle of (N, 3) points seen along `normal`.

    Returns:
        centre: (3,) in the plane through the origin orthogonal to `normal` (add the
        height along `normal` yourself); long_axis: (3,) unit; size: (2,) long, short side.
    """
    e1, e2 = plane_basis(normal)
    uv = np.stack([points @ e1, points @ e2], axis=1).astype(np.float32)
    (cu, cv), (w, h), angle = cv2.minAreaRect(uv)
    theta = np.radians(angle)
    axis_w = np.cos(theta) * e1 + np.sin(theta) * e2
    axis_h = -np.sin(theta) * e1 + np.cos(theta) * e2
    long_axis, size = (axis_w, np.array([w, h])) if w >= h else (axis_h, np.array([h, w]))
    return cu * e1 + cv * e2, long_axis, size.astype(np.float64)


def frame_from_axes(z_axis: npt.ArrayLike, y_hint: npt.ArrayLike) -> FloatArray:
    """(3, 3) right-handed rotation with columns x, y, z: z given, y as close to `y_hint`.

    Falls back to any y orthogonal to z when the hint is (nearly) parallel to z.
    """
    z = np.asarray(z_axis, dtype=np.float64).reshape(1, 3)
    return frames_from_axes(z, np.asarray(y_hint, dtype=np.float64).reshape(1, 3))[0]


def frames_from_axes(z_axes: npt.NDArray[np.floating], y_hints: npt.NDArray[np.floating]):
    """Batched `frame_from_axes`: (K, 3) z axes and y hints -> (K, 3, 3) rotations."""
    z = z_axes / np.linalg.norm(z_axes, axis=1, keepdims=True)
    y = y_hints - np.einsum('ki,ki->k', y_hints, z)[:, None] * z
    norm = np.linalg.norm(y, axis=1)
    bad = norm < 1e-9
    if bad.any():
        y[bad] = np.array([plane_basis(zi)[1] for zi in z[bad]])
        norm[bad] = 1.0
    y /= norm[:, None]
    return np.stack([cross(y, z), y, z], axis=2)
