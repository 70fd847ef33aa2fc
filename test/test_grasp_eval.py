# Copyright 2026 The pkg_perception Authors
# SPDX-License-Identifier: Apache-2.0
"""Grasp success against ground truth, recall, tracking consistency, the overlay picture."""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
import pytest
from grasp_scenes import (
    CAMERA,
    T_CONVEYOR_CAMERA,
    Block,
    SceneSegmenter,
    frame,
    render,
    segmentation,
)

from pkg_perception.classes import ParcelClass
from pkg_perception.errors import InputError
from pkg_perception.evaluation.grasps import (
    GraspScorer,
    TruthPileOrderPipeline,
    check_grasp,
    evaluate_bag,
)
from pkg_perception.frames import RGBDFrame
from pkg_perception.pipeline import Pipeline
from pkg_perception.results import GraspCandidate, GraspKind, OrientedBox
from pkg_perception.segmentation.belt import BeltPlane
from pkg_perception.segmentation.instances import Segmentation
from pkg_perception.segmentation.oracle import GroundTruthSegmenter
from pkg_perception.sim.ground_truth import FrameTruth, ParcelTruth, TopFaceTruth
from pkg_perception.tracking import TrackingConfig
from pkg_perception.transforms import invert, make_transform, rotation_between
from pkg_perception.visualize import draw_overlay, write_png

BOX = Block(0.0, 0.0, 0.30, 0.20, 0.15)
CUP = 0.02


def _truth(*, supports: tuple[int, ...] = (), flatness: float = 0.0) -> FrameTruth:
    face = TopFaceTruth(
        center=np.array([0.0, 0.0, 0.15]),
        normal=np.array([0.0, 0.0, 1.0]),
        x_axis=np.array([1.0, 0.0, 0.0]),
        half_extents=np.array([0.15, 0.10]),
        flatness=flatness,
        visible_fraction=1.0,
    )
    parcel = ParcelTruth(
        parcel_id=1,
        parcel_class=ParcelClass.BOX,
        pose=make_transform(np.eye(3), [0.0, 0.0, 0.075]),
        size=np.array([0.30, 0.20, 0.15]),
        visible_pixels=1000,
        top_face=face,
        rests_on=(),
        supports=supports,
        graspable=not supports,
    )
    return FrameTruth(0, 'conveyor', np.array([0.3, 0.0, 0.0]), (parcel,))


def _grasp(position, approach=(0.0, 0.0, -1.0)) -> GraspCandidate:
    rot = rotation_between([0.0, 0.0, 1.0], approach)
    return GraspCandidate(
        pose=make_transform(rot, position),
        score=1.0,
        kind=GraspKind.SUCTION,
        width=2 * CUP,
        parcel_id=1,
        parcel_class=ParcelClass.BOX,
        parcel_box=OrientedBox(np.eye(4), np.ones(3)),
        frame_id='conveyor',
        stamp_ns=0,
    )


def _check(grasp: GraspCandidate, truth: FrameTruth | None = None):
    _, ids = render([BOX])
    return check_grasp(
        grasp, truth or _truth(), ids, CAMERA, np.eye(4), invert(T_CONVEYOR_CAMERA),
        cup_radius=CUP,
    )  # fmt: skip


def test_a_grasp_in_the_middle_of_the_top_succeeds() -> None:
    check = _check(_grasp([0.02, -0.01, 0.151]))
    assert check.success and check.reason == 'ok' and check.parcel_id == 1
    assert check.position_error == pytest.approx(0.001, abs=1e-9)
    assert check.normal_error_deg == pytest.approx(0.0, abs=1e-6)
    assert check.edge_margin == pytest.approx(0.09)


@pytest.mark.parametrize(
    ('position', 'approach', 'reason'),
    [
        ([0.14, 0.0, 0.15], (0.0, 0.0, -1.0), 'near_edge'),  # 1 cm from the edge
        ([0.0, 0.0, 0.158], (0.0, 0.0, -1.0), 'position'),  # 8 mm above the face
        (
            [0.0, 0.0, 0.15],
            (math.sin(math.radians(12)), 0.0, -math.cos(math.radians(12))),
            'normal',
        ),
        ([0.30, 0.0, 0.0], (0.0, 0.0, -1.0), 'off_parcel'),  # on the belt
        ([5.0, 0.0, 0.0], (0.0, 0.0, -1.0), 'outside_image'),
    ],
)
def test_each_rule_can_fail_a_grasp(position, approach, reason: str) -> None:
    check = _check(_grasp(position, approach))
    assert not check.success and check.reason == reason


def test_nothing_may_rest_on_the_parcel_and_flatness_widens_the_band() -> None:
    assert _check(_grasp([0.0, 0.0, 0.15]), _truth(supports=(2,))).reason == 'supports_another'
    assert _check(_grasp([0.0, 0.0, 0.158]), _truth(flatness=0.004)).success


