# Copyright 2026 The pkg_perception Authors
# SPDX-License-Identifier: Apache-2.0
"""Segmentation latency at 640x480 (pre-process + inference + post-process), model vs baseline."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from pkg_perception.benchmarks import machine_description, update_section
from pkg_perception.frames import RGBDFrame
from pkg_perception.segmentation.belt import BeltPlane
from pkg_perception.segmentation.config import MirrorPass, SegmentationConfig
from pkg_perception.segmentation.geometric import GeometricSegmenter
from pkg_perception.segmentation.onnx import OnnxSegmenter
from pkg_perception.sim.simulator import ConveyorSimulator, SimConfig


def _frames(count: int, seed: int) -> tuple[list[RGBDFrame], BeltPlane]:
    sim = ConveyorSimulator(SimConfig(scene='piles'), seed)
    frames = [sim.rgbd_frame(k * 5) for k in range(count)]
    return frames, BeltPlane.from_extrinsics(sim.conveyor_from_camera)


def _percentiles(ms: list[float]) -> str:
    a = np.asarray(ms)
    return f'{np.median(a):.1f} | {np.percentile(a, 99):.1f}'


def _float_comparison(
    model: Path,
    config: SegmentationConfig,
    frames: list[RGBDFrame],
    belt: BeltPlane,
    runs: int,
    int8_p50: float,
    int8_inference: list[float],
) -> tuple[list[str], list[str]]:
    """Table rows and a ratio line for the float model, timed after its INT8 sibling.

    Not interleaved with it: two sessions in one process take each other's cores (ONNX
    Runtime's threads spin-wait after a run).
    """
    exact = OnnxSegmenter(model, replace(config, cpu_int8=False))
    total, inference = [], []
    for k in range(runs):
        t = time.perf_counter()
        inference.append(exact.segment(frames[k % len(frames)], belt).timings_ms['inference'])
        total.append((time.perf_counter() - t) * 1e3)
    rows = [
        f'| model in float (`cpu_int8: false`, timed after), total | {_percentiles(total)} |',
        f'| model in float: inference | {_percentiles(inference)} |',
    ]
    ratio = (
        f'INT8 / float, p50: total {int8_p50 / np.median(total):.2f}, inference '
        f'{np.median(int8_inference) / np.median(inference):.2f}.'
    )
    return rows, [ratio]


def benchmark_segmentation(
    model: Path,
    *,
    runs: int,
    seed: int,
    doc: Path | None,
    providers: tuple[str, ...] = ('cpu',),
    mirror_pass: MirrorPass = 'gpu',
) -> str:
    """Time both segmenters on the same simulated pile frames, interleaved, in one process."""
    frames, belt = _frames(20, seed)
    config = SegmentationConfig(providers=providers, mirror_pass=mirror_pass)
    onnx_seg = OnnxSegmenter(model, config)
    geo = GeometricSegmenter()
    stages: dict[str, list[float]] = {'preprocess': [], 'inference': [], 'postprocess': []}
    total: dict[str, list[float]] = {'model': [], 'geometric': []}
    for k in range(runs):
        frame = frames[k % len(frames)]
        t = time.perf_counter()
        seg = onnx_seg.segment(frame, belt)
        total['model'].append((time.perf_counter() - t) * 1e3)
        for s, v in seg.timings_ms.items():
            stages[s].append(v)
        t = time.perf_counter()
        geo.segment(frame, belt)
        total['geometric'].append((time.perf_counter() - t) * 1e3)
    p50 = float(np.median(total['model']))
    flag = f' --mirror-pass {mirror_pass}' if mirror_pass != 'gpu' else ''
    p99 = float(np.percentile(total['model'], 99))
    float_rows, float_ratio = (
        _float_comparison(model, config, frames, belt, runs, p50, stages['inference'])
        if onnx_seg.metadata.quantized_from
        else ([], [])
    )
    lines = [
        f'Segmentation at 640x480 (`pkg-perception benchmark-segmentation{flag}`), {runs} '
        f'frames of simulated piles, one process, segmenters interleaved. '
        f'Machine: {machine_description()}. '
        f'Model `{model.name}` ({onnx_seg.name}) on {onnx_seg.provider}, '
        f'{onnx_seg.config.threads} threads'
        f'{", with the mirror-image pass (two inference runs)" if onnx_seg.mirror_pass else ""}.',
        '',
        '| segmenter / stage | p50 ms | p99 ms |',
        '|---|---|---|',
        f'| **model, total** | {_percentiles(total["model"])} |',
        *(f'| model: {s} | {_percentiles(v)} |' for s, v in stages.items()),
        f'| geometric baseline, total | {_percentiles(total["geometric"])} |',
        *float_rows,
        '',
        f'Target p50 <= 25 ms and p99 <= 40 ms: p50 {p50:.1f} ms '
        f'({"met" if p50 <= 25 else "NOT met"}), p99 {p99:.1f} ms '
        f'({"met" if p99 <= 40 else "NOT met"}).',
        *float_ratio,
    ]
    text = '\n'.join(lines)
    if doc is not None:
        section, title = 'segmentation', 'Segmentation'
        if providers != ('cpu',):
            section = 'segmentation-gpu'
        elif onnx_seg.mirror_pass:
            section, title = 'segmentation-mirror', 'Segmentation with the mirror-image pass, CPU'
        update_section(doc, section, f'## {title}\n\n' + text)
    return text
