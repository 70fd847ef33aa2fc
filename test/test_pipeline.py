# Copyright 2026 The pkg_perception Authors
# SPDX-License-Identifier: Apache-2.0
"""Pipeline: frames in, ranked grasps out, in the target frame, with timings and flags."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from grasp_scenes import (
    CAMERA,
    T_BASE_CONVEYOR,
    T_CONVEYOR_CAMERA,
    Block,
    SceneSegmenter,
    frame,
    segmentation,
    tilted_pillow,
    transforms,
)

from pkg_perception.bag.reader import BagFrameReader
from pkg_perception.classes import ParcelClass
from pkg_perception.errors import InputError
from pkg_perception.frames import CameraModel, RGBDFrame
from pkg_perception.pipeline import FLAG_NO_BELT, FLAG_TF_FALLBACK, Pipeline, labels_at
from pkg_perception.segmentation.belt import BeltPlane
from pkg_perception.segmentation.instances import FLAG_NO_DEPTH, Segmentation
from pkg_perception.segmentation.oracle import GroundTruthSegmenter
from pkg_perception.tracking import TrackingConfig
from pkg_perception.transforms import invert

BLOCKS = [Block(-0.15, 0.0, 0.2, 0.2, 0.12), Block(0.15, 0.05, 0.25, 0.18, 0.08)]
T_BASE_CAMERA = T_BASE_CONVEYOR @ T_CONVEYOR_CAMERA
STAGES = {'segment', 'lift', 'grasp', 'track', 'total'}


def test_grasps_come_out_in_the_target_frame_from_tf() -> None:
    pipe = Pipeline(SceneSegmenter(BLOCKS))
    result = pipe.process(frame(BLOCKS, stamp_ns=123))
    assert result.frame_id == 'base_link'
    assert result.camera_frame_id == CAMERA.frame_id
    assert result.stamp_ns == 123
    assert set(result.timings_ms) >= STAGES
    assert result.flags == ()
    assert len(result.parcels) == 2 and result.grasps
    assert [g.score for g in result.grasps] == sorted(
        (g.score for g in result.grasps), reverse=True
    )
    ids = {p.track_id for p in result.parcels}
    for g in result.grasps:
        assert g.frame_id == 'base_link' and g.stamp_ns == 123 and g.parcel_id in ids
        assert np.isfinite(g.pose).all()
        np.testing.assert_allclose(g.pose[:3, 2], [0.0, 0.0, -1.0], atol=1e-3)  # down
    top = result.grasps[0]
    assert top.parcel_id == next(p.track_id for p in result.parcels if p.label == 1)
    # The tallest parcel's top in base_link: conveyor (-0.15, 0, 0.12) + base offset.
    np.testing.assert_allclose(top.pose[:3, 3], [0.35, 0.0, 0.32], atol=0.012)
    parcel = next(p for p in result.parcels if p.label == 1)
    assert parcel.height == pytest.approx(0.12, abs=0.002)
    np.testing.assert_allclose(parcel.top_normal, [0.0, 0.0, 1.0], atol=1e-3)


def test_the_tracker_sees_the_mask_under_a_point_of_the_output_frame() -> None:
    result = Pipeline(SceneSegmenter(BLOCKS)).process(frame(BLOCKS))
    at = labels_at(result.segmentation.labels, CAMERA, T_BASE_CAMERA)
    tops = np.array([p.top_center for p in result.parcels])
    np.testing.assert_array_equal(at(tops), [p.label for p in result.parcels])
    # Between the two blocks lies the belt; far along the belt is off the image.
    gap, far = T_BASE_CONVEYOR @ [0.0, -0.1, 0.0, 1.0], T_BASE_CONVEYOR @ [5.0, 0.0, 0.0, 1.0]
    np.testing.assert_array_equal(at(np.array([gap[:3], far[:3]])), [0, -1])


def test_configured_extrinsics_stand_in_for_tf() -> None:
    with_tf = Pipeline(SceneSegmenter(BLOCKS)).process(frame(BLOCKS))
    pipe = Pipeline(
        SceneSegmenter(BLOCKS), t_target_camera=T_BASE_CAMERA, t_conveyor_camera=T_CONVEYOR_CAMERA
    )
    result = pipe.process(frame(BLOCKS, with_tf=False))
    assert result.frame_id == 'base_link' and result.flags == ()
    np.testing.assert_allclose(result.grasps[0].pose, with_tf.grasps[0].pose, atol=1e-9)


def test_without_extrinsics_it_publishes_in_the_camera_frame_and_says_so() -> None:
    result = Pipeline(SceneSegmenter(BLOCKS)).process(frame(BLOCKS, with_tf=False))
    assert result.frame_id == CAMERA.frame_id
    assert FLAG_TF_FALLBACK in result.flags
    assert 'belt_estimated' in result.flags
    with_tf = Pipeline(SceneSegmenter(BLOCKS)).process(frame(BLOCKS))
    expected = invert(T_BASE_CAMERA) @ with_tf.grasps[0].pose
    np.testing.assert_allclose(result.grasps[0].pose[:3, 3], expected[:3, 3], atol=0.003)


def test_any_target_frame_tf_knows() -> None:
    result = Pipeline(SceneSegmenter(BLOCKS), target_frame='conveyor').process(frame(BLOCKS))
    assert result.frame_id == 'conveyor'
    np.testing.assert_allclose(result.grasps[0].pose[:3, 3], [-0.15, 0.0, 0.12], atol=0.012)


def test_no_depth_gives_flags_not_a_crash() -> None:
    blank = frame(BLOCKS)
    blank.depth[:] = np.nan
    # Without extrinsics the belt cannot be found.
    result = Pipeline(SceneSegmenter(BLOCKS)).process(
        RGBDFrame(blank.color, blank.depth, blank.camera, 5)
    )
    assert FLAG_NO_BELT in result.flags and result.grasps == [] and result.stamp_ns == 5
    # With them, the masks have no depth: no parcels.
    result = Pipeline(SceneSegmenter(BLOCKS)).process(blank)
    assert FLAG_NO_DEPTH in result.flags
    assert result.parcels == [] and result.grasps == []


def test_a_segmentation_of_the_wrong_size_is_a_clear_error() -> None:
    class Wrong:
        name = 'wrong'
        provider = 'test'

        def segment(
            self, frame: RGBDFrame, belt: object, belt_velocity: object = None
        ) -> Segmentation:
            return Segmentation.empty(10, 10)

    with pytest.raises(InputError, match='wrong returned labels of shape'):
        Pipeline(Wrong()).process(frame(BLOCKS))


def test_bad_extrinsics_are_refused() -> None:
    bad = np.eye(4)
    bad[0, 3] = np.nan
    with pytest.raises(InputError, match='t_target_camera'):
        Pipeline(SceneSegmenter(BLOCKS), t_target_camera=bad)
    with pytest.raises(InputError, match='t_conveyor_camera'):
        Pipeline(SceneSegmenter(BLOCKS), t_conveyor_camera=np.eye(3))


def test_a_simulated_bag_with_ground_truth_masks(small_bag_path: Path) -> None:
    pipe = Pipeline(GroundTruthSegmenter())
    stamps, ids = [], []
    with BagFrameReader(small_bag_path) as reader:
        frames = list(reader.frames())
    for f in frames:
        result = pipe.process(f)
        stamps.append(result.stamp_ns)
        assert result.stamp_ns == f.stamp_ns and result.frame_id == 'base_link'
        for g in result.grasps:
            rot = g.pose[:3, :3]
            np.testing.assert_allclose(rot.T @ rot, np.eye(3), atol=1e-9)
            assert 0.0 <= g.score <= 1.0
            assert g.pose[2, 2] < 0  # approaching from above
        ids.append({p.label: p.track_id for p in result.parcels})
    assert any(r for r in ids)
    # Labels are the simulator's parcel ids here: each keeps one track id throughout.
    seen: dict[int, set[int]] = {}
    for frame_ids in ids:
        for label, tid in frame_ids.items():
            seen.setdefault(label, set()).add(tid)
    assert all(len(v) == 1 for v in seen.values())
    # Playing the bag again (a loop: stamps go back) starts the tracks afresh.
    again = pipe.process(frames[0])
    assert {p.track_id for p in again.parcels}.isdisjoint(set().union(*seen.values()))


def test_inputs_that_cannot_be_a_frame_are_refused_before_the_pipeline() -> None:
    good = frame(BLOCKS)
    with pytest.raises(InputError, match='aligned to color'):
        RGBDFrame(good.color, good.depth[:-2], good.camera, 0)
    with pytest.raises(InputError, match='finite'):
        CameraModel(width=200, height=150, fx=float('nan'), fy=160.0, cx=99.5, cy=74.5)


class _DoubtfulSegmenter(SceneSegmenter):
    """The scene's masks with class distributions: box, box, then a view like an envelope."""

    def __init__(self, blocks: list[Block]) -> None:
        super().__init__(blocks)
        self.views = 0

    def segment(
        self, frame: RGBDFrame, belt: BeltPlane, belt_velocity: object = None
    ) -> Segmentation:
        seg = super().segment(frame, belt)
        probs = (0.9, 0.03, 0.02, 0.05) if self.views < 2 else (0.35, 0.05, 0.05, 0.55)
        self.views += 1
        cls = ParcelClass.BOX if probs[0] > probs[3] else ParcelClass.ENVELOPE
        return replace(
            seg,
            instances=[
                replace(i, parcel_class=cls, score=max(probs), class_probs=probs)
                for i in seg.instances
            ],
        )


