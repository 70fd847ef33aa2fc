# Copyright 2026 The pkg_perception Authors
# SPDX-License-Identifier: Apache-2.0
"""The per-mask features, the instance head, its fit and its place in the model file."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest

from pkg_perception.bag.reader import BagFrameReader
from pkg_perception.classes import ParcelClass
from pkg_perception.cli import main
from pkg_perception.errors import ModelError
from pkg_perception.frames import RGBDFrame, depth_from_millimetres
from pkg_perception.segmentation.belt import BeltPlane
from pkg_perception.segmentation.config import SegmentationConfig
from pkg_perception.segmentation.decode import DecodeParams, decode
from pkg_perception.segmentation.instance_features import (
    FEATURE_NAMES,
    FeatureContext,
    instance_features,
)
from pkg_perception.segmentation.instance_head import (
    METADATA_KEY,
    OUTPUTS,
    InstanceHead,
    Perceptron,
)
from pkg_perception.segmentation.instances import label_means
from pkg_perception.segmentation.onnx import OnnxSegmenter
from pkg_perception.sim.simulator import ConveyorSimulator, SimConfig
from pkg_perception.training.coco import write_coco_dataset
from pkg_perception.training.instance_head_fit import (
    HeadData,
    _best_overlap,
    collect,
    collect_coco,
    fit_head,
    read_head,
    report,
    write_head,
)
from pkg_perception.training.simdata import SimDataPlan

SHIPPED = Path(__file__).resolve().parents[1] / 'models' / 'parcelnet.onnx'
COL = {name: k for k, name in enumerate(FEATURE_NAMES)}


def _context(height: np.ndarray) -> FeatureContext:
    h, w = height.shape
    return FeatureContext(
        height=height.astype(np.float32),
        valid=np.ones((h, w), np.float32),
        color=np.zeros((3, h, w), np.float32),
        camera_height=1.0,
        focal=100.0,
    )


def _constant_head(logits: list[float]) -> InstanceHead:
    """A one-layer head whose outputs ignore the features: `logits` for every mask."""
    n = len(FEATURE_NAMES)
    return InstanceHead(
        features=FEATURE_NAMES,
        mean=np.zeros(n),
        scale=np.ones(n),
        members=(
            Perceptron(
                weights=(np.zeros((len(OUTPUTS), n)),),
                biases=(np.asarray(logits, dtype=np.float64),),
            ),
        ),
    )


def test_features_measure_size_and_thickness_in_metres():
    labels = np.zeros((60, 80), np.int32)
    height = np.zeros((60, 80), np.float32)
    labels[10:30, 10:40] = 1  # a box 0.2 m tall: 20 x 30 px at 0.8 m from the camera
    height[10:30, 10:40] = 0.2
    labels[40:50, 50:80] = 2  # an envelope 6 mm thick, cut by the frame's right edge
    height[40:50, 50:80] = 0.006
    prob = np.zeros((5, 60, 80), np.float32)
    prob[1][labels == 1] = 0.9
    prob[4][labels == 2] = 0.7
    edge = np.zeros((60, 80), np.float32)
    _, class_means = label_means(labels, prob[1:], 2)
    rows = instance_features(labels, 2, class_means, edge, 0.9, _context(height))
    assert rows.shape == (2, len(FEATURE_NAMES))
    box, env = rows
    metres_per_px = (1.0 - 0.2) / 100.0
    assert box[COL['length_m']] == pytest.approx(30 * metres_per_px, rel=0.02)
    assert box[COL['width_m']] == pytest.approx(20 * metres_per_px, rel=0.02)
    assert np.exp(box[COL['log_area_m2']]) == pytest.approx(600 * metres_per_px**2, rel=0.01)
    assert box[COL['step_m']] == pytest.approx(0.2, abs=1e-4)
    assert env[COL['step_m']] == pytest.approx(0.006, abs=1e-4)
    assert box[COL['p_box']] == pytest.approx(0.9)
    assert env[COL['p_envelope']] == pytest.approx(0.7)
    assert (box[COL['touches_border']], env[COL['touches_border']]) == (0.0, 1.0)
    assert box[COL['fill']] == pytest.approx(1.0)


def test_envelope_on_a_box_is_thin_against_its_lowest_neighbour():
    labels = np.zeros((60, 80), np.int32)
    height = np.zeros((60, 80), np.float32)
    labels[10:50, 10:70] = 1
    height[10:50, 10:70] = 0.3
    labels[20:40, 20:40] = 2  # lies on the box, wholly inside its outline
    height[20:40, 20:40] = 0.31
    rows = instance_features(
        labels,
        2,
        np.zeros((3, 4)),
        np.zeros((60, 80), np.float32),
        0.9,
        _context(height),
    )
    assert rows[1, COL['drop_low_m']] == pytest.approx(0.01, abs=1e-4)
    assert rows[1, COL['height_max_m']] == pytest.approx(0.31, abs=1e-4)
    assert rows[0, COL['drop_low_m']] == pytest.approx(0.3, abs=1e-4)  # down to the belt


def test_head_round_trips_through_json_and_refuses_a_mismatch():
    head = _constant_head([0.0, 1.0, 2.0, 0.0, -1.0, 0.5])
    back = InstanceHead.from_json(head.to_json(), 'm.onnx')
    rows = np.random.default_rng(0).normal(size=(4, len(FEATURE_NAMES)))
    p, u = back.predict(rows)
    assert p.shape == (4, 5) and np.allclose(p.sum(axis=1), 1.0)
    assert np.allclose(p, head.predict(rows)[0], atol=1e-6)
    assert np.allclose(u, 1 / (1 + np.exp(-0.5)), atol=1e-6)
    other = json.loads(head.to_json())
    other['features'] = other['features'][:-1]
    with pytest.raises(ModelError, match=r'm\.onnx.*fit-instance-head'):
        InstanceHead.from_json(json.dumps(other), 'm.onnx')
    with pytest.raises(ModelError, match='unreadable'):
        InstanceHead.from_json('{"features": ', 'm.onnx')
    broken = json.loads(head.to_json())
    broken['members'][0][0]['bias'] = broken['members'][0][0]['bias'][:3]
    with pytest.raises(ModelError, match='shapes'):
        InstanceHead.from_json(json.dumps(broken), 'm.onnx')


def test_decode_takes_class_and_score_from_the_head():
    labels = np.zeros((30, 40), np.int32)
    labels[5:25, 4:20] = 1
    labels[5:25, 20:36] = 2
    logits = np.full((6, 30, 40), -8.0, np.float32)
    logits[0][labels == 0] = 8.0
    logits[1][labels > 0] = 8.0  # the pixels say box
    logits[5] = np.where(labels > 0, 8.0, -8.0)
    logits[5][:, 19:21] = -8.0  # a seam between the two
    height = np.where(labels > 0, 0.01, 0.0).astype(np.float32)
    head = _constant_head([0.0, 0.0, 0.0, 0.0, 5.0, 1.0])  # ... the head says envelope
    ctx = _context(height)
    seg = decode(
        logits,
        160,
        120,
        DecodeParams(head_class_weight=1.0),
        output_stride=1,
        head=head,
        context=ctx,
    )
    # Blended with pixels that are sure of a box, the box wins, scored by the head's overlap.
    blended = decode(logits, 160, 120, DecodeParams(), output_stride=1, head=head, context=ctx)
    assert {i.parcel_class for i in blended.instances} == {ParcelClass.BOX}
    parcel = 1.0 - 1.0 / (np.exp(5.0) + 4.0)
    assert [i.score for i in blended.instances] == pytest.approx(
        [parcel / (1.0 + np.exp(-1.0))] * 2, rel=0.01
    )
    plain = decode(logits, 160, 120, DecodeParams(), output_stride=1)
    assert len(seg.instances) == len(plain.instances) == 2
    assert {i.parcel_class for i in plain.instances} == {ParcelClass.BOX}
    assert {i.parcel_class for i in seg.instances} == {ParcelClass.ENVELOPE}
    want = np.exp(5.0) / (np.exp(5.0) + 4.0) / (1.0 + np.exp(-1.0))
    assert [i.score for i in seg.instances] == pytest.approx([want, want])
    assert np.array_equal(seg.labels, plain.labels)  # masks are the decoder's own


def test_best_overlap_finds_each_masks_parcel_and_class():
    labels = np.zeros((4, 6), np.int32)
    labels[:, :3] = 1
    labels[:2, 3:] = 2
    truth = np.zeros((8, 12), np.uint16)  # twice the grid
    truth[:, :6] = 7
    truth[:, 6:] = 9

    class Cam:
        width, height = 12, 8

    iou, cls = _best_overlap(labels, 2, truth, {7: 1, 9: 4}, Cam())
    assert iou[1:] == pytest.approx([1.0, 0.5])
    assert list(cls[1:]) == [1, 4]


def _synthetic(n: int, seed: int) -> HeadData:
    """Class set by thickness, overlap by edge confidence: what the head should learn."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, len(FEATURE_NAMES))).astype(np.float32)
    cls = rng.integers(1, 5, size=n)
    x[:, COL['step_m']] = np.array([0.0, 0.3, 0.1, 0.03, 0.006])[cls] + rng.normal(0, 0.005, n)
    iou = 1 / (1 + np.exp(-3 * x[:, COL['edge_mean']] - 2))
    return HeadData(x, iou.astype(np.float32), cls, rng.integers(1, 5, size=n), np.zeros(n))


