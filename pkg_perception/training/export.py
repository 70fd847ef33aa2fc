# Copyright 2026 The pkg_perception Authors
# SPDX-License-Identifier: Apache-2.0
"""Weights -> ONNX (opset 18, static shapes, metadata_props), checked and compared to PyTorch.

The graph comes from torch.export (`torch.onnx.export(..., dynamo=True)`, which needs
onnxscript): every shape is a constant in it, so it holds only the network's own operators
(Conv, Relu, Add, Resize, Concat), where the TorchScript exporter left Shape/Slice
arithmetic for each upsampling's output size, which every runtime had to fold itself.
"""

from __future__ import annotations

import json
import logging
import shutil
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import onnx
import torch

from pkg_perception.errors import ConfigError
from pkg_perception.segmentation.inputs import INPUT_CHANNELS
from pkg_perception.segmentation.metadata import ModelMetadata
from pkg_perception.training.model import ParcelNet
from pkg_perception.training.run import load_weights
from pkg_perception.training.train import build_model, config_from_dict

OPSET = 18
MODEL_VERSION = '1.9'


@dataclass(frozen=True)
class ExportReport:
    """What an export produced and how closely ONNX Runtime matches PyTorch."""

    path: Path
    max_abs_diff: float  # PyTorch vs ONNX Runtime (CPU) on the same input
    input_shape: tuple[int, ...]


def load_model(weights: Path) -> tuple[ParcelNet, dict]:
    blob = load_weights(weights)
    config = config_from_dict(blob['config'])
    model = build_model(config)
    model.load_state_dict(blob['model'])
    return model.eval(), blob


def export_onnx(
    weights: Path,
    out: Path,
    *,
    input_size: tuple[int, int] | None = None,
    name: str = 'parcelnet',
    copy_weights: bool = True,
) -> ExportReport:
    """Write `out` (ONNX) and, next to it, the weights it came from (for fine-tuning)."""
    model, blob = load_model(weights)
    spec = config_from_dict(blob['config']).spec
    if input_size is not None:
        w, h = input_size
        if w % 16 or h % 16:
            raise ConfigError(f'--input-size {w} {h}: both must be multiples of 16')
        spec = replace(spec, width=w, height=h)
    meta = ModelMetadata(
        name=name,
        version=MODEL_VERSION,
        spec=spec,
        output_stride=model.output_stride,
        embed_dims=model.embed_dims,
    )
    dummy = torch.zeros(1, INPUT_CHANNELS, spec.height, spec.width)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix('.tmp.onnx')
    with _quiet_exporter():
        torch.onnx.export(
            model,
            (dummy,),
            str(tmp),
            opset_version=OPSET,
            input_names=['input'],
            output_names=['logits'],
            dynamo=True,
            external_data=False,
            verbose=False,
        )
    proto = onnx.load(str(tmp))
    info = blob.get('info', {})
    extra = {'training': info, 'opset': str(OPSET)}
    for key, value in meta.to_props(extra).items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    proto.doc_string = 'ParcelNet parcel instance segmenter (pkg_perception); see models/README.md'
    onnx.checker.check_model(proto, full_check=True)
    onnx.save(proto, str(out))
    tmp.unlink()
    if copy_weights:
        target = out.with_suffix('.pt')
        if target.resolve() != weights.resolve():
            shutil.copyfile(weights, target)
    diff = parity(model, out, seed=0)
    return ExportReport(out, diff, tuple(dummy.shape))


@contextmanager
def _quiet_exporter() -> Iterator[None]:
    """Silence what torch.export says about things this model does not use.

    It lists the torchvision operators it cannot register (torchvision is not a
    dependency) and warns about its own internals; a failure still raises.
    """
    logger = logging.getLogger('torch.onnx._internal.exporter._registration')
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter('ignore', FutureWarning)
            yield
    finally:
        logger.setLevel(level)


def parity(model: ParcelNet, onnx_path: Path, seed: int) -> float:
    """Largest absolute difference of logits between PyTorch and ONNX Runtime (CPU)."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx_path), providers=['CPUExecutionProvider'])
    shape = session.get_inputs()[0].shape
    x = np.random.default_rng(seed).normal(size=shape).astype(np.float32)
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    got = session.run(None, {session.get_inputs()[0].name: x})[0]
    return float(np.abs(ref - got).max())


def describe(report: ExportReport) -> str:
    return json.dumps(
        {
            'model': str(report.path),
            'input': list(report.input_shape),
            'parity_max_abs_diff': report.max_abs_diff,
        }
    )
