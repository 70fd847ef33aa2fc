# Copyright 2026 The pkg_perception Authors
# SPDX-License-Identifier: Apache-2.0
"""Simulator: shapes, layouts, the depth model against exact geometry, ground truth."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import SEED, SMALL

from pkg_perception.classes import ParcelClass
from pkg_perception.errors import ConfigError
from pkg_perception.frames import depth_from_millimetres
from pkg_perception.sim.ground_truth import FrameTruth
from pkg_perception.sim.layout import MAX_PILE_TOP, MAX_TILT, BeltLayout, _rest_plane
from pkg_perception.sim.parcels import SIZE_RANGES, sample_shape
from pkg_perception.sim.render import BeltRenderer, Lighting
from pkg_perception.sim.simulator import ConveyorSimulator, SimConfig
from pkg_perception.transforms import transform_points


@pytest.mark.parametrize('cls', list(ParcelClass))
def test_shapes_have_realistic_sizes_and_a_top_face(cls: ParcelClass) -> None:
    rng = np.random.default_rng(0)
    for _ in range(20):
        shape = sample_shape(cls, rng)
        (l_lo, l_hi), (w_lo, w_hi), (h_lo, _h_hi) = SIZE_RANGES[cls]
        assert l_lo - 1e-6 <= shape.size[0] <= l_hi + 0.02
        assert w_lo - 1e-6 <= shape.size[1] <= w_hi + 1e-6
        assert shape.size[1] <= shape.size[0] + 1e-6 or cls is ParcelClass.BOX
        # Open flaps stick up, so only the lower bound of the height holds for boxes.
        assert h_lo - 1e-6 <= shape.size[2]
        assert np.all(shape.top_face.half_extents > 0)
        assert np.all(shape.top_face.half_extents <= shape.size[:2] / 2 + 1e-6)
        assert shape.triangles.max() < len(shape.vertices)


def test_piles_stack_parcels_and_rows_do_not() -> None:
    piles = BeltLayout(np.random.default_rng(1), scene='piles', belt_width=0.9, start_x=0.0)
    placed = piles.parcels_between(-6.0, 0.0)
    assert sum(1 for p in placed if p.rests_on) >= len(placed) // 3
    assert max(p.pose[2, 3] for p in placed) > 0.15  # something sits on something else
    rows = BeltLayout(np.random.default_rng(1), scene='rows', belt_width=0.9, start_x=0.0)
    for p in rows.parcels_between(-6.0, 0.0):
        assert p.rests_on == ()
        assert p.pose[2, 3] == pytest.approx(p.shape.size[2] / 2, abs=1e-6)  # flat on the belt
        assert abs(p.pose[1, 3]) < 0.45


def _footprint(half: float = 0.2, step: float = 0.02) -> np.ndarray:
    g = np.arange(-half, half + 1e-9, step)
    return np.stack(np.meshgrid(g, g, indexing='ij'), -1).reshape(-1, 2)


def test_a_dropped_parcel_rests_with_its_centre_supported() -> None:
    uv = _footprint()
    assert _rest_plane(uv, np.zeros(len(uv))) == pytest.approx((0, 0, 0), abs=1e-9)
    # A block under the centre (and more): the parcel lies flat on it.
    block = np.where(uv[:, 0] <= 0.05, 0.1, 0.0)
    assert _rest_plane(uv, block) == pytest.approx((0.1, 0, 0), abs=1e-9)
    # A low block under less than half: it tips over the block's edge onto the belt.
    block = np.where(uv[:, 0] <= -0.06, 0.1, 0.0)
    a, b, c = _rest_plane(uv, block)
    slope = -0.1 / (0.2 + 0.06)  # from the block's edge (u = -0.06) down to the far end
    assert (b, c) == pytest.approx((slope, 0), abs=1e-9)
    assert a == pytest.approx(0.1 + slope * 0.06, abs=1e-9)
    # A tall one: the rest would be steeper than MAX_TILT, so it slides off.
    assert _rest_plane(uv, np.where(uv[:, 0] <= -0.06, 0.3, 0.0)) is None


def test_piles_are_statically_plausible() -> None:
    for seed in range(3):
        layout = BeltLayout(np.random.default_rng(seed), scene='piles', belt_width=0.9, start_x=0)
        for p in layout.parcels_between(-6.0, 0.0):
            assert np.arccos(p.pose[2, 2]) <= MAX_TILT + 1e-6
            top = p.pose[2, 3] + p.pose[2, 2] * p.shape.size[2] / 2
            assert top <= MAX_PILE_TOP


def _belt_pixels(sim: ConveyorSimulator, frame) -> tuple[np.ndarray, np.ndarray]:
    """Measured and exact depth on belt pixels well away from parcels and rails."""
    cam = sim.camera
    v, u = np.mgrid[0 : cam.height, 0 : cam.width]
    rays = np.stack([(u - cam.cx) / cam.fx, (v - cam.cy) / cam.fy, np.ones(u.shape)], -1)
    t = sim.conveyor_from_camera
    dirs = rays @ t[:3, :3].T
    exact = -t[2, 3] / dirs[..., 2]  # ray meets the belt plane z = 0 at this depth
    hit = t[:3, 3] + dirs * exact[..., None]
    on_belt = np.abs(hit[..., 1]) < sim.belt_width / 2 - 0.05
    from scipy.ndimage import binary_dilation

    near_parcel = binary_dilation(frame.instance_ids > 0, iterations=6)
    depth = depth_from_millimetres(frame.depth_mm)
    keep = on_belt & ~near_parcel & np.isfinite(depth)
    return depth[keep], exact[keep]


def test_pixel_centres_sit_at_integer_coordinates() -> None:
    # As in CameraInfo and OpenCV: pixel (u, v) looks along ((u - cx) / fx, (v - cy) / fy, 1).
    sim = ConveyorSimulator(SimConfig(width=160, height=120, scene='sparse'), seed=3)
    render = sim.renderer.render([], 0.0)
    cam, t = sim.camera, sim.conveyor_from_camera
    v, u = np.mgrid[0 : cam.height, 0 : cam.width]
    dirs = np.stack([(u - cam.cx) / cam.fx, (v - cam.cy) / cam.fy, np.ones(u.shape)], -1)
    exact = -t[2, 3] / (dirs @ t[2, :3])  # depth where each pixel's ray meets z = 0
    on_belt = np.abs((t[:3, 3] + (dirs @ t[:3, :3].T) * exact[..., None])[..., 1]) < 0.3
    assert on_belt.sum() > 5000
    # Half a pixel off would be ~1e-4 m here (the camera is tilted); float32 allows ~1e-6.
    np.testing.assert_allclose(render.depth[on_belt], exact[on_belt], atol=5e-6)


def _side_light(azimuth: float) -> Lighting:
    el = np.radians(40.0)  # low light: long shadows
    direction = np.array([np.cos(el) * np.cos(azimuth), np.cos(el) * np.sin(azimuth), np.sin(el)])
    return Lighting(direction, 0.8, 0.3)


@pytest.mark.parametrize('azimuth', [0.0, 2.0, 4.0])
def test_rendering_only_what_parcels_change_matches_a_full_render(
    azimuth: float, monkeypatch: pytest.MonkeyPatch
) -> None:
    sim = ConveyorSimulator(SimConfig(width=160, height=120, scene='piles'), seed=5)
    renderer = BeltRenderer(
        sim.camera, sim.conveyor_from_camera, sim.renderer.belt, _side_light(azimuth)
    )
    layout = BeltLayout(
        np.random.default_rng(2), scene='piles', belt_width=sim.belt_width, start_x=1.0
    )
    parcels = layout.parcels_between(-1.5, 1.5)
    part = renderer.render(parcels, 0.1)
    everything = (
        np.ones((120, 160), bool),
        np.ones(renderer._bg.block_shape, bool),
    )
    monkeypatch.setattr(renderer._regions, 'find', lambda corners: everything)
    whole = renderer.render(parcels, 0.1)
    assert (part.parcel_ids > 0).mean() > 0.05
    np.testing.assert_array_equal(part.parcel_ids, whole.parcel_ids)
    np.testing.assert_array_equal(part.depth, whole.depth)
    # Shadow rays start from the moved scene in one and the static one in the other: a grazing
    # ray may flip a shadow block (9 pixels) at most here and there.
    assert np.sum(np.abs(part.radiance - whole.radiance).max(axis=2) > 1e-4) <= 18
    assert np.sum(part.stereo_shadow != whole.stereo_shadow) <= 18
    np.testing.assert_allclose(part.albedo_luma, whole.albedo_luma, atol=1e-6)


def test_belt_depth_matches_geometry_within_the_noise_model() -> None:
    sim = ConveyorSimulator(SimConfig(width=320, height=240, scene='sparse'), seed=3)
    frame = sim.frame(0)
    measured, exact = _belt_pixels(sim, frame)
    assert measured.size > 5000
    sigma = sim.config.depth_noise.sigma_at_1m * exact**2
    err = measured - exact
    # Unbiased, spread as the model says (noise plus 1 mm quantization), no gross outliers.
    assert abs(float(np.median(err))) < 0.5e-3 + float(np.median(sigma))
    assert float(np.std(err)) == pytest.approx(
        float(np.sqrt(np.mean(sigma**2) + 1e-6 / 12)), rel=0.35
    )
    assert float(np.mean(np.abs(err) < 5 * sigma + 1e-3)) > 0.995
    assert np.all(frame.depth_mm[frame.depth_mm > 0] % 1 == 0)  # integer millimetres


def test_depth_model_drops_edges_and_keeps_the_rest() -> None:
    sim = ConveyorSimulator(SimConfig(width=320, height=240, scene='piles'), seed=5)
    frame = sim.frame(0)
    holes = frame.depth_mm == 0
    assert 0.005 < holes.mean() < 0.25
    ids = frame.instance_ids.astype(int)
    edges = np.zeros_like(holes)
    edges[:, 1:] |= ids[:, 1:] != ids[:, :-1]
    edges[1:, :] |= ids[1:, :] != ids[:-1, :]
    assert holes[edges].mean() > 3 * holes[~edges].mean()  # missing depth gathers on edges


def test_parcel_tops_lie_where_ground_truth_says() -> None:
    sim = ConveyorSimulator(SimConfig(width=320, height=240, scene='rows'), seed=11)
    frame = next(f for f in sim.frames(30) if any(p.graspable for p in f.truth.parcels))
    depth = depth_from_millimetres(frame.depth_mm)
    cam = sim.camera
    checked = 0
    for parcel in (p for p in frame.truth.parcels if p.graspable):
        face = parcel.top_face
        v, u = np.nonzero((frame.instance_ids == parcel.parcel_id) & np.isfinite(depth))
        z = depth[v, u]
        pts = np.stack([(u - cam.cx) / cam.fx * z, (v - cam.cy) / cam.fy * z, z], 1)
        pts = transform_points(sim.conveyor_from_camera, pts)
        off = (pts - face.center) @ face.normal
        xa = face.x_axis
        ya = np.cross(face.normal, xa)
        inside = (np.abs((pts - face.center) @ xa) < face.half_extents[0] - 0.01) & (
            np.abs((pts - face.center) @ ya) < face.half_extents[1] - 0.01
        )
        if inside.sum() < 50:
            continue
        tol = (
            face.flatness
            + 4 * sim.config.depth_noise.sigma_at_1m * float(np.median(z)) ** 2
            + 2e-3
        )
        assert float(np.median(np.abs(off[inside]))) < tol, parcel.parcel_class
        checked += 1
    assert checked >= 1


def test_ground_truth_json_round_trips() -> None:
    sim = ConveyorSimulator(SMALL, SEED)
    truth = sim.frame(4).truth
    back = FrameTruth.from_json(truth.to_json())
    assert back.stamp_ns == truth.stamp_ns
    assert [p.parcel_id for p in back.parcels] == [p.parcel_id for p in truth.parcels]
    for a, b in zip(back.parcels, truth.parcels, strict=False):
        np.testing.assert_allclose(a.pose, b.pose, atol=1e-6)
        assert a.parcel_class is b.parcel_class and a.supports == b.supports
    with pytest.raises(ValueError, match='schema'):
        FrameTruth.from_json('{"schema": "other"}')


def test_belt_carries_parcels_at_belt_speed() -> None:
    sim = ConveyorSimulator(SMALL, SEED)
    a, b = sim.frame(0).truth.by_id(), sim.frame(3).truth.by_id()
    common = set(a) & set(b)
    assert common
    for pid in common:
        moved = b[pid].pose[:3, 3] - a[pid].pose[:3, 3]
        np.testing.assert_allclose(moved, [SMALL.belt_speed * 3 / SMALL.fps, 0, 0], atol=1e-9)


def test_same_seed_same_frames_in_any_order() -> None:
    one, two = ConveyorSimulator(SMALL, 2), ConveyorSimulator(SMALL, 2)
    late = two.frame(5)
    early = [one.frame(k) for k in range(6)]
    np.testing.assert_array_equal(early[5].color, late.color)
    np.testing.assert_array_equal(early[5].depth_mm, late.depth_mm)


@pytest.mark.parametrize(
    ('kwargs', 'match'),
    [
        ({'scene': 'heap'}, 'scene'),
        ({'fps': 0.0}, 'fps'),
        ({'camera_height': (2.0, 1.0)}, 'camera_height'),
        ({'camera_presets': ('kinect_v9',)}, 'camera_presets'),
        ({'width': 8}, 'image size'),
    ],
)
def test_bad_config_is_refused_by_name(kwargs: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        SimConfig(**kwargs)
