# Copyright 2026 The pkg_perception Authors
# SPDX-License-Identifier: Apache-2.0
"""Model input, post-process, baseline and scoring, on simulated frames."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from label_logits import logits_of

from pkg_perception.classes import ParcelClass
from pkg_perception.errors import InputError
from pkg_perception.evaluation.segmentation import SegmentationScorer
from pkg_perception.frames import RGBDFrame, depth_from_millimetres
from pkg_perception.segmentation.belt import BeltPlane, estimate_belt_plane
from pkg_perception.segmentation.decode import DecodeParams, decode
from pkg_perception.segmentation.geometric import GeometricSegmenter
from pkg_perception.segmentation.inputs import InputSpec, prepare_input
from pkg_perception.segmentation.instances import FLAG_NO_DEPTH, Segmentation
from pkg_perception.segmentation.oracle import GroundTruthSegmenter
from pkg_perception.sim.ground_truth import GroundTruth
from pkg_perception.sim.simulator import ConveyorSimulator, SimConfig
from pkg_perception.training.targets import edge_distance


@pytest.fixture(scope='module')
def sim_frame() -> tuple[RGBDFrame, BeltPlane]:
    sim = ConveyorSimulator(SimConfig(width=320, height=240, scene='sparse'), seed=3)
    f = sim.frame(30)
    frame = RGBDFrame(
        f.color,
        depth_from_millimetres(f.depth_mm),
        sim.camera,
        f.stamp_ns,
        sim.transforms,
        GroundTruth(f.truth, f.instance_ids),
    )
    return frame, BeltPlane.from_extrinsics(sim.conveyor_from_camera)


def test_height_channel_is_zero_on_belt_and_positive_on_parcels(sim_frame):
    frame, belt = sim_frame
    x = prepare_input(InputSpec(), frame.color, frame.depth, frame.camera, belt).tensor[0]
    height = x[3] * InputSpec().height_scale
    valid = x[4] > 0
    belt_px = (frame.ground_truth.instance_ids == 0) & valid
    assert abs(float(np.median(height[belt_px]))) < 0.003
    parcel_px = (frame.ground_truth.instance_ids > 0) & valid
    assert np.median(height[parcel_px]) > 0.01


def test_belt_plane_estimated_from_depth_matches_extrinsics(sim_frame):
    frame, belt = sim_frame
    est = estimate_belt_plane(frame.depth, frame.camera)
    assert np.degrees(np.arccos(np.clip(est.normal @ belt.normal, -1, 1))) < 1.0
    assert abs(est.offset - belt.offset) < 0.01


def test_nan_and_inf_depth_give_empty_result_and_flag(sim_frame):
    frame, belt = sim_frame
    bad = RGBDFrame(frame.color, np.full_like(frame.depth, np.nan), frame.camera, 0)
    assert GeometricSegmenter().segment(bad, belt).flags == (FLAG_NO_DEPTH,)
    inf = RGBDFrame(frame.color, np.full_like(frame.depth, np.inf), frame.camera, 0)
    seg = GeometricSegmenter().segment(inf, belt)
    assert seg.instances == [] and FLAG_NO_DEPTH in seg.flags


def test_wrong_aspect_ratio_is_refused_with_the_fix():
    spec = InputSpec()
    with pytest.raises(InputError, match='export a model for this size'):
        spec.grid(500, 480)
    us, vs = spec.grid(640, 480)
    assert us[0] == 1 and us[-1] == 639 and vs[-1] == 479


def _two_parcel_logits() -> np.ndarray:
    """Logits of two touching rectangles: box on the left, mailer on the right."""
    labels = np.zeros((30, 40), dtype=np.int32)
    labels[5:25, 4:20] = 1
    labels[5:25, 20:36] = 2
    return logits_of(labels, {1: ParcelClass.BOX, 2: ParcelClass.MAILER})


def test_decode_splits_touching_parcels_and_keeps_outlines():
    seg = decode(_two_parcel_logits(), 160, 120, DecodeParams(confident_area=0), output_stride=1)
    assert [i.parcel_class for i in seg.instances] == [ParcelClass.BOX, ParcelClass.MAILER]
    for inst, (x0, x1) in zip(seg.instances, [(16, 80), (80, 144)], strict=True):
        mask = seg.mask(inst)
        want = np.zeros_like(mask)
        want[20:100, x0:x1] = True
        iou = (mask & want).sum() / (mask | want).sum()
        assert iou > 0.95
        assert inst.score > 0.9
        assert inst.area == pytest.approx(mask.sum(), rel=0.05)


def test_small_masks_rank_lower_but_are_kept():
    # The thin strip and its wide neighbour are both confident of their class; the strip's
    # mask is a twelfth of the area, so it ranks below.
    labels = np.zeros((30, 40), dtype=np.int32)
    labels[5:25, 4:24] = 1
    labels[5:25, 24:27] = 2
    logits = logits_of(labels, {1: ParcelClass.BOX, 2: ParcelClass.ENVELOPE})
    plain = decode(logits, 160, 120, DecodeParams(confident_area=0), output_stride=1)
    ranked = decode(logits, 160, 120, DecodeParams(confident_area=6400), output_stride=1)
    assert [i.parcel_class for i in ranked.instances] == [i.parcel_class for i in plain.instances]
    by_class = {i.parcel_class: i for i in ranked.instances}
    strip = by_class[ParcelClass.ENVELOPE]
    assert strip.score == pytest.approx(
        {i.parcel_class: i for i in plain.instances}[ParcelClass.ENVELOPE].score
        * np.sqrt(strip.area / 6400),
        rel=0.02,
    )
    assert strip.score < by_class[ParcelClass.BOX].score


def test_decode_offers_the_other_classes_ranked_below_the_mask_class():
    logits = _two_parcel_logits()
    single = decode(logits, 160, 120, DecodeParams(alternative_classes=0), output_stride=1)
    assert all(i.alternatives == () for i in single.instances)
    seg = decode(logits, 160, 120, DecodeParams(alternative_classes=3), output_stride=1)
    for inst, one in zip(seg.instances, single.instances, strict=True):
        assert (inst.parcel_class, inst.score) == (one.parcel_class, one.score)
        classes = [c for c, _ in inst.alternatives]
        scores = [inst.score] + [v for _, v in inst.alternatives]
        assert sorted([inst.parcel_class, *classes]) == sorted(ParcelClass)
        assert scores == sorted(scores, reverse=True)
        # The scores are those of one distribution: together at most the mask's P(parcel).
        assert sum(scores) <= 1.0 + 1e-6
        # ... which the mask carries too, for the tracker's class memory.
        assert sum(inst.class_probs) == pytest.approx(1.0)
        assert max(ParcelClass, key=lambda c: inst.class_probs[c - 1]) is inst.parcel_class
        assert inst.score / inst.class_probs[inst.parcel_class - 1] == pytest.approx(
            sum(scores) / sum(inst.class_probs)
        )


def test_decode_seeds_a_thin_strip_beside_a_parcel_by_hysteresis():
    # A strip 3 output pixels wide never reaches the strong seed threshold; without the
    # weak threshold its pixels go to the wide neighbour or are lost.
    labels = np.zeros((30, 40), dtype=np.int32)
    labels[5:25, 4:24] = 1
    labels[5:25, 24:27] = 2
    assert edge_distance(labels)[labels == 2].max() < DecodeParams().seed_threshold
    logits = logits_of(labels, {1: ParcelClass.BOX, 2: ParcelClass.ENVELOPE})
    with_weak = decode(logits, 160, 120, DecodeParams(), output_stride=1)
    found = {i.parcel_class: with_weak.mask(i) for i in with_weak.instances}
    assert sorted(found) == [ParcelClass.BOX, ParcelClass.ENVELOPE]
    for cls, (x0, x1), least in (
        (ParcelClass.BOX, (16, 96), 0.9),
        (ParcelClass.ENVELOPE, (96, 108), 0.5),
    ):
        want = np.zeros((120, 160), dtype=bool)
        want[20:100, x0:x1] = True
        assert (found[cls] & want).sum() / (found[cls] | want).sum() > least
    without = decode(logits, 160, 120, DecodeParams(weak_seed_threshold=1.0), output_stride=1)
    assert [i.parcel_class for i in without.instances] == [ParcelClass.BOX]


def _merged_seed_logits(embed: np.ndarray) -> np.ndarray:
    """Two boxes side by side whose edge distance never dips between them: one seed."""
    labels = np.zeros((30, 40), dtype=np.int32)
    labels[5:25, 4:36] = 1
    logits = logits_of(labels, {1: ParcelClass.BOX})
    return np.concatenate([logits, embed.astype(np.float32)])


def test_decode_splits_one_seed_where_the_embedding_tells_two_parcels():
    embed = np.zeros((2, 30, 40))
    embed[0, :, 20:] = 3.0  # the right half is another parcel
    logits = _merged_seed_logits(embed)
    split = decode(logits, 160, 120, DecodeParams(), output_stride=1)
    assert len(split.instances) == 2
    right = max(split.instances, key=lambda i: i.box[0])
    want = np.zeros((120, 160), dtype=bool)
    want[20:100, 80:144] = True
    mask = split.mask(right)
    assert (mask & want).sum() / (mask | want).sum() > 0.9
    off = decode(logits, 160, 120, DecodeParams(embed_threshold=0.0), output_stride=1)
    assert len(off.instances) == 1
    # A band two output pixels wide along the outline, where embeddings blur into the
    # belt's, is no parcel.
    band = np.zeros((2, 30, 40))
    band[0, :, 4:6] = 3.0
    assert (
        len(decode(_merged_seed_logits(band), 160, 120, DecodeParams(), output_stride=1).instances)
        == 1
    )


def test_decode_of_empty_output_is_empty():
    logits = np.zeros((6, 30, 40), dtype=np.float32)
    logits[0] = 10.0
    seg = decode(logits, 160, 120, DecodeParams(), output_stride=1)
    assert seg.instances == [] and seg.labels.shape == (120, 160) and not seg.labels.any()


def test_scorer_gives_ap_one_for_ground_truth_and_less_for_wrong_classes(small_bag_path):
    from pkg_perception.bag.reader import BagFrameReader
    from pkg_perception.segmentation.belt import belt_for_frame

    scorer = SegmentationScorer()
    oracle = GroundTruthSegmenter()
    with BagFrameReader(small_bag_path) as reader:
        for frame in list(reader.frames())[:4]:
            gt = frame.ground_truth
            classes = {p.parcel_id: p.parcel_class for p in gt.truth.parcels}
            image = scorer.add_truth(gt.instance_ids, classes, pile=False)
            seg = oracle.segment(frame, belt_for_frame(frame))
            scorer.add_detections('oracle', image, seg)
            truth = {i.label: i.parcel_class for i in seg.instances}
            for inst in seg.instances:
                wrong = ParcelClass(inst.parcel_class % 4 + 1)
                object.__setattr__(inst, 'parcel_class', wrong)
            scorer.add_detections('wrong-class', image, seg)
            # The same wrong class first, the right one offered second at a lower score.
            second = [
                replace(i, score=0.9, alternatives=((truth[i.label], 0.1),)) for i in seg.instances
            ]
            scorer.add_detections('right-second', image, Segmentation(seg.labels, second))
    assert scorer.scores('oracle')['all']['AP'] == pytest.approx(1.0)
    wrong = scorer.scores('wrong-class')
    assert wrong['all']['AP'] < 0.2
    # The masks are still perfect: class-agnostic AP tells the two kinds of error apart.
    assert wrong['class_agnostic']['AP'] == pytest.approx(1.0)
    # A right class offered second counts under its class; the top-class figure and the
    # class-agnostic one see each mask once.
    ranked = scorer.scores('right-second')
    assert ranked['all']['AP'] > wrong['all']['AP'] + 0.5
    assert ranked['top_class']['AP'] == pytest.approx(wrong['all']['AP'])
    assert ranked['class_agnostic']['AP'] == pytest.approx(1.0)


def test_geometric_baseline_finds_separated_parcels(sim_frame):
    frame, belt = sim_frame
    seg = GeometricSegmenter().segment(frame, belt)
    gt = frame.ground_truth.instance_ids
    found = 0
    for pid in np.unique(gt[gt > 0]):
        truth = gt == pid
        if truth.sum() < 200:
            continue
        best = max(
            ((seg.mask(i) & truth).sum() / (seg.mask(i) | truth).sum() for i in seg.instances),
            default=0.0,
        )
        found += best > 0.7
    assert found >= 1


def test_evaluation_scores_the_pipelines_masks_and_each_frame_alone(small_bag_path):
    from pkg_perception.evaluation.segmentation import ONE_FRAME, evaluate_bag
    from pkg_perception.models import default_model_path
    from pkg_perception.segmentation.config import SegmentationConfig
    from pkg_perception.segmentation.onnx import OnnxSegmenter

    config = SegmentationConfig(providers=('cpu',), warmup_runs=0)
    segmenters = {'model': OnnxSegmenter(default_model_path(), config)}
    segmenters['oracle'] = GroundTruthSegmenter()
    results = evaluate_bag(small_bag_path, segmenters, every=2, progress=False)
    # Ground truth offers no class distribution: nothing to pool, one row.
    assert set(results) == {'model', 'model' + ONE_FRAME, 'oracle'}
    assert results['oracle']['all']['AP'] == pytest.approx(1.0)
    pooled, alone = results['model'], results['model' + ONE_FRAME]
    assert pooled['frames'] == alone['frames'] == 5  # every frame tracked, every second scored
    # Pooling changes classes and scores, never which masks there are.
    assert pooled['detections'] == alone['detections'] > 0
    assert 0.0 < pooled['all']['AP'] <= 1.0
