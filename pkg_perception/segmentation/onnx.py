# Copyright 2026 The pkg_perception Authors
# SPDX-License-Identifier: Apache-2.0
"""ParcelNet on ONNX Runtime: TensorRT (FP16, cached engines), then CUDA, then CPU."""

from __future__ import annotations

import hashlib
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from pkg_perception.errors import ModelError
from pkg_perception.frames import RGBDFrame
from pkg_perception.segmentation.belt import BeltPlane
from pkg_perception.segmentation.config import SegmentationConfig
from pkg_perception.segmentation.decode import decode
from pkg_perception.segmentation.inputs import prepare_input
from pkg_perception.segmentation.instance_features import feature_context
from pkg_perception.segmentation.instances import FLAG_NO_DEPTH, Segmentation
from pkg_perception.segmentation.metadata import QUANTIZED_FROM_KEY, ModelMetadata
from pkg_perception.segmentation.temporal import TemporalFusion

log = logging.getLogger(__name__)

ORT_NAMES = {
    'tensorrt': 'TensorrtExecutionProvider',
    'cuda': 'CUDAExecutionProvider',
    'cpu': 'CPUExecutionProvider',
}


def provider_list(config: SegmentationConfig) -> tuple[list[Any], dict[str, str]]:
    """The providers this onnxruntime build can try, in config order, and why others are out."""
    import onnxruntime as ort

    available = set(ort.get_available_providers())
    chosen: list[Any] = []
    skipped: dict[str, str] = {}
    for name in config.providers:
        ort_name = ORT_NAMES[name]
        if ort_name not in available:
            skipped[name] = (
                f'{ort_name} is not in this onnxruntime build '
                f'(available: {", ".join(sorted(available))}); install onnxruntime-gpu for GPUs'
            )
            continue
        if name == 'tensorrt':
            cache = Path(config.trt_cache_dir).expanduser()
            cache.mkdir(parents=True, exist_ok=True)
            chosen.append(
                (
                    ort_name,
                    {
                        'trt_fp16_enable': config.trt_fp16,
                        'trt_engine_cache_enable': True,
                        'trt_engine_cache_path': str(cache),
                        'trt_timing_cache_enable': True,
                        'trt_timing_cache_path': str(cache),
                    },
                )
            )
        else:
            chosen.append(ort_name)
    if ORT_NAMES['cpu'] not in [_ort_name(c) for c in chosen]:
        chosen.append('CPUExecutionProvider')  # ONNX Runtime needs it for unsupported nodes
    return chosen, skipped


def int8_sibling(model: Path) -> Path:
    """Where `pkg-perception quantize` writes a model's INT8 version, which the CPU runs."""
    return model.with_suffix('.int8.onnx')


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _ort_name(provider: Any) -> str:
    return provider if isinstance(provider, str) else provider[0]


def _open_session(path: Path, options: Any, providers: list[Any]) -> Any:
    import onnxruntime as ort

    try:
        return ort.InferenceSession(str(path), options, providers=providers)
    except Exception as err:
        raise ModelError(
            f'cannot load model {path}: {str(err).splitlines()[0][:300]}. The file is not a '
            'valid ONNX model (truncated copy? a Git LFS pointer?); re-export it with '
            '`pkg-perception export` (an .int8.onnx: `pkg-perception quantize`) or restore it '
            'from models/'
        ) from None


