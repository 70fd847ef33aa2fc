# Copyright 2026 The pkg_perception Authors
# SPDX-License-Identifier: Apache-2.0
"""The previous frame's network output, moved with the belt and blended into this frame's."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pkg_perception.bag.reader import BagFrameReader
from pkg_perception.frames import CameraModel, RGBDFrame
from pkg_perception.pipeline import Pipeline
from pkg_perception.segmentation.belt import BeltPlane
from pkg_perception.segmentation.instances import Segmentation
from pkg_perception.segmentation.oracle import GroundTruthSegmenter
from pkg_perception.segmentation.temporal import MAX_GAP_S, TemporalFusion
from pkg_perception.tracking import TrackingConfig

CAMERA = CameraModel(160, 120, 150.0, 150.0, 80.0, 60.0)
BELT = BeltPlane(np.array([0.0, 0.0, -1.0]), 1.0)  # 1 m straight below the camera
DEPTH = np.ones((120, 160), dtype=np.float32)
VELOCITY = np.array([0.3, 0.0, 0.0])  # m/s along the image's u axis
STEP_NS = 100_000_000  # 0.1 s: the belt moves 3 cm = 4.5 pixels at 1 m


def _blob(u0: float) -> np.ndarray:
    """(2, 120, 160) output with a smooth square parcel whose left edge is at u0."""
    u = np.arange(160, dtype=np.float32)[None, :]
    v = np.arange(120, dtype=np.float32)[:, None]
    inside = np.minimum(
        np.minimum(u - u0, u0 + 40 - u), np.minimum(v - 40, 80 - v)
    )  # distance inside, pixels
    parcel = np.clip(inside / 2.0, -3.0, 3.0)
    return np.stack([-parcel, parcel]).astype(np.float32)


def test_the_last_output_is_moved_with_the_belt_before_blending():
    before, now = _blob(50.0), _blob(54.5)
    fused = TemporalFusion(0.5)
    assert fused.fuse(before, 0, DEPTH, CAMERA, BELT, VELOCITY) is before
    out = fused.fuse(now, STEP_NS, DEPTH, CAMERA, BELT, VELOCITY)
    assert np.abs(out - now).max() < 0.1  # the moved blob lies where this frame's does
    still = TemporalFusion(0.5)
    still.fuse(before, 0, DEPTH, CAMERA, BELT, VELOCITY)
    unmoved = still.fuse(now, STEP_NS, DEPTH, CAMERA, BELT, np.zeros(3))
    assert np.abs(unmoved - now).max() > 0.9  # left where it was, it smears the edges


def test_nothing_is_blended_without_a_velocity_a_recent_frame_or_a_weight():
    before, now = _blob(50.0), _blob(54.5)
    for weight, velocity, step in (
        (0.5, None, STEP_NS),
        (0.5, VELOCITY, int(MAX_GAP_S * 1e9) + 1),
        (0.5, VELOCITY, -STEP_NS),  # a loop back in time
        (0.0, VELOCITY, STEP_NS),
    ):
        fusion = TemporalFusion(weight)
        fusion.fuse(before, STEP_NS, DEPTH, CAMERA, BELT, VELOCITY)
        assert fusion.fuse(now, STEP_NS + step, DEPTH, CAMERA, BELT, velocity) is now


def test_pixels_without_depth_move_as_the_belt_and_new_ones_keep_their_own_output():
    before, now = _blob(50.0), _blob(54.5)
    depth = DEPTH.copy()
    depth[:, :80] = np.nan  # taken on the belt plane, 1 m: the same motion
    fusion = TemporalFusion(0.5)
    fusion.fuse(before, 0, depth, CAMERA, BELT, VELOCITY)
    out = fusion.fuse(now, STEP_NS, depth, CAMERA, BELT, VELOCITY)
    assert np.abs(out - now).max() < 0.1
    # The first 4.5 columns were out of view a frame ago: this frame's output alone.
    np.testing.assert_array_equal(out[:, :, :4], now[:, :, :4])


class _Recording(GroundTruthSegmenter):
    def __init__(self) -> None:
        self.velocities: list[np.ndarray | None] = []

    def segment(
        self, frame: RGBDFrame, belt: BeltPlane, belt_velocity: object = None
    ) -> Segmentation:
        self.velocities.append(None if belt_velocity is None else np.asarray(belt_velocity))
        return super().segment(frame, belt)


def test_the_pipeline_tells_the_segmenter_the_belt_velocity_in_the_optical_frame(
    small_bag_path: Path,
) -> None:
    with BagFrameReader(small_bag_path) as reader:
        frames = [f for _, f in zip(range(8), reader.frames(), strict=False)]
    speed = float(frames[0].ground_truth.truth.belt_velocity[0])
    t_camera_conveyor = frames[0].transforms.lookup(frames[0].frame_id, 'conveyor')
    truth = t_camera_conveyor[:3, :3] @ frames[0].ground_truth.truth.belt_velocity
    configured = _Recording()
    pipeline = Pipeline(configured, tracking=TrackingConfig(belt_velocity=(speed, 0.0, 0.0)))
    for frame in frames[:2]:
        pipeline.process(frame)
    for v in configured.velocities:
        np.testing.assert_allclose(v, truth, atol=1e-9)
    estimated = _Recording()
    pipeline = Pipeline(estimated)
    for frame in frames:
        pipeline.process(frame)
    assert estimated.velocities[0] is None  # nothing measured yet
    last = estimated.velocities[-1]
    assert last is not None and np.linalg.norm(last - truth) < 0.1 * np.linalg.norm(truth)
