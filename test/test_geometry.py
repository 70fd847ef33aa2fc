# Copyright 2026 The pkg_perception Authors
# SPDX-License-Identifier: Apache-2.0
"""Back-projection (pinhole and plumb_bob), plane fits, rectangles and frames."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from pkg_perception.errors import InputError
from pkg_perception.frames import CameraModel
from pkg_perception.geometry import (
    back_project,
    depth_to_metres,
    fit_plane,
    footprint_rectangle,
    frame_from_axes,
    normalized_rays,
    project_points,
    ransac_plane,
    ransac_planes,
    ray_planes,
    undistort_pixels,
)

PINHOLE = CameraModel(width=8, height=6, fx=100.0, fy=110.0, cx=3.0, cy=2.0)
PLUMB_BOB = CameraModel(
    width=64,
    height=48,
    fx=60.0,
    fy=62.0,
    cx=31.5,
    cy=23.5,
    distortion=(-0.25, 0.08, 0.001, -0.002, 0.0),
)


def test_depth_to_metres_marks_invalid_pixels() -> None:
    mm = np.array([[0, 1000], [1500, 65535]], dtype=np.uint16)
    out = depth_to_metres(mm)
    assert out.dtype == np.float32
    assert np.isnan(out[0, 0])
    assert out[0, 1] == pytest.approx(1.0)
    assert out[1, 0] == pytest.approx(1.5)
    metres = np.array([[0.0, -1.0], [np.inf, 2.5]], dtype=np.float32)
    out = depth_to_metres(metres)
    assert np.isnan(out[:, 0]).all() and np.isnan(out[1, 0]) and np.isnan(out[0, 1])
    assert out[1, 1] == pytest.approx(2.5)
    with pytest.raises(InputError, match='dtype'):
        depth_to_metres(np.zeros((2, 2), dtype=np.int32))


def test_back_project_pinhole_by_hand() -> None:
    depth = np.full((6, 8), np.nan, dtype=np.float32)
    depth[2, 3] = 2.0  # the principal point
    depth[4, 7] = 1.0  # u - cx = 4, v - cy = 2
    points, pixels = back_project(depth, PINHOLE)
    order = np.argsort(pixels[:, 0])
    points, pixels = points[order], pixels[order]
    np.testing.assert_array_equal(pixels, [[3, 2], [7, 4]])
    np.testing.assert_allclose(points[0], [0.0, 0.0, 2.0])
    np.testing.assert_allclose(points[1], [4.0 / 100.0, 2.0 / 110.0, 1.0])


def test_back_project_accepts_millimetres_mask_and_stride() -> None:
    mm = np.full((6, 8), 1500, dtype=np.uint16)
    mm[0, 0] = 0
    mask = np.zeros((6, 8), dtype=bool)
    mask[:, :4] = True
    points, pixels = back_project(mm, PINHOLE, mask=mask, stride=2)
    # Rows 0, 2, 4 and columns 0, 2 inside the mask, minus the invalid (0, 0).
    assert len(points) == 5
    assert np.all(pixels[:, 0] < 4) and np.all(pixels % 2 == 0)
    np.testing.assert_allclose(points[:, 2], 1.5)


def test_back_project_rejects_a_depth_of_another_size() -> None:
    with pytest.raises(InputError, match='shape'):
        back_project(np.ones((5, 8), dtype=np.float32), PINHOLE)
    with pytest.raises(InputError, match='stride'):
        back_project(np.ones((6, 8), dtype=np.float32), PINHOLE, stride=0)


def test_plumb_bob_back_projection_matches_opencv_and_projects_back() -> None:
    rng = np.random.default_rng(0)
    depth = rng.uniform(0.8, 1.6, (48, 64)).astype(np.float32)
    points, pixels = back_project(depth, PLUMB_BOB)
    reference = cv2.undistortPoints(
        pixels.astype(np.float64).reshape(-1, 1, 2),
        PLUMB_BOB.k,
        np.asarray(PLUMB_BOB.distortion),
    ).reshape(-1, 2)
    np.testing.assert_allclose(points[:, :2] / points[:, 2:], reference, atol=1e-4)
    # Distortion moves corners by pixels: ignoring it would be visibly wrong there.
    pinhole = (pixels - [PLUMB_BOB.cx, PLUMB_BOB.cy]) / [PLUMB_BOB.fx, PLUMB_BOB.fy]
    assert np.abs(pinhole - reference).max() * PLUMB_BOB.fx > 1.0
    np.testing.assert_allclose(project_points(PLUMB_BOB, points), pixels, atol=1e-3)


def test_ray_planes_are_the_ray_table_split_into_contiguous_planes() -> None:
    rays = normalized_rays(PLUMB_BOB)
    x, y = ray_planes(PLUMB_BOB)
    assert x.flags.c_contiguous and y.flags.c_contiguous
    np.testing.assert_array_equal(x, rays[..., 0])
    np.testing.assert_array_equal(y, rays[..., 1])
    assert ray_planes(PLUMB_BOB)[0] is x  # computed once per camera model


def test_undistort_without_distortion_is_the_pinhole_model() -> None:
    x, y = undistort_pixels(PINHOLE, [3.0, 103.0], [2.0, 2.0])
    np.testing.assert_allclose(x, [0.0, 1.0])
    np.testing.assert_allclose(y, [0.0, 0.0])


def test_unknown_distortion_model_is_a_clear_error() -> None:
    cam = CameraModel(
        width=4, height=4, fx=1.0, fy=1.0, cx=2.0, cy=2.0, distortion_model='equidistant',
        distortion=(0.1, 0.0, 0.0, 0.0),
    )  # fmt: skip
    with pytest.raises(InputError, match='equidistant'):
        undistort_pixels(cam, [1.0], [1.0])


def test_project_points_behind_the_camera_is_nan() -> None:
    uv = project_points(PINHOLE, [[0.0, 0.0, 1.0], [0.0, 0.0, -1.0]])
    np.testing.assert_allclose(uv[0], [3.0, 2.0])
    assert np.isnan(uv[1]).all()


def test_fit_plane_by_hand() -> None:
    pts = np.array([[0.0, 0.0, 1.0], [1.0, 0.0, 1.0], [0.0, 1.0, 1.0], [1.0, 1.0, 1.0]])
    normal, centroid, rms = fit_plane(pts)
    assert abs(normal[2]) == pytest.approx(1.0)
    np.testing.assert_allclose(centroid, [0.5, 0.5, 1.0])
    assert rms == pytest.approx(0.0, abs=1e-12)


def _plane_cloud(normal: np.ndarray, d: float, n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    e1 = np.cross(normal, [1.0, 0.0, 0.0])
    e1 /= np.linalg.norm(e1)
    e2 = np.cross(normal, e1)
    uv = rng.uniform(-0.2, 0.2, (n, 2))
    pts = uv[:, :1] * e1 + uv[:, 1:] * e2 - d * normal
    return pts + rng.normal(0.0, 0.001, (n, 1)) * normal


def test_ransac_finds_the_plane_among_outliers() -> None:
    up = np.array([0.0, -0.1, -1.0]) / math.hypot(0.1, 1.0)  # towards a camera looking down
    plane = _plane_cloud(up, 1.2, 600, seed=1)
    rng = np.random.default_rng(2)
    outliers = rng.uniform([-0.2, -0.2, 0.9], [0.2, 0.2, 1.3], (200, 3))
    fit = ransac_plane(
        np.concatenate([plane, outliers]), tolerance=0.004, up=up, max_tilt=math.radians(30)
    )
    assert fit is not None
    assert math.degrees(math.acos(min(1.0, fit.normal @ up))) < 0.5
    assert fit.d == pytest.approx(1.2, abs=0.002)
    assert fit.inliers[:600].mean() > 0.97
    assert fit.inliers[600:].mean() < 0.1


def test_ransac_ignores_planes_tilted_beyond_the_limit() -> None:
    up = np.array([0.0, 0.0, -1.0])
    steep = np.array([0.0, -math.sin(math.radians(50)), -math.cos(math.radians(50))])
    fit = ransac_plane(
        _plane_cloud(steep, 1.0, 300, seed=3), tolerance=0.004, up=up, max_tilt=math.radians(30)
    )
    assert fit is None
    assert ransac_plane(np.zeros((2, 3)), tolerance=0.01, up=up, max_tilt=1.0) is None


def test_batched_ransac_matches_one_at_a_time() -> None:
    up = np.array([0.0, 0.0, -1.0])
    clouds = [_plane_cloud(up, 1.0 + 0.1 * i, 100 + 50 * i, seed=i) for i in range(3)]
    batch = ransac_planes(clouds, [0.004] * 3, up=up, max_tilt=0.5)
    for cloud, fit in zip(clouds, batch, strict=True):
        single = ransac_plane(cloud, tolerance=0.004, up=up, max_tilt=0.5)
        assert fit is not None and single is not None
        np.testing.assert_allclose(fit.normal, single.normal, atol=1e-9)
        assert len(fit.inliers) == len(cloud)


def test_footprint_rectangle_recovers_size_and_axis() -> None:
    angle = math.radians(30)
    long_dir = np.array([math.cos(angle), math.sin(angle), 0.0])
    short_dir = np.array([-math.sin(angle), math.cos(angle), 0.0])
    s, t = np.meshgrid(np.linspace(-0.2, 0.2, 41), np.linspace(-0.05, 0.05, 11))
    pts = s.reshape(-1, 1) * long_dir + t.reshape(-1, 1) * short_dir + [0.3, -0.1, 0.7]
    centre, axis, size = footprint_rectangle(pts, [0.0, 0.0, 1.0])
    np.testing.assert_allclose(size, [0.4, 0.1], atol=1e-4)
    assert abs(axis @ long_dir) == pytest.approx(1.0, abs=1e-6)
    np.testing.assert_allclose(centre[:2], [0.3, -0.1], atol=1e-4)
    assert centre[2] == pytest.approx(0.0, abs=1e-9)


def test_frame_from_axes_is_right_handed_with_the_given_z() -> None:
    rot = frame_from_axes([0.0, 0.0, 2.0], [1.0, 1.0, 5.0])
    np.testing.assert_allclose(rot.T @ rot, np.eye(3), atol=1e-12)
    assert np.linalg.det(rot) == pytest.approx(1.0)
    np.testing.assert_allclose(rot[:, 2], [0.0, 0.0, 1.0])
    np.testing.assert_allclose(rot[:, 1], [1 / math.sqrt(2), 1 / math.sqrt(2), 0.0])
    degenerate = frame_from_axes([0.0, 0.0, 1.0], [0.0, 0.0, 3.0])
    np.testing.assert_allclose(degenerate.T @ degenerate, np.eye(3), atol=1e-12)