def test_scorer_counts_top1_recall_and_track_ids_on_a_scene() -> None:
    blocks = [BOX]
    pipe = Pipeline(SceneSegmenter(blocks), target_frame='conveyor')
    _, ids = render(blocks)
    scorer = GraspScorer(cup_radius=CUP)
    for k in range(3):
        f = frame(blocks, stamp_ns=k * 66_666_667)
        f.ground_truth = _GT(_truth(), ids)
        verdict = scorer.add(pipe.process(f), f)
        assert verdict is not None and verdict.top is not None and verdict.top.success
        assert verdict.served == {1}
    summary = scorer.summary()
    assert summary['grasping']['top1_success'] == 1.0
    assert summary['grasping']['recall'] == 1.0
    assert summary['tracking'] == {
        'id_consistency': 1.0,
        'parcels': 1,
        'parcel_frames': 3,
        'id_switches': 0,
        'id_switches_at_split': 0,
        'split_parcel_frames': 0,
        'parcels_with_one_id': 1,
        'id_consistency_face_visible': 1.0,
        'face_visible_frames': 3,
    }
    assert scorer.add(pipe.process(frame(blocks)), frame(blocks)) is None  # no ground truth


class _GT:
    def __init__(self, truth: FrameTruth, ids: np.ndarray) -> None:
        self.truth, self.instance_ids = truth, ids


def test_tracking_consistency_counts_the_usual_id() -> None:
    scorer = GraspScorer()
    scorer.track_ids[7].update({1: 8, 2: 2})
    # The parcel is cut in two on the fifth frame: the first switch comes with the cut, the
    # second with none.
    ids, masks = [1] * 4 + [2] * 2 + [1] * 4, [1] * 4 + [2] + [1] * 5
    scorer.track_sequences[7].extend(zip(ids, masks, strict=True))
    t = scorer.tracking()
    assert t['id_consistency'] == pytest.approx(0.8)
    assert t['id_switches'] == 2
    assert t['id_switches_at_split'] == 1


class _SplittingSegmenter(SceneSegmenter):
    """Cuts the first block's mask in two (60 / 40) on the frames listed."""

    def __init__(self, blocks: list[Block], split_calls: set[int]) -> None:
        super().__init__(blocks)
        self.split_calls, self.calls = split_calls, 0

    def segment(
        self, frame: RGBDFrame, belt: BeltPlane, belt_velocity: object = None
    ) -> Segmentation:
        self.calls += 1
        _, labels = render(self.blocks)
        if self.calls - 1 not in self.split_calls:
            return segmentation(labels, self.blocks)
        cols = np.nonzero((labels == 1).any(axis=0))[0]
        cut = cols[0] + int(0.6 * len(cols))
        labels[:, cut:][labels[:, cut:] == 1] = len(self.blocks) + 1
        return segmentation(labels, [*self.blocks, self.blocks[0]])


def test_a_split_mask_counts_once_for_tracking_and_as_a_split() -> None:
    blocks = [BOX]
    # The blocks stand still: a configured belt velocity keeps the fragment's jump out of
    # an estimate that would otherwise rest on this one parcel.
    still = TrackingConfig(belt_velocity=(0.0, 0.0, 0.0))
    pipe = Pipeline(_SplittingSegmenter(blocks, {1}), tracking=still, target_frame='conveyor')
    _, ids = render(blocks)
    scorer = GraspScorer(cup_radius=CUP)
    for k in range(3):
        f = frame(blocks, stamp_ns=k * 66_666_667)
        f.ground_truth = _GT(_truth(), ids)
        result = pipe.process(f)
        assert len(result.parcels) == (2 if k == 1 else 1)
        scorer.add(result, f)
    t = scorer.tracking()
    assert t['parcel_frames'] == 3  # one per frame, not one per fragment
    assert t['split_parcel_frames'] == 1
    assert t['id_consistency'] == 1.0  # the larger part kept the parcel's id
    assert t['id_switches'] == t['id_switches_at_split'] == 0


def _stack_truth(blocks: list[Block], supports: dict[int, tuple[int, ...]]) -> FrameTruth:
    """Truth for blocks labelled 1.., with `supports[i]` the labels lying on block i."""
    parcels = []
    for i, b in enumerate(blocks, start=1):
        on = tuple(k for k, held in supports.items() if i in held)
        face = TopFaceTruth(
            center=np.array([b.x, b.y, b.height]),
            normal=np.array([0.0, 0.0, 1.0]),
            x_axis=np.array([1.0, 0.0, 0.0]),
            half_extents=np.array([b.length, b.width]) / 2,
            flatness=0.0,
            visible_fraction=1.0,
        )
        parcels.append(
            ParcelTruth(
                parcel_id=i,
                parcel_class=b.parcel_class,
                pose=make_transform(np.eye(3), [b.x, b.y, b.height / 2]),
                size=np.array([b.length, b.width, b.height]),
                visible_pixels=1000,
                top_face=face,
                rests_on=on,
                supports=supports.get(i, ()),
                graspable=not supports.get(i),
            )
        )
    return FrameTruth(0, 'conveyor', np.zeros(3), tuple(parcels))