class OnnxSegmenter:
    """Loads, checks and warms the model once; `segment` is then allocation-light."""

    def __init__(self, model_path: str | Path, config: SegmentationConfig) -> None:
        import onnxruntime as ort

        path = Path(model_path).expanduser()
        if not path.is_file():
            raise ModelError(
                f'model file {path} not found; set segmentation.model_path (or --model) to an '
                'exported model, e.g. the shipped models/parcelnet.onnx, or build one with '
                '`pkg-perception train` then `pkg-perception export`'
            )
        self.config = config
        providers, self.skipped = provider_list(config)
        options = ort.SessionOptions()
        options.intra_op_num_threads = config.threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        session = None
        sibling = int8_sibling(path)
        on_cpu = _ort_name(providers[0]) == ORT_NAMES['cpu']
        if config.cpu_int8 and on_cpu and sibling.is_file():
            session = _open_session(sibling, options, providers)
            made_from = session.get_modelmeta().custom_metadata_map.get(QUANTIZED_FROM_KEY)
            if made_from == file_sha256(path):
                path = sibling
            else:
                log.warning(
                    'segmentation: not using %s: it was quantized from another model than %s; '
                    'refresh it with `pkg-perception quantize --model %s`',
                    sibling,
                    path,
                    path,
                )
                session = None
        self.session = session if session is not None else _open_session(path, options, providers)
        self.path = path
        props = self.session.get_modelmeta().custom_metadata_map
        self.metadata = ModelMetadata.from_props(props, str(path))
        self._check_shapes()
        active = self.session.get_providers()
        self.provider = active[0]
        for name in config.providers:
            ort_name = ORT_NAMES[name]
            if ort_name == self.provider:
                break
            reason = self.skipped.get(name, 'it failed to initialise (see ONNX Runtime log)')
            log.warning('segmentation: not using %s: %s', ort_name, reason)
        self.mirror_pass = config.mirror_pass == 'always' or (
            config.mirror_pass == 'gpu' and self.provider != ORT_NAMES['cpu']
        )
        log.info(
            'segmentation: %s on %s%s',
            self.name,
            self.provider,
            ', with a mirror-image pass' if self.mirror_pass else '',
        )
        self._input = self.session.get_inputs()[0].name
        self.temporal = TemporalFusion(config.temporal_weight)
        for _ in range(config.warmup_runs):
            self._run(np.zeros(self.metadata.expected_input(), dtype=np.float32))

    @property
    def name(self) -> str:
        precision = '-int8' if self.metadata.quantized_from else ''
        return f'{self.metadata.name}-{self.metadata.version}{precision}'

    def _check_shapes(self) -> None:
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        want_in, want_out = self.metadata.expected_input(), self.metadata.expected_output()
        if len(inputs) != 1 or len(outputs) != 1:
            raise ModelError(
                f'{self.path}: expected 1 input and 1 output, got {len(inputs)} and '
                f'{len(outputs)}; export the model with `pkg-perception export`'
            )
        for what, got, want in (
            ('input', inputs[0].shape, want_in),
            ('output', outputs[0].shape, want_out),
        ):
            fixed = [g if isinstance(g, int) else w for g, w in zip(got, want, strict=False)]
            if len(got) != len(want) or fixed != want:
                raise ModelError(
                    f'{self.path}: {what} shape {got} does not match its metadata {want}; '
                    're-export the model'
                )

    def _run(self, tensor: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self._input: tensor})[0]

    def infer(self, tensor: np.ndarray) -> np.ndarray:
        """(C, h, w) output of a (1, 5, H, W) input: averaged with the mirror image's.

        The network learnt on mirrored frames too, so the two views err apart and their mean
        is steadier, at a second run's cost.
        """
        logits = self._run(tensor)[0]
        if not self.mirror_pass:
            return logits
        mirrored = self._run(np.ascontiguousarray(tensor[..., ::-1]))[0]
        return 0.5 * (logits + mirrored[..., ::-1])

    def segment(
        self,
        frame: RGBDFrame,
        belt: BeltPlane,
        belt_velocity: npt.NDArray[np.float64] | None = None,
    ) -> Segmentation:
        t0 = time.perf_counter()
        h, w = frame.depth.shape
        prepared = prepare_input(self.metadata.spec, frame.color, frame.depth, frame.camera, belt)
        if prepared.valid_fraction < self.config.min_valid_depth:
            return Segmentation.empty(h, w, flags=(FLAG_NO_DEPTH,))
        t1 = time.perf_counter()
        logits = self.infer(prepared.tensor)
        t2 = time.perf_counter()
        logits = self.temporal.fuse(
            logits, frame.stamp_ns, frame.depth, frame.camera, belt, belt_velocity
        )
        head = self.metadata.instance_head if self.config.instance_head else None
        context = None
        if head is not None:
            context = feature_context(
                self.metadata.spec, prepared.tensor[0], frame.camera, belt, logits.shape[1:]
            )
        seg = decode(
            logits,
            w,
            h,
            self.config.decode,
            output_stride=self.metadata.output_stride,
            head=head,
            context=context,
            color=frame.color,
        )
        t3 = time.perf_counter()
        seg.timings_ms = {
            'preprocess': (t1 - t0) * 1e3,
            'inference': (t2 - t1) * 1e3,
            'postprocess': (t3 - t2) * 1e3,
        }
        return seg
