# Copyright 2026 The pkg_perception Authors
# SPDX-License-Identifier: Apache-2.0
"""Record a simulated conveyor camera into a bag: parallel rendering, ordered writing.

Frames depend only on (seed, index), so they can be rendered in worker processes and still
give a byte-identical bag. Workers render while this process writes, so even one worker
overlaps rendering with writing where there is a second core. Each worker builds its own
simulator in a clean process (see `pkg_perception.processes`: forking this one, whose
ray-casting threads are running, can hang a child) and uses its share of the cores for ray
casting, so two workers do not oversubscribe two cores. Ctrl-C (SIGINT) or SIGTERM stops
within a fraction of a second, whatever the workers are doing, and leaves a valid bag with
what was written.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from pkg_perception.bag.writer import SimBagWriter
from pkg_perception.errors import ConfigError
from pkg_perception.processes import worker_context
from pkg_perception.sim.simulator import (
    BASE_FRAME,
    CONVEYOR_FRAME,
    ConveyorSimulator,
    SimConfig,
    SimFrame,
)

_WORKER_SIM: ConveyorSimulator | None = None


_POLL_S = 0.2  # how often the writer looks at the stop flag while it waits for a frame


def _init_worker(config: SimConfig, seed: int, threads: int) -> None:
    """Set up a worker: its own simulator, the same (seed, config) as the parent's."""
    global _WORKER_SIM  # one simulator per worker process, built once
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when to stop...
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # ...and ends workers with SIGTERM
    _WORKER_SIM = ConveyorSimulator(config, seed)
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


def _pool(config: SimConfig, seed: int, workers: int) -> Any:
    """A pool of `workers` rendering processes, each ray casting on its share of the cores."""
    threads = max(1, (os.cpu_count() or 1) // workers)
    return worker_context().Pool(
        workers, initializer=_init_worker, initargs=(config, seed, threads)
    )


def _ready() -> None:
    """A task that completes as soon as one worker has built its simulator."""


def _frames(sim: ConveyorSimulator, pool: Any, frames: int, stop: _StopFlag) -> Iterator[SimFrame]:
    """Frames 0.. in order; ends early, without waiting on a worker, once `stop` is set."""
    started = pool.apply_async(_ready) if pool is not None else None
    # This process renders while the workers start (importing and building a simulator
    # take about a second), and on its own if they never do.
    k = 0
    while k < frames and (started is None or not started.ready()):
        yield sim.frame(k)
        k += 1
    if k == frames:
        return
    rendered = pool.imap(_render, range(k, frames), chunksize=1)
    while not stop.set:
        try:
            yield rendered.next(timeout=_POLL_S)
        except mp.TimeoutError:
            continue
        except StopIteration:
            return


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
            # With one core, one worker would only add copying.
            if frames > 1 and (workers > 1 or (os.cpu_count() or 1) > 1):
                pool = _pool(config, seed, workers)
            for frame in _frames(sim, pool, frames, stop):
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
