# Copyright 2026 The pkg_perception Authors
# SPDX-License-Identifier: Apache-2.0
"""A float model -> its INT8 sibling for the CPU provider: deep stages in 8-bit, fine ones not.

On a CPU the convolutions at 1/8 and 1/16 of the input are compute-bound (64-128 channels
on a few thousand pixels), and 8-bit integer arithmetic (VNNI) runs them about 2.5x faster.
The stages at 1/1 to 1/4 have 8-32 channels on many pixels: memory-bound, slower in 8-bit
(requantizing their concatenations and upsampling costs more than it saves), and where the
mask edges are drawn. So only nodes whose output is at stride 8 or coarser are quantized
(static, per-channel weights, activations calibrated on simulated frames of the training
cells); the rest stays float. ParcelNet 1.9: inference about 0.65x the float model's on a
2-core CPU, mask AP within 0.003 on six of seven bags and 0.008 lower on dense piles
(models/README.md). A GPU keeps the float model (TensorRT builds its own FP16 engine).
"""

from __future__ import annotations

import contextlib
import json
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from tqdm import tqdm

from pkg_perception.errors import ConfigError, ModelError
from pkg_perception.segmentation.belt import BeltPlane
from pkg_perception.segmentation.inputs import InputSpec, prepare_input
from pkg_perception.segmentation.metadata import QUANTIZED_FROM_KEY, ModelMetadata
from pkg_perception.segmentation.onnx import file_sha256, int8_sibling
from pkg_perception.sim.simulator import ConveyorSimulator, SimConfig

FIRST_CELL = 10000  # the training cells (training/simdata.py): what the model has seen
CHECK_CELL = 20000  # cells for the agreement check, apart from the calibration's
SCENES = ('piles', 'mixed')  # alternating, cell by cell


@dataclass(frozen=True)
class QuantizeReport:
    """What was written, and how closely the INT8 model follows the float one."""

    path: Path
    int8_nodes: int
    float_nodes: int
    calibration_frames: int
    class_agreement: float  # share of pixels whose top class both models agree on
    edge_logit_mean_abs_diff: float
    seconds: float

    def to_json(self) -> str:
        return json.dumps({k: str(v) if isinstance(v, Path) else v for k, v in vars(self).items()})


def simulated_inputs(
    spec: InputSpec, first_cell: int, cells: int, frames: int
) -> Iterator[np.ndarray]:
    """Model inputs of simulated frames, cells alternating between the scene kinds."""
    for k in range(cells):
        sim = ConveyorSimulator(SimConfig(scene=SCENES[k % len(SCENES)]), first_cell + k)
        belt = BeltPlane.from_extrinsics(sim.conveyor_from_camera)
        for j in range(frames):
            frame = sim.rgbd_frame(j * 7)
            yield prepare_input(spec, frame.color, frame.depth, frame.camera, belt).tensor.copy()


def _fine_nodes(model: onnx.ModelProto, input_height: int, min_stride: int) -> list[str]:
    """Nodes with an output finer than `min_stride` (kept float)."""
    shapes = {
        v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
        for v in [*model.graph.value_info, *model.graph.output]
    }
    limit = input_height // min_stride
    return [
        n.name
        for n in model.graph.node
        if any(len(shapes.get(o, [])) == 4 and shapes[o][2] > limit for o in n.output)
    ]


def quantize_model(
    model_path: Path,
    out: Path | None = None,
    *,
    min_stride: int = 8,
    cells: int = 8,
    frames_per_cell: int = 6,
) -> QuantizeReport:
    """Write the INT8 sibling of `model_path` (default `<model>.int8.onnx`) and check it."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if min_stride not in (1, 2, 4, 8, 16):
        raise ConfigError(f'--min-stride {min_stride}: use 1, 2, 4, 8 or 16')
    t0 = time.perf_counter()
    out = out or int8_sibling(model_path)
    try:
        proto = onnx.load(str(model_path))
    except Exception as err:
        raise ModelError(
            f'cannot read {model_path} ({str(err)[:200]}); export it with `pkg-perception export`'
        ) from None
    props = {p.key: p.value for p in proto.metadata_props}
    meta = ModelMetadata.from_props(props, str(model_path))
    if meta.quantized_from:
        raise ModelError(f'{model_path} is already quantized; give the float model it came from')
    spec = meta.spec
    inputs = list(
        tqdm(
            simulated_inputs(spec, FIRST_CELL, cells, frames_per_cell),
            total=cells * frames_per_cell,
            desc='calibration frames',
            unit='frame',
        )
    )

    class Frames(CalibrationDataReader):
        def __init__(self) -> None:
            self._it = iter(inputs)

        def get_next(self) -> dict[str, np.ndarray] | None:
            x = next(self._it, None)
            return None if x is None else {'input': x}

    with tempfile.TemporaryDirectory() as tmp:
        prepared = Path(tmp) / 'prepared.onnx'
        quant_pre_process(str(model_path), str(prepared))
        graph = onnx.load(str(prepared))
        keep_float = _fine_nodes(graph, spec.height, min_stride)
        int8_tmp = Path(tmp) / 'int8.onnx'
        with contextlib.redirect_stdout(sys.stderr):  # its progress lines, not our report
            quantize_static(
                str(prepared),
                str(int8_tmp),
                Frames(),
                quant_format=QuantFormat.QDQ,
                per_channel=True,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                nodes_to_exclude=keep_float,
                calibrate_method=CalibrationMethod.Percentile,
                extra_options={'CalibPercentile': 99.99},
            )
        q = onnx.load(str(int8_tmp))
    del q.metadata_props[:]
    props[QUANTIZED_FROM_KEY] = file_sha256(model_path)
    props['precision'] = json.dumps(
        {
            'int8': f'nodes with outputs at stride {min_stride} or coarser',
            'calibration': f'{cells} simulated cells x {frames_per_cell} frames, '
            f'seeds {FIRST_CELL}-{FIRST_CELL + cells - 1}, percentile 99.99',
        }
    )
    for key, value in props.items():
        entry = q.metadata_props.add()
        entry.key, entry.value = key, value
    q.doc_string = proto.doc_string + ' INT8 at the deep stages, for the CPU provider.'
    onnx.checker.check_model(q, full_check=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(q, str(out))
    agreement, edge_diff = compare(model_path, out, meta)
    n_float = len(keep_float)
    return QuantizeReport(
        out,
        int8_nodes=len(graph.graph.node) - n_float,
        float_nodes=n_float,
        calibration_frames=len(inputs),
        class_agreement=agreement,
        edge_logit_mean_abs_diff=edge_diff,
        seconds=time.perf_counter() - t0,
    )


def compare(float_path: Path, int8_path: Path, meta: ModelMetadata) -> tuple[float, float]:
    """Top-class agreement and mean edge-logit difference on frames calibration did not see."""
    import onnxruntime as ort

    ref = ort.InferenceSession(str(float_path), providers=['CPUExecutionProvider'])
    got = ort.InferenceSession(str(int8_path), providers=['CPUExecutionProvider'])
    agree, diff = [], []
    n_classes = len(meta.classes)
    for x in simulated_inputs(meta.spec, CHECK_CELL, 2, 2):
        a = ref.run(None, {'input': x})[0][0]
        b = got.run(None, {'input': x})[0][0]
        agree.append(float(np.mean(a[:n_classes].argmax(0) == b[:n_classes].argmax(0))))
        diff.append(float(np.mean(np.abs(a[n_classes] - b[n_classes]))))
    return float(np.mean(agree)), float(np.mean(diff))
