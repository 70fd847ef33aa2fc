# Copyright 2026 The pkg_perception Authors
# SPDX-License-Identifier: Apache-2.0
"""Record a simulated conveyor camera into a bag: parallel rendering, ordered writing.

Frames depend only on (seed, index), so they can be rendered in worker processes and still
give a byte-identical bag. Workers render while this process writes, so even one worker
overlaps rendering with writing where there is a second core. Where processes fork, workers
start from this process's simulator (static background and first parcels already done)
instead of building their own, and each uses its share of the cores for ray casting, so two
workers do not oversubscribe two cores. Ctrl-C (SIGINT) or SIGTERM stops after the current
frame and leaves a valid bag with what was written.
"""

from __future__ import annotations

import contextlib
import itertools
import multiprocessing as mp
import os
import signal
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from pkg_perception.bag.writer import SimBagWriter
from pkg_perception.errors import ConfigError
from pkg_perception.sim.simulator import (
    BASE_FRAME,
    CONVEYOR_FRAME,
    ConveyorSimulator,
    SimConfig,
    SimFrame,
)

_WORKER_SIM: ConveyorSimulator | None = None


def _init_worker(
    sim: ConveyorSimulator | None, config: SimConfig, seed: int, threads: int
) -> None:
    """Set up a worker: the parent's simulator where forked (`sim`), else a new one."""
    global _WORKER_SIM  # one simulator per worker process, built once
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when to stop...
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # ...and ends workers with SIGTERM
    _WORKER_SIM = sim if sim is not None else ConveyorSimulator(config, seed)
    _WORKER_SIM.renderer.threads = threads


def _render(index: int) -> SimFrame:
    assert _WORKER_SIM is not None
    return _WORKER_SIM.frame(index)


@dataclass(frozen=True)
class RecordResult:
    """What a recording produced."""

    path: Path
    frames: int
    requested: int
    interrupted: bool
    seconds: float


class _StopFlag:
    """Turns SIGINT/SIGTERM into a flag checked between frames."""

    def __init__(self) -> None:
        self.set = False
        self._old: dict[int, Any] = {}

    def __enter__(self) -> _StopFlag:
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(ValueError):  # not the main thread: leave signals alone
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, _frame: object) -> None:
        self.set = True

    def __exit__(self, *exc: object) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)


def _pool(sim: ConveyorSimulator, config: SimConfig, seed: int, workers: int) -> Any:
    """A pool of `workers` rendering processes, each ray casting on its share of the cores."""
    threads = max(1, (os.cpu_count() or 1) // workers)
    if 'fork' in mp.get_all_start_methods():
        # Forked workers inherit `sim` as it is (nothing is pickled): no second static render.
        ctx = mp.get_context('fork')
        return ctx.Pool(workers, initializer=_init_worker, initargs=(sim, config, seed, threads))
    ctx = mp.get_context()
    return ctx.Pool(workers, initializer=_init_worker, initargs=(None, config, seed, threads))


def record_bag(
    out: Path,
    *,
    frames: int,
    seed: int,
    config: SimConfig | None = None,
    storage: str = 'mcap',
    overwrite: bool = False,
    workers: int = 1,
    progress: bool = True,
) -> RecordResult:
    """Simulate `frames` frames and write them, with /tf_static and ground truth, to `out`."""
    if frames < 1:
        raise ConfigError(f'--frames must be at least 1, got {frames}')
    if workers < 1:
        raise ConfigError(f'--workers must be at least 1, got {workers}')
    config = config or SimConfig()
    sim = ConveyorSimulator(config, seed)
    start = time.perf_counter()
    written = 0
    pool = None
    with _StopFlag() as stop, SimBagWriter(out, storage=storage, overwrite=overwrite) as bag:
        bag.write_static_transforms(
            sim.transforms,
            [(BASE_FRAME, CONVEYOR_FRAME), (CONVEYOR_FRAME, config.frame_id)],
            config.start_time_ns,
        )
        try:
            bar = tqdm(
                total=frames, unit='frame', desc=f'simulate {out.name}', disable=not progress
            )
            # The first frame is rendered here: it lays out the first parcels, which forked
            # workers then inherit. With one core, one worker would only add copying.
            first = sim.frame(0)
            rest: Iterable[SimFrame] = (sim.frame(k) for k in range(1, frames))
            if frames > 1 and (workers > 1 or (os.cpu_count() or 1) > 1):
                pool = _pool(sim, config, seed, workers)
                rest = pool.imap(_render, range(1, frames), chunksize=1)
            for frame in itertools.chain([first], rest):
                bag.write_frame(
                    stamp_ns=frame.stamp_ns,
                    camera=sim.camera,
                    color=frame.color,
                    depth_mm=frame.depth_mm,
                    instance_ids=frame.instance_ids,
                    truth=frame.truth,
                )
                written += 1
                bar.update()
                if stop.set:
                    break
            bar.close()
        finally:
            if pool is not None:
                pool.terminate()
                pool.join()
    return RecordResult(out, written, frames, written < frames, time.perf_counter() - start)