def test_fit_learns_class_and_overlap_from_the_features():
    head = fit_head(_synthetic(3000, 0), members=1, epochs=25, seed=0)
    r = report(head, _synthetic(1000, 1))
    assert r.head_accuracy > 0.9
    assert r.pixel_accuracy < 0.4  # the random pixel vote it has to beat
    assert r.iou_correlation > 0.9


def test_masks_of_a_simulated_cell_are_collected_with_their_truth():
    data = collect(
        SHIPPED,
        # Four frames: about 30 masks, so one mask more or less moves the share by 0.03.
        SimDataPlan(first_seed=31_000, seeds=1, frames_per_seed=4),
        workers=1,
        progress=False,
    )
    assert len(data.iou) >= 5
    assert data.features.shape == (len(data.iou), len(FEATURE_NAMES))
    assert np.isfinite(data.features).all()
    assert ((data.iou >= 0) & (data.iou <= 1)).all()
    matched = data.iou >= 0.5
    assert matched.mean() > 0.6
    assert set(data.parcel_class[matched]) <= {1, 2, 3, 4}
    assert (data.pixel_class[matched] == data.parcel_class[matched]).mean() > 0.6


def test_head_written_into_a_model_is_loaded_and_used(tmp_path):
    model = tmp_path / 'm.onnx'
    shutil.copyfile(SHIPPED, model)
    # Everything a mailer, sure enough to outweigh a confident pixel vote in the blend.
    head = _constant_head([0.0, 0.0, 0.0, 12.0, 0.0, 2.0])
    write_head(model, head, model)
    onnx.checker.check_model(onnx.load(str(model)))
    seg = OnnxSegmenter(model, SegmentationConfig(providers=('cpu',), warmup_runs=0))
    assert seg.metadata.instance_head is not None
    sim = ConveyorSimulator(SimConfig(scene='mixed'), seed=31_001)
    f = sim.frame(0)
    frame = RGBDFrame(f.color, depth_from_millimetres(f.depth_mm), sim.camera, f.stamp_ns)
    belt = BeltPlane.from_extrinsics(sim.conveyor_from_camera)
    out = seg.segment(frame, belt)
    assert out.instances and {i.parcel_class for i in out.instances} == {ParcelClass.MAILER}
    off = OnnxSegmenter(
        model, SegmentationConfig(providers=('cpu',), warmup_runs=0, instance_head=False)
    ).segment(frame, belt)
    assert len({i.parcel_class for i in off.instances}) > 1
    proto = onnx.load(str(model))
    for p in proto.metadata_props:
        if p.key == METADATA_KEY:
            p.value = p.value.replace('"features":["p_belt"', '"features":["p_sky"')
    onnx.save(proto, str(model))
    with pytest.raises(ModelError, match='fit-instance-head'):
        OnnxSegmenter(model, SegmentationConfig(providers=('cpu',), warmup_runs=0))


