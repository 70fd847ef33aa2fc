# Copyright 2026 The pkg_perception Authors
# SPDX-License-Identifier: Apache-2.0
"""Benchmarks that print figures and keep them in docs/benchmarks.md (one section each)."""

from __future__ import annotations

import os
import platform
import re
import tempfile
import time
from pathlib import Path

import numpy as np

from pkg_perception.sim.record import record_bag
from pkg_perception.sim.simulator import ConveyorSimulator, SimConfig


def machine_description() -> str:
    """CPU model and core count, for the record."""
    model = platform.processor() or platform.machine()
    try:
        for line in Path('/proc/cpuinfo').read_text().splitlines():
            if line.startswith('model name'):
                model = line.split(':', 1)[1].strip()
                break
    except OSError:
        pass
    return f'{model}, {os.cpu_count()} cores, Python {platform.python_version()}'


def update_section(doc: Path, name: str, body: str) -> None:
    """Replace (or append) the section between this benchmark's markers in `doc`."""
    begin, end = f'<!-- {name}:begin -->', f'<!-- {name}:end -->'
    block = f'{begin}\n{body.rstrip()}\n{end}'
    text = (
        doc.read_text()
        if doc.exists()
        else '# Benchmarks\n\nFigures written by the benchmark commands; rerun them to refresh.\n'
    )
    pattern = re.compile(re.escape(begin) + '.*?' + re.escape(end), re.S)
    text = (
        pattern.sub(lambda _: block, text)
        if pattern.search(text)
        else text.rstrip() + '\n\n' + block + '\n'
    )
    doc.parent.mkdir(parents=True, exist_ok=True)
    doc.write_text(text)


def benchmark_simulator(*, frames: int, seed: int, doc: Path | None) -> str:
    """Frame generation at 640x480 with piles: per-frame latency and recording throughput."""
    config = SimConfig(scene='piles')
    sim = ConveyorSimulator(config, seed)
    sim.frame(0)  # warm-up: builds the layout and the static background
    lat = []
    for k in range(1, frames + 1):
        t = time.perf_counter()
        sim.frame(k)
        lat.append(time.perf_counter() - t)
    lat_ms = np.array(lat) * 1e3
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for workers in sorted({1, min(2, os.cpu_count() or 1)}):
            res = record_bag(
                Path(tmp) / f'w{workers}',
                frames=frames,
                seed=seed,
                config=config,
                workers=workers,
                progress=False,
            )
            size = sum(f.stat().st_size for f in res.path.iterdir()) / res.frames / 1e6
            rows.append((workers, res.frames / res.seconds, size))
    p50, p99 = np.percentile(lat_ms, [50, 99])
    lines = [
        '## Simulator: frames generated per second (640x480, piles)',
        '',
        f'Machine: {machine_description()}. Command: `pkg-perception benchmark-sim '
        f'--frames {frames} --seed {seed}`. Target: at least 20 frames/s.',
        '',
        '| measure | value |',
        '| --- | --- |',
        f'| render + sensor model + ground truth, one process: p50 | {p50:.1f} ms '
        f'({1e3 / p50:.1f} frames/s) |',
        f'| same, p99 | {p99:.1f} ms |',
    ]
    for workers, fps, _ in rows:
        lines.append(
            f'| recording to mcap with {workers} worker(s), end to end | {fps:.1f} frames/s |'
        )
    lines.append(f'| bag size per frame | {rows[-1][2]:.2f} MB |')
    best = max(r[1] for r in rows)
    lines += [
        '',
        f'Best end-to-end rate: {best:.1f} frames/s; target 20 frames/s '
        f'{"met" if best >= 20 else "not met"} ({best / 20:.2f}x of target).',
    ]
    body = '\n'.join(lines)
    if doc is not None:
        update_section(doc, 'simulator', body)
    return body