def test_classes_are_pooled_over_each_parcels_track() -> None:
    segmenter = _DoubtfulSegmenter(BLOCKS)
    pipe = Pipeline(segmenter)
    for k in range(3):
        result = pipe.process(frame(BLOCKS, stamp_ns=k * 50_000_000))
    # The third view alone says envelope; the pipeline publishes what the track has seen.
    assert {i.parcel_class for i in result.segmentation.instances} == {ParcelClass.BOX}
    assert {p.parcel_class for p in result.parcels} == {ParcelClass.BOX}
    assert {g.parcel_class for g in result.grasps} == {ParcelClass.BOX}
    # This view's box probability (0.35) times the track's geometric mean (0.9), normalized.
    pooled = 0.35 * 0.9 / (0.35 * 0.9 + 0.55 * 0.05 + 0.05 * 0.03 + 0.05 * 0.02)
    assert [p.score for p in result.parcels] == pytest.approx([pooled] * 2)
    alone = Pipeline(_DoubtfulSegmenter(BLOCKS), tracking=TrackingConfig(class_memory=0.0))
    for k in range(3):
        result = alone.process(frame(BLOCKS, stamp_ns=k * 50_000_000))
    assert {p.parcel_class for p in result.parcels} == {ParcelClass.ENVELOPE}