def _score_stack(kind: type[Pipeline], supports: dict[int, tuple[int, ...]]) -> dict:
    """Grasp figures of two frames of a mailer lying on a box, the truth saying `supports`."""
    lower = Block(0.0, 0.0, 0.40, 0.30, 0.10)
    upper = Block(0.10, 0.05, 0.20, 0.15, 0.16, parcel_class=ParcelClass.MAILER)
    blocks = [lower, upper]
    pipe = kind(SceneSegmenter(blocks), target_frame='conveyor')
    _, ids = render(blocks)
    scorer = GraspScorer(cup_radius=CUP)
    for k in range(2):
        f = frame(blocks, stamp_ns=k * 66_666_667)
        f.ground_truth = _GT(_stack_truth(blocks, supports), ids)
        scorer.add(pipe.process(f), f)
    return scorer.grasping()


@pytest.mark.parametrize(
    ('supports', 'precision', 'recall'),
    [({1: (2,)}, 1.0, 1.0), ({}, 0.0, math.nan), ({2: (1,)}, 0.0, 0.0)],
    ids=['right', 'stack-not-in-truth', 'upside-down'],
)
def test_pile_order_is_scored_against_the_truth(
    supports: dict[int, tuple[int, ...]], precision: float, recall: float
) -> None:
    g = _score_stack(Pipeline, supports)
    assert g['pile_order_said_under'] == 2  # the lower block, in each frame
    assert g['pile_order_precision'] == pytest.approx(precision)
    assert g['pile_order_recall'] == pytest.approx(recall, nan_ok=True)


@pytest.mark.parametrize(
    ('supports', 'under'),
    [({1: (2,)}, 2), ({}, 0), ({2: (1,)}, 2)],
    ids=['stack', 'stack-not-in-truth', 'upside-down'],
)
def test_truth_pile_order_replaces_the_pipelines_own(
    supports: dict[int, tuple[int, ...]], under: int
) -> None:
    # The pipeline itself calls the lower block under the upper (the test above); with the
    # simulator's pile order it says what the truth says, in each of the two frames.
    g = _score_stack(TruthPileOrderPipeline, supports)
    assert g['pile_order_said_under'] == under
    if under:
        assert g['pile_order_precision'] == g['pile_order_recall'] == 1.0


def test_evaluate_bag_refuses_an_unknown_pile_order(small_bag_path: Path) -> None:
    with pytest.raises(InputError, match='truth-in-view'):
        evaluate_bag(small_bag_path, GroundTruthSegmenter(), pile_order='oracle')


def test_evaluate_bag_on_the_simulated_bag(small_bag_path: Path) -> None:
    seen = []
    result = evaluate_bag(
        small_bag_path, GroundTruthSegmenter(), on_frame=lambda f, r, v: seen.append(v)
    )
    g, t = result.summary['grasping'], result.summary['tracking']
    assert g['frames'] == len(seen) == 10
    assert g['frames_with_grasp'] >= 8
    assert g['top1_success'] >= 0.75
    assert g['recall'] >= 0.8
    assert t['id_consistency'] == 1.0
    assert {'lift', 'grasp', 'track', 'total'} <= set(result.timings_ms)


def test_overlay_marks_the_ranked_grasps(tmp_path: Path) -> None:
    blocks = [BOX, Block(-0.2, 0.05, 0.06, 0.04, 0.05)]
    f = frame(blocks)
    result = Pipeline(SceneSegmenter(blocks), target_frame='conveyor').process(f)
    assert {g.kind for g in result.grasps} == {GraspKind.SUCTION, GraspKind.PARALLEL_JAW}
    img = draw_overlay(
        f.color, result, CAMERA, invert(T_CONVEYOR_CAMERA),
        verdicts=[True] + [False] * (len(result.grasps) - 1),
    )  # fmt: skip
    assert img.shape == f.color.shape and img.dtype == np.uint8
    assert (img != f.color).any(axis=2).mean() > 0.05  # masks tinted
    green = (img[..., 1] > 200) & (img[..., 0] < 80)
    assert green.any()  # the successful top grasp
    path = write_png(tmp_path / 'overlay.png', img)
    assert cv2.imread(str(path)).shape == img.shape
