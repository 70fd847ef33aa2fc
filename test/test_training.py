# Copyright 2026 The pkg_perception Authors
# SPDX-License-Identifier: Apache-2.0
"""Training loop, resume, export to ONNX, the ONNX Runtime segmenter, and COCO fine-tuning."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from pkg_perception.bag.reader import BagFrameReader
from pkg_perception.errors import ConfigError, InputError, ModelError
from pkg_perception.frames import RGBDFrame
from pkg_perception.segmentation.belt import belt_for_frame
from pkg_perception.segmentation.config import SegmentationConfig
from pkg_perception.segmentation.inputs import InputSpec, prepare_input
from pkg_perception.segmentation.instances import FLAG_NO_DEPTH
from pkg_perception.segmentation.onnx import OnnxSegmenter
from pkg_perception.training import simdata
from pkg_perception.training.coco import coco_arrays, write_coco_dataset
from pkg_perception.training.export import export_onnx
from pkg_perception.training.run import run_training, save_weights
from pkg_perception.training.simdata import SimDataPlan, load_shards
from pkg_perception.training.targets import edge_distance, instance_index
from pkg_perception.training.train import (
    PUSH_MARGIN,
    TrainConfig,
    build_model,
    class_weights,
    distill_losses,
    embedding_loss,
    instance_weights,
    load_init,
    losses,
    mirror_averaged,
    touching_boundaries,
    train,
)

TINY = dict(widths=(8, 8, 16, 16), blocks=(0, 1, 1), batch_size=2, threads=1, warmup=1)
SPEC = InputSpec(width=160, height=120)


@pytest.fixture(scope='module')
def frames(small_bag_path: Path) -> list[RGBDFrame]:
    with BagFrameReader(small_bag_path) as reader:
        return list(reader.frames())[:5]


@pytest.fixture(scope='module')
def coco_dir(frames, tmp_path_factory) -> Path:
    return write_coco_dataset(frames, tmp_path_factory.mktemp('coco'))


@pytest.fixture(scope='module')
def weights(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    config = TrainConfig(steps=1, spec=SPEC, **TINY)
    path = tmp_path_factory.mktemp('w') / 'model.pt'
    save_weights(path, build_model(config), config, {'note': 'untrained, for tests'})
    return path


def _tune_on_coco(out: Path, config: TrainConfig, coco: Path, **kwargs) -> Path:
    """`run_training` on the COCO test set (the simulator plan and cache go unused)."""
    return run_training(out, config, cache=out.parent, plan=SimDataPlan(), coco=coco, **kwargs)


@pytest.fixture(scope='module')
def onnx_model(weights, tmp_path_factory) -> Path:
    report = export_onnx(weights, tmp_path_factory.mktemp('onnx') / 'm.onnx')
    assert report.max_abs_diff < 1e-4  # PyTorch and ONNX Runtime agree
    return report.path


def test_shards_load_in_order_into_one_set(tmp_path):
    rng = np.random.default_rng(0)
    shards = []
    for k, n in enumerate((3, 1, 2)):
        part = {
            'inputs': rng.normal(size=(n, 5, 4, 6)).astype(np.float16),
            'classes': rng.integers(0, 5, (n, 4, 6), dtype=np.uint8),
            'edge': rng.integers(0, 255, (n, 4, 6), dtype=np.uint8),
            'instances': rng.integers(0, 9, (n, 4, 6), dtype=np.uint8),
        }
        np.savez(tmp_path / f'{k}.npz', **part)
        shards.append(part)
    got = load_shards(tmp_path / f'{k}.npz' for k in range(3))
    for key in ('inputs', 'classes', 'edge', 'instances'):
        want = np.concatenate([s[key] for s in shards])
        assert got[key].dtype == want.dtype and np.array_equal(got[key], want)


def test_a_set_larger_than_memory_is_refused_before_loading(tmp_path, monkeypatch):
    n = 4
    np.savez(
        tmp_path / '0.npz',
        inputs=np.zeros((n, 5, 8, 8), np.float16),
        classes=np.zeros((n, 8, 8), np.uint8),
        edge=np.zeros((n, 8, 8), np.uint8),
        instances=np.zeros((n, 8, 8), np.uint8),
    )
    need = n * (5 * 64 * 2 + 3 * 64)
    monkeypatch.setattr(simdata, 'available_memory', lambda: need)  # 90 % of it is too little
    with pytest.raises(ConfigError, match=r'needs .* GB of memory .* about 0 fit: --seeds'):
        load_shards([tmp_path / '0.npz'])
    monkeypatch.setattr(simdata, 'available_memory', lambda: 2 * need)
    assert load_shards([tmp_path / '0.npz'])['inputs'].shape == (n, 5, 8, 8)


def test_class_weights_count_every_block_of_frames():
    classes = np.random.default_rng(0).choice(5, size=(150, 3, 4), p=[0.7, 0.1, 0.1, 0.06, 0.04])
    freq = np.bincount(classes.ravel(), minlength=5) / classes.size
    want = freq**-0.5 / (freq * freq**-0.5).sum()
    got = class_weights(classes.astype(np.uint8), 0.5).numpy()
    assert np.allclose(got, want, rtol=1e-5)
    assert np.isclose((freq * got).sum(), 1.0)  # an average pixel weighs 1


def test_touching_boundaries_mark_edges_between_parcels_not_against_the_belt():
    labels = np.zeros((40, 60), dtype=np.int64)
    labels[5:35, 5:30] = 1
    labels[5:35, 30:55] = 2  # touches parcel 1 along column 30
    cls = torch.from_numpy((labels > 0).astype(np.uint8))
    edge = torch.from_numpy(np.round(edge_distance(labels) * 255).astype(np.uint8))
    touch = touching_boundaries(cls[None], edge[None])[0].numpy()
    rows, cols = np.nonzero(touch)
    assert len(rows) and set(np.unique(cols)) <= set(range(25, 35))  # the shared edge only
    assert rows.min() > 5 + 3 and rows.max() < 35 - 3  # not where it meets the belt
    logits = torch.zeros(1, 6, 40, 60)
    plain, _ = losses(logits, cls[None], edge[None], TrainConfig())
    weighted, _ = losses(logits, cls[None], edge[None], TrainConfig(touching_weight=5.0))
    assert weighted.item() > plain.item()


def test_instance_balance_weighs_a_sliver_up_and_a_large_parcel_down():
    inst = torch.zeros(1, 20, 40, dtype=torch.uint8)
    inst[0, :, :30] = 1  # 600 pixels
    inst[0, :, 32:34] = 2  # a sliver of 40
    w = instance_weights(inst, 0.5)[0]
    assert w[0, 35] == 1.0  # belt
    assert w[0, 33] > 1.0 > w[0, 0]
    assert w[0, 33] / w[0, 0] == pytest.approx((600 / 40) ** 0.5, rel=1e-4)
    assert torch.equal(instance_weights(inst, 0.0)[0], torch.ones(20, 40))


def test_embedding_loss_is_zero_only_when_parcels_are_apart_and_tight():
    inst = torch.zeros(2, 20, 20, dtype=torch.uint8)
    inst[0, :10], inst[0, 10:], inst[1, 2:7, 2:7] = 1, 2, 1
    rng = np.random.default_rng(0)
    same = torch.from_numpy(rng.normal(0, 1e-3, (2, 3, 20, 20))).float().requires_grad_()
    loss = embedding_loss(same, inst)
    loss.backward()
    # One pair of parcels, not yet pushed apart.
    assert loss.item() == pytest.approx((2 * PUSH_MARGIN) ** 2, rel=0.01)
    assert same.grad is not None and same.grad[0].abs().sum() > 0
    apart = torch.zeros(2, 3, 20, 20)
    apart[0, 0, 10:] = 2 * PUSH_MARGIN + 0.1
    assert embedding_loss(apart, inst).item() < 0.01  # only the small pull on the means
    noisy = apart + torch.from_numpy(rng.normal(0, 1.0, apart.shape)).float()
    assert embedding_loss(noisy, inst).item() > 0.1  # pixels wander beyond the pull margin


def test_instance_targets_number_parcels_within_a_frame():
    labels = np.array([[0, 0, 70, 70], [5, 5, 70, 0]])
    assert instance_index(labels).tolist() == [[0, 0, 2, 2], [1, 1, 2, 0]]
    assert instance_index(np.array([[9, 9], [4, 4]])).min() == 1  # no belt: still from 1


def test_embedding_model_starts_from_weights_without_and_keeps_their_outputs(weights):
    base = torch.load(weights, weights_only=False)
    config = TrainConfig(spec=SPEC, embed_dims=3, **TINY)
    model = build_model(config)
    fresh = load_init(model, base['model'])
    assert fresh == ['head (embedding rows)']
    old = build_model(TrainConfig(spec=SPEC, **TINY))
    old.load_state_dict(base['model'])
    x = torch.randn(1, 5, SPEC.height, SPEC.width)
    with torch.no_grad():
        out = model.eval()(x)
        assert out.shape[1] == 6 + 3
        assert torch.allclose(out[:, :6], old.eval()(x), atol=1e-6)


def test_coco_dataset_round_trips_into_training_samples(coco_dir):
    train_set, val_set = coco_arrays(coco_dir, SPEC, seed=0, output_stride=2)
    assert len(train_set) + len(val_set) == 5 and len(val_set) >= 1
    assert train_set.inputs.shape[1:] == (5, 120, 160)
    assert train_set.classes.shape[1:] == (60, 80)
    assert set(np.unique(train_set.classes)) - {0} <= {1, 2, 3, 4}
    assert train_set.classes.any() and (train_set.edge > 0).any()


def test_resume_gives_the_same_weights_as_one_run(coco_dir, tmp_path):
    train_set, val_set = coco_arrays(coco_dir, SPEC, seed=0, output_stride=2)
    config = TrainConfig(steps=4, spec=SPEC, checkpoint_every=2, eval_every=2, **TINY)
    one = train(config, train_set, val_set, tmp_path / 'one', progress=False)
    # Stop after 2 steps (as a kill would), then resume to 4 in the same directory.
    train(replace(config, steps=2), train_set, val_set, tmp_path / 'two', progress=False)
    ckpt = torch.load(tmp_path / 'two' / 'last.pt', weights_only=False)
    ckpt['config']['steps'] = 4
    del ckpt['config']['precision']  # as checkpoints written before it existed
    torch.save(ckpt, tmp_path / 'two' / 'last.pt')
    two = train(config, train_set, val_set, tmp_path / 'two', progress=False)
    for (k, a), b in zip(one.state_dict().items(), two.state_dict().values(), strict=True):
        assert torch.equal(a, b), k


def test_bf16_training_writes_float32_weights_in_the_usual_layout(coco_dir, weights, tmp_path):
    config = TrainConfig(steps=2, eval_every=1, precision='bf16', **TINY)
    out = _tune_on_coco(tmp_path / 'bf16', config, coco_dir, init=weights)
    tuned = torch.load(out, weights_only=False)
    assert tuned['config']['precision'] == 'bf16'
    assert all(v.dtype != torch.bfloat16 and v.is_contiguous() for v in tuned['model'].values())
    base = torch.load(weights, weights_only=False)
    assert any(not torch.equal(tuned['model'][k], v) for k, v in base['model'].items())
    assert all(torch.isfinite(v).all() for v in tuned['model'].values())
    with pytest.raises(ConfigError, match='precision'):
        TrainConfig(precision='fp16')


def test_fine_tune_from_weights_on_coco(coco_dir, weights, tmp_path):
    config = TrainConfig(steps=2, eval_every=1, **TINY)
    out = _tune_on_coco(tmp_path / 'ft', config, coco_dir, init=weights)
    tuned = torch.load(out, weights_only=False)
    base = torch.load(weights, weights_only=False)
    assert tuned['info']['init'] == str(weights)
    assert tuned['config']['spec']['width'] == SPEC.width  # the base model's input size
    changed = [not torch.equal(tuned['model'][k], v) for k, v in base['model'].items()]
    assert any(changed)


def test_distillation_targets_are_mirror_symmetric_and_matched_best_by_the_teacher(weights):
    blob = torch.load(weights, weights_only=False)
    model = build_model(TrainConfig(spec=SPEC, **TINY))
    model.load_state_dict(blob['model'])
    model.eval()
    x = torch.randn(2, 5, SPEC.height, SPEC.width, generator=torch.Generator().manual_seed(1))
    teacher = mirror_averaged(model, x, 'fp32')
    # The mirror image's target is the target mirrored: what the runtime's mirror pass gives.
    torch.testing.assert_close(mirror_averaged(model, x.flip(-1), 'fp32'), teacher.flip(-1))
    cls = torch.randint(0, 5, teacher[:, 0].shape, generator=torch.Generator().manual_seed(2))
    weights_ = torch.tensor([0.5, 1.0, 2.0, 2.0, 3.0])
    exact = distill_losses(teacher, teacher, cls, weights_, None)
    noise = torch.randn(teacher.shape, generator=torch.Generator().manual_seed(3))
    off = distill_losses(teacher + noise, teacher, cls, weights_, None)
    assert exact[0] < off[0] and exact[1] < off[1]


def test_distilled_fine_tune_records_its_teacher_and_needs_init(coco_dir, weights, tmp_path):
    config = TrainConfig(steps=2, eval_every=1, distill_weight=0.5, **TINY)
    out = _tune_on_coco(tmp_path / 'kd', config, coco_dir, init=weights)
    tuned = torch.load(out, weights_only=False)
    assert tuned['info']['distilled_from'] == str(weights)
    assert tuned['config']['distill_weight'] == 0.5
    base = torch.load(weights, weights_only=False)
    assert any(not torch.equal(tuned['model'][k], v) for k, v in base['model'].items())
    log = (tmp_path / 'kd' / 'log.jsonl').read_text()
    assert 'distill_ce' in log
    with pytest.raises(ConfigError, match='--init'):
        _tune_on_coco(tmp_path / 'kd2', config, coco_dir)
    with pytest.raises(ConfigError, match='same --output-stride'):
        _tune_on_coco(tmp_path / 'kd3', config, coco_dir, init=weights, output_stride=1)
    with pytest.raises(ConfigError, match='distill_weight'):
        TrainConfig(distill_weight=1.5)


def test_stride_one_embedding_model_grows_from_stride_two_weights_and_exports(
    coco_dir, weights, frames, tmp_path
):
    config = TrainConfig(steps=1, eval_every=1, **TINY)
    out = _tune_on_coco(
        tmp_path / 'fine', config, coco_dir, init=weights, output_stride=1, embed_dims=2
    )
    tuned = torch.load(out, weights_only=False)
    base = torch.load(weights, weights_only=False)
    assert tuned['config']['output_stride'] == 1 and tuned['config']['embed_dims'] == 2
    assert tuned['model']['head.weight'].shape[0] == 6 + 2
    assert {k.split('.')[0] for k in set(tuned['model']) - set(base['model'])} == {
        'stem1',
        'up1',
        'refine',
    }
    report = export_onnx(out, tmp_path / 'fine.onnx', copy_weights=False)
    assert report.max_abs_diff < 1e-4
    props = {p.key: p.value for p in onnx.load(str(report.path)).metadata_props}
    assert props['output_stride'] == '1' and props['embed_dims'] == '2'
    seg = OnnxSegmenter(report.path, SegmentationConfig(providers=('cpu',), warmup_runs=1))
    frame = frames[0]
    assert seg.segment(frame, belt_for_frame(frame)).labels.shape == (240, 320)
    # Without the stride, weights of another shape are refused, not half loaded.
    with pytest.raises(ConfigError, match='do not fit this model'):
        train(
            config, *coco_arrays(coco_dir, SPEC, 0, 2), tmp_path / 'x', init_weights=tuned['model']
        )


def test_deeper_stages_grow_from_weights_as_identity_blocks(weights):
    base = torch.load(weights, weights_only=False)
    config = TrainConfig(steps=1, spec=SPEC, **{**TINY, 'blocks': (0, 2, 2)})
    model = build_model(config)
    fresh = load_init(model, base['model'])
    assert fresh == ['down16.2 (identity)', 'down8.2 (identity)']
    old = build_model(replace(config, blocks=TINY['blocks']))
    old.load_state_dict(base['model'])
    x = torch.randn(2, 5, SPEC.height, SPEC.width)
    with torch.no_grad():
        assert torch.equal(model.eval()(x), old.eval()(x))  # exactly where the weights left off
    # Fewer blocks than the weights hold is refused, not half loaded.
    with pytest.raises(ConfigError, match='do not fit'):
        load_init(build_model(replace(config, blocks=(0, 1, 0))), base['model'])


def test_wider_full_resolution_stage_grows_from_narrower_weights():
    torch.manual_seed(0)
    config = TrainConfig(steps=1, spec=SPEC, output_stride=1, **TINY)
    narrow = build_model(config)  # full width 4, half the 1/2 stage's 8
    for p in narrow.parameters():
        torch.nn.init.normal_(p, std=0.3)  # the refinement is zero at init; make it count
    wide = build_model(replace(config, full_width=12))
    assert wide.full_width == 12 and wide.stem1 is not None
    assert load_init(wide, narrow.state_dict()) == [
        'refine (widened)',
        'stem1 (widened)',
        'up1 (widened)',
    ]
    x = torch.randn(2, 5, SPEC.height, SPEC.width)
    with torch.no_grad():
        assert torch.allclose(wide.eval()(x), narrow.eval()(x), atol=1e-5)
        # ... and the new channels are there to learn: they carry signal already.
        assert wide.stem1(x)[:, 4:].abs().sum() > 0


def test_exported_model_has_metadata_and_passes_checker(onnx_model):
    proto = onnx.load(str(onnx_model))
    onnx.checker.check_model(proto, full_check=True)
    props = {p.key: p.value for p in proto.metadata_props}
    assert props['format'] == 'pkg_perception/parcelnet/v1'
    assert '"box"' in props['classes'] and props['input_size'] == '[160, 120]'
    assert (
        'height_scale_m' in props['normalization']
        and 'height_above_belt_m' in props['depth_range']
    )
    assert proto.opset_import[0].version >= 17


def test_exported_graph_is_static_with_no_shape_arithmetic(onnx_model):
    # Every shape is a constant: only the network's own operators, each with fixed dims.
    graph = onnx.load(str(onnx_model)).graph
    assert {n.op_type for n in graph.node} <= {'Conv', 'Relu', 'Add', 'Resize', 'Concat'}
    dims = [d for v in (*graph.input, *graph.output) for d in v.type.tensor_type.shape.dim]
    assert dims and all(d.HasField('dim_value') for d in dims)


def test_onnx_segmenter_runs_on_frames_of_other_sizes(onnx_model, frames):
    seg = OnnxSegmenter(onnx_model, SegmentationConfig(providers=('cpu',), warmup_runs=1))
    assert seg.provider == 'CPUExecutionProvider'
    frame = frames[0]  # 320x240 into a 160x120 model: resized, masks at frame size
    out = seg.segment(frame, belt_for_frame(frame))
    assert out.labels.shape == (240, 320)
    assert set(out.timings_ms) == {'preprocess', 'inference', 'postprocess'}
    empty = RGBDFrame(frame.color, np.full_like(frame.depth, np.nan), frame.camera, 0)
    assert seg.segment(empty, belt_for_frame(frame)).flags == (FLAG_NO_DEPTH,)
    import cv2

    from pkg_perception.frames import CameraModel

    wide = RGBDFrame(
        cv2.resize(frame.color, (400, 240)),
        cv2.resize(frame.depth, (400, 240), interpolation=cv2.INTER_NEAREST),
        CameraModel(400, 240, 300.0, 300.0, 200.0, 120.0),
        0,
    )
    with pytest.raises(InputError, match='aspect ratio'):
        seg.segment(wide, belt_for_frame(frame))


def test_mirror_pass_averages_the_frame_and_its_mirror_image(onnx_model, frames):
    frame = frames[0]
    belt = belt_for_frame(frame)
    # 'gpu' (the default) runs one pass on the CPU provider; 'always' runs the second.
    one = OnnxSegmenter(onnx_model, SegmentationConfig(providers=('cpu',), warmup_runs=0))
    two = OnnxSegmenter(
        onnx_model, SegmentationConfig(providers=('cpu',), warmup_runs=0, mirror_pass='always')
    )
    assert not one.mirror_pass and two.mirror_pass
    x = prepare_input(one.metadata.spec, frame.color, frame.depth, frame.camera, belt).tensor
    single = one.infer(x)
    np.testing.assert_array_equal(single, one.session.run(None, {'input': x})[0][0])
    mirrored = one.infer(np.ascontiguousarray(x[..., ::-1]))[..., ::-1]
    assert not np.allclose(single, mirrored, atol=1e-3)  # the network is not symmetric
    np.testing.assert_allclose(two.infer(x), 0.5 * (single + mirrored), atol=1e-5)
    assert two.segment(frame, belt).labels.shape == frame.depth.shape


def test_missing_and_corrupt_models_name_the_path_and_fix(tmp_path, onnx_model):
    config = SegmentationConfig(providers=('cpu',))
    with pytest.raises(ModelError, match=r'nope\.onnx not found.*pkg-perception export'):
        OnnxSegmenter(tmp_path / 'nope.onnx', config)
    broken = tmp_path / 'broken.onnx'
    broken.write_bytes(onnx_model.read_bytes()[:2000])
    with pytest.raises(ModelError, match=r'broken\.onnx.*not a valid ONNX model'):
        OnnxSegmenter(broken, config)


def test_model_with_mismatched_metadata_is_refused(tmp_path, onnx_model):
    proto = onnx.load(str(onnx_model))
    for p in proto.metadata_props:
        if p.key == 'input_size':
            p.value = '[320, 240]'
    bad = tmp_path / 'bad.onnx'
    onnx.save(proto, str(bad))
    with pytest.raises(ModelError, match='does not match its metadata'):
        OnnxSegmenter(bad, SegmentationConfig(providers=('cpu',)))
    proto = onnx.load(str(onnx_model))
    del proto.metadata_props[:]
    onnx.save(proto, str(bad))
    with pytest.raises(ModelError, match='metadata format'):
        OnnxSegmenter(bad, SegmentationConfig(providers=('cpu',)))


def test_unavailable_providers_fall_back_to_cpu_with_reasons(onnx_model):
    seg = OnnxSegmenter(onnx_model, SegmentationConfig(warmup_runs=0))
    assert seg.provider == 'CPUExecutionProvider'
    assert 'not in this onnxruntime build' in seg.skipped.get(
        'cuda', 'not in this onnxruntime build'
    )


def test_training_benchmark_times_every_variant_on_simulated_frames():
    from pkg_perception.training.benchmark import VARIANTS, _time_recipe

    config = TrainConfig(steps=1, spec=SPEC, output_stride=1, instance_balance=0.5, **TINY)
    times = _time_recipe(config, seed=3, steps=2)
    assert list(times) == list(VARIANTS)
    assert all(len(ts) == 2 and min(ts) > 0 for ts in times.values())