class _PillowSegmenter:
    """A poly bag tilted 24 degrees, called a poly bag twice, then (wrongly) a box."""

    name = 'pillow'
    provider = 'test'

    def __init__(self, labels: np.ndarray) -> None:
        self.labels = labels
        self.views = 0

    def segment(
        self, frame: RGBDFrame, belt: BeltPlane, belt_velocity: object = None
    ) -> Segmentation:
        probs = (0.05, 0.9, 0.03, 0.02) if self.views < 2 else (0.55, 0.4, 0.03, 0.02)
        self.views += 1
        cls = ParcelClass.POLYBAG if probs[1] > probs[0] else ParcelClass.BOX
        seg = segmentation(self.labels, [Block(0.0, 0.0, 0.3, 0.2, 0.1)])
        (inst,) = seg.instances
        return replace(seg, instances=[replace(inst, parcel_class=cls, class_probs=probs)])


def test_a_parcel_is_lifted_as_its_pooled_class() -> None:
    """A bag's crown fit follows its track's class, not one view that calls it a box."""
    depth, labels, axis = tilted_pillow(24.0)
    up = T_BASE_CAMERA[:3, :3] @ axis  # the crown's normal in base_link
    color = np.full((*depth.shape, 3), 128, dtype=np.uint8)

    def third(memory: float) -> tuple[ParcelClass, float]:
        pipe = Pipeline(_PillowSegmenter(labels), tracking=TrackingConfig(class_memory=memory))
        for k in range(3):
            result = pipe.process(RGBDFrame(color, depth, CAMERA, k * 50_000_000, transforms()))
        (parcel,) = result.parcels
        return parcel.parcel_class, math.degrees(math.acos(min(1.0, abs(parcel.top_normal @ up))))

    pooled_class, pooled_error = third(1.0)
    assert pooled_class is ParcelClass.POLYBAG and pooled_error < 5.0
    # Lifted as the box this view says it is, its top is a flat patch on a flank.
    alone_class, alone_error = third(0.0)
    assert alone_class is ParcelClass.BOX and alone_error > 10.0