def test_shipped_model_carries_a_head_for_these_features():
    props = {p.key: p.value for p in onnx.load(str(SHIPPED)).metadata_props}
    assert METADATA_KEY in props, 'run `pkg-perception fit-instance-head` after export'
    head = InstanceHead.from_json(props[METADATA_KEY], str(SHIPPED))
    assert head.features == FEATURE_NAMES


@pytest.fixture(scope='module')
def labelled_cell(small_bag_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Six frames of the session's simulated bag in the fine-tuning layout."""
    with BagFrameReader(small_bag_path) as reader:
        frames = list(reader.frames())[:6]
    return write_coco_dataset(frames, tmp_path_factory.mktemp('cell'))


def test_masks_of_a_cells_labelled_images_refine_the_present_head(labelled_cell):
    data = collect_coco(SHIPPED, labelled_cell, progress=False)
    assert len(data.iou) >= 5
    assert set(data.seed) <= set(range(6))  # rows keep the image they came from
    assert np.isfinite(data.features).all()
    matched = data.iou >= 0.5
    assert matched.mean() > 0.5
    assert (data.pixel_class[matched] == data.parcel_class[matched]).mean() > 0.6
    present = read_head(SHIPPED)
    assert present is not None
    untouched = fit_head(data, init=present, epochs=0)
    got, want = untouched.predict(data.features), present.predict(data.features)
    assert np.allclose(got[0], want[0], atol=1e-5) and np.allclose(got[1], want[1], atol=1e-5)
    refined = fit_head(data, init=present, epochs=5, lr=1e-2)
    assert np.array_equal(refined.mean, present.mean)
    assert len(refined.members) == len(present.members)
    assert not np.allclose(refined.predict(data.features)[0], present.predict(data.features)[0])


def test_fit_instance_head_command_on_labelled_images(labelled_cell, tmp_path, capsys):
    out = tmp_path / 'cell.onnx'
    argv = ['fit-instance-head', '--out', str(out), '--epochs', '2', '--coco', str(labelled_cell)]
    assert main([*argv, '--model', str(SHIPPED), '--holdout', '0.3']) == 0
    text = capsys.readouterr().out
    assert 'held-out images 4..5' in text and '(present head)' in text
    assert "parcelnet.onnx's head refined" in text
    seg = OnnxSegmenter(out, SegmentationConfig(providers=('cpu',), warmup_runs=0))
    assert seg.metadata.instance_head is not None
    # A fine-tuned export carries no head: the shipped model's is refined for it.
    headless = tmp_path / 'tuned.onnx'
    proto = onnx.load(str(SHIPPED))
    kept = [p for p in proto.metadata_props if p.key != METADATA_KEY]
    del proto.metadata_props[:]
    proto.metadata_props.extend(kept)
    onnx.save(proto, str(headless))
    assert main([*argv, '--model', str(headless)]) == 0
    text = capsys.readouterr().out
    assert '(present head)' not in text and "parcelnet.onnx's head refined" in text
    assert main([*argv, '--model', str(headless), '--fresh']) == 0
    assert 'instance head fitted' in capsys.readouterr().out
    assert main([*argv, '--model', str(headless), '--head-from', str(headless)]) == 2
    assert 'carries no instance head' in capsys.readouterr().err
    missing = ['fit-instance-head', '--coco', str(tmp_path / 'none.json'), '--out', str(out)]
    assert main(missing) == 2
    assert 'none.json not found' in capsys.readouterr().err
