# Copyright 2026 The pkg_perception Authors
# SPDX-License-Identifier: Apache-2.0
"""Training step time on this machine: what a `pkg-perception train` run costs per step.

The variants are timed in turn on the same batch of simulated frames in one process, so a
slow phase of the machine slows all of them alike and their ratios hold.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from pkg_perception.benchmarks import machine_description, update_section
from pkg_perception.training.simdata import SimDataPlan, load_shards, render_shard
from pkg_perception.training.train import (
    Arrays,
    TrainConfig,
    build_model,
    class_weights,
    to_tensors,
    train_step,
)

# name -> (precision, memory layout of the network's tensors)
VARIANTS: dict[str, tuple[str, torch.memory_format]] = {
    'fp32, default (NCHW) layout': ('fp32', torch.contiguous_format),
    'fp32, channels-last (`train`, default)': ('fp32', torch.channels_last),
    'bf16, channels-last (`train --precision bf16`)': ('bf16', torch.channels_last),
}


RECIPES: dict[str, TrainConfig] = {
    '`train` as it comes (stride 2)': TrainConfig(),
    'ParcelNet 1.8 (stride 1, blocks 0,2,3,2, `--instance-balance 0.5`)': TrainConfig(
        output_stride=1, blocks=(0, 2, 3, 2), instance_balance=0.5
    ),
}
WARMUP = 3


def _frames(config: TrainConfig, seed: int, count: int) -> Arrays:
    plan = SimDataPlan(first_seed=seed, seeds=1, frames_per_seed=count)
    with tempfile.TemporaryDirectory() as tmp:
        path = render_shard(plan, config.spec, config.output_stride, seed, Path(tmp) / 's.npz')
        return Arrays(**load_shards([path]))


def _time_recipe(config: TrainConfig, seed: int, steps: int) -> dict[str, list[float]]:
    """Seconds per step of each variant, timed in turn on one batch of one cell's frames."""
    data = _frames(config, seed, config.batch_size)
    batch = to_tensors(data, np.arange(config.batch_size))
    weights = class_weights(data.classes, config.class_balance)
    runs = {}
    for name, (precision, layout) in VARIANTS.items():
        torch.manual_seed(seed)
        model = build_model(config).to(memory_format=layout)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
        runs[name] = (replace(config, precision=precision), layout, model, opt)
    times: dict[str, list[float]] = {name: [] for name in VARIANTS}
    for _ in tqdm(range(steps + WARMUP), desc='benchmark-training', unit='round'):
        for name, (cfg, layout, model, opt) in runs.items():
            t = time.perf_counter()
            train_step(model, opt, batch, cfg, weights, layout)  # leaves batch as it is
            times[name].append(time.perf_counter() - t)
    return {name: ts[WARMUP:] for name, ts in times.items()}


def benchmark_training(*, steps: int, seed: int, doc: Path | None) -> str:
    """Seconds per training step, by precision and memory layout, for both recipes."""
    threads = TrainConfig().threads
    torch.set_num_threads(threads)
    default_run = TrainConfig().steps
    lines = [
        '## Training: time per step',
        '',
        f'Machine: {machine_description()}, {threads} threads. Command: '
        f'`pkg-perception benchmark-training --steps {steps} --seed {seed}`. One training '
        'step (forward, loss, backward, AdamW) on a batch of 12 frames of one simulated '
        f'cell at 320x240; the variants in turn, {steps} rounds after {WARMUP} warm-up '
        'rounds, so a slow phase of the machine slows them alike.',
        '',
        f'| model | variant | p50 s | p99 s | time vs NCHW | {default_run:,} steps |',
        '| --- | --- | --- | --- | --- | --- |',
    ]
    for recipe, config in RECIPES.items():
        params = sum(p.numel() for p in build_model(config).parameters()) / 1e6
        times = _time_recipe(replace(config, seed=seed), seed, steps)
        base = float(np.median(times[next(iter(VARIANTS))]))
        for name, ts in times.items():
            a = np.asarray(ts)
            p50 = float(np.median(a))
            p99, run_min = np.percentile(a, 99), p50 * default_run / 60
            lines.append(
                f'| {recipe}, {params:.1f} M parameters | {name} | {p50:.3f} | {p99:.3f} | '
                f'{p50 / base:.2f} | {run_min:.0f} min |'
            )
    body = '\n'.join(lines)
    if doc is not None:
        update_section(doc, 'training-speed', body)
    return body
