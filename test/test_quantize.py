# Copyright 2026 The pkg_perception Authors
# SPDX-License-Identifier: Apache-2.0
"""The INT8 sibling: written by `quantize`, run on the CPU only in place of its own float model."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from pkg_perception.errors import ModelError
from pkg_perception.segmentation.belt import BeltPlane
from pkg_perception.segmentation.config import SegmentationConfig
from pkg_perception.segmentation.inputs import InputSpec
from pkg_perception.segmentation.onnx import OnnxSegmenter, file_sha256, int8_sibling
from pkg_perception.sim.simulator import ConveyorSimulator, SimConfig
from pkg_perception.training.export import export_onnx
from pkg_perception.training.quantize import quantize_model, simulated_inputs
from pkg_perception.training.run import save_weights
from pkg_perception.training.train import TrainConfig, build_model

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / 'models' / 'parcelnet.onnx'
CPU = SegmentationConfig(providers=('cpu',), warmup_runs=0)


@pytest.fixture(scope='module')
def quantized(tmp_path_factory) -> tuple[Path, Path, str]:
    """A small float model, its INT8 sibling, and what `quantize` printed of it."""
    torch.manual_seed(0)
    config = TrainConfig(
        steps=1,
        spec=InputSpec(width=160, height=120),
        widths=(8, 8, 16, 16),
        blocks=(0, 1, 1),
        batch_size=2,
        threads=1,
        warmup=1,
    )
    folder = tmp_path_factory.mktemp('q')
    save_weights(folder / 'w.pt', build_model(config), config, {'note': 'untrained'})
    model = export_onnx(folder / 'w.pt', folder / 'm.onnx', copy_weights=False).path
    report = quantize_model(model, cells=1, frames_per_cell=2)
    return model, report.path, report.to_json()


def test_quantize_writes_a_checked_sibling_that_names_its_float_model(quantized):
    model, int8, printed = quantized
    assert int8 == int8_sibling(model) == model.parent / 'm.int8.onnx'
    proto = onnx.load(str(int8))
    onnx.checker.check_model(proto, full_check=True)
    props = {p.key: p.value for p in proto.metadata_props}
    assert props['quantized_from'] == file_sha256(model)
    assert (
        props['version']
        == {p.key: p.value for p in onnx.load(str(model)).metadata_props}['version']
    )
    ops = {n.op_type for n in proto.graph.node}
    assert {'QuantizeLinear', 'DequantizeLinear', 'Conv'} <= ops  # deep stages int8, rest float
    assert '"calibration_frames": 2' in printed


def test_cpu_runs_the_sibling_and_the_float_model_when_asked(quantized):
    model, int8, _ = quantized
    seg = OnnxSegmenter(model, CPU)
    assert seg.path == int8 and seg.name.endswith('-int8')
    plain = OnnxSegmenter(model, SegmentationConfig(providers=('cpu',), cpu_int8=False))
    assert plain.path == model and not plain.name.endswith('-int8')
    x = np.zeros(seg.metadata.expected_input(), dtype=np.float32)
    assert seg.infer(x).shape == plain.infer(x).shape


def test_a_sibling_of_another_model_is_skipped_and_a_corrupt_one_refused(
    quantized, tmp_path, caplog
):
    model, int8, _ = quantized
    changed = tmp_path / 'm.onnx'
    proto = onnx.load(str(model))
    proto.doc_string += ' (re-exported)'
    onnx.save(proto, str(changed))
    shutil.copyfile(int8, int8_sibling(changed))
    with caplog.at_level(logging.WARNING):
        seg = OnnxSegmenter(changed, CPU)
    assert seg.path == changed
    assert 'quantized from another model' in caplog.text
    assert 'pkg-perception quantize --model' in caplog.text
    int8_sibling(changed).write_bytes(int8.read_bytes()[:3000])
    with pytest.raises(ModelError, match=r'm\.int8\.onnx.*not a valid ONNX model'):
        OnnxSegmenter(changed, CPU)


def test_an_int8_model_is_not_quantized_again(quantized):
    _, int8, _ = quantized
    with pytest.raises(ModelError, match='already quantized'):
        quantize_model(int8, int8.parent / 'again.onnx', cells=1, frames_per_cell=1)


def test_shipped_int8_model_is_made_from_the_shipped_model_and_agrees_with_it():
    int8 = int8_sibling(SHIPPED)
    props = {p.key: p.value for p in onnx.load(str(int8)).metadata_props}
    assert props['quantized_from'] == file_sha256(SHIPPED), (
        'models/parcelnet.int8.onnx is stale: run `pkg-perception quantize`'
    )
    fast = OnnxSegmenter(SHIPPED, CPU)
    exact = OnnxSegmenter(SHIPPED, SegmentationConfig(providers=('cpu',), cpu_int8=False))
    assert fast.path == int8 and exact.path == SHIPPED
    (x,) = simulated_inputs(fast.metadata.spec, 30000, 1, 1)
    a, b = fast.infer(x), exact.infer(x)
    assert np.mean(a[:5].argmax(0) == b[:5].argmax(0)) > 0.99
    # The parcels' masks agree; fragments of a few hundred pixels may come and go.
    sim = ConveyorSimulator(SimConfig(scene='piles'), 30002)
    frame, belt = sim.rgbd_frame(40), BeltPlane.from_extrinsics(sim.conveyor_from_camera)
    a, b = (s.segment(frame, belt) for s in (fast, exact))
    assert np.mean((a.labels > 0) == (b.labels > 0)) > 0.99
    large = [b.mask(i) for i in b.instances if b.mask(i).sum() >= 1000]
    assert len(large) >= 3
    for mask in large:
        best = max((a.mask(i) & mask).sum() / (a.mask(i) | mask).sum() for i in a.instances)
        assert best > 0.95
