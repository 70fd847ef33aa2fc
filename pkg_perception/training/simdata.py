# Copyright 2026 The pkg_perception Authors
# SPDX-License-Identifier: Apache-2.0
"""Training data from the simulator, rendered once into shards (one per seed) and cached.

Each seed is a new cell (camera, height, tilt, lighting, belt) and a new stream of parcels;
frames within a seed are spaced so the belt has moved on. Shards that exist are reused, so
an interrupted build resumes, and the cache can be shared between runs.
"""

from __future__ import annotations

from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from pkg_perception.errors import ConfigError
from pkg_perception.frames import depth_from_millimetres
from pkg_perception.processes import worker_context
from pkg_perception.segmentation.belt import BeltPlane
from pkg_perception.segmentation.inputs import InputSpec
from pkg_perception.sim import SIM_VERSION
from pkg_perception.sim.simulator import ConveyorSimulator, SimConfig
from pkg_perception.training.samples import SHARD_KEYS, make_sample, stack

# Piles are the hard case, so they get the largest share.
SCENE_CYCLE = ('piles', 'mixed', 'piles', 'rows', 'mixed', 'sparse', 'piles', 'mixed')
# Bumped when a shard's arrays change (2: instance indices for the embedding loss), so a
# cache rendered for other targets is never read as this one.
TARGETS_VERSION = 2


@dataclass(frozen=True)
class SimDataPlan:
    """Which simulated frames make up a training set."""

    first_seed: int = 10_000
    seeds: int = 250
    frames_per_seed: int = 16
    frame_step: int = 12  # frames between samples: 0.8 s, the belt moves ~24 cm
    width: int = 640
    height: int = 480

    def seed_list(self) -> list[int]:
        return list(range(self.first_seed, self.first_seed + self.seeds))

    @property
    def frames(self) -> int:
        return self.seeds * self.frames_per_seed


def scene_for(seed: int) -> str:
    return SCENE_CYCLE[seed % len(SCENE_CYCLE)]


def render_shard(
    plan: SimDataPlan, spec: InputSpec, output_stride: int, seed: int, path: Path
) -> Path:
    """Render one seed's frames into `path` (written atomically)."""
    config = SimConfig(width=plan.width, height=plan.height, scene=scene_for(seed))
    sim = ConveyorSimulator(config, seed)
    belt = BeltPlane.from_extrinsics(sim.conveyor_from_camera)
    samples = []
    for k in range(plan.frames_per_seed):
        f = sim.frame(k * plan.frame_step)
        class_of = {p.parcel_id: int(p.parcel_class) for p in f.truth.parcels}
        depth = depth_from_millimetres(f.depth_mm)
        samples.append(
            make_sample(
                spec, f.color, depth, sim.camera, belt, f.instance_ids, class_of, output_stride
            )
        )
    tmp = path.with_suffix('.tmp.npz')
    np.savez(tmp, **stack(samples))
    tmp.replace(path)
    return path


def build_sim_dataset(
    cache: Path,
    plan: SimDataPlan,
    spec: InputSpec,
    output_stride: int,
    *,
    workers: int = 2,
    progress: bool = True,
) -> list[Path]:
    """Render every missing shard of `plan` into `cache`; return all shard paths in order."""
    size = f'{spec.width}x{spec.height}_stride{output_stride}_{plan.width}x{plan.height}'
    root = cache / f'sim{SIM_VERSION}_t{TARGETS_VERSION}_{size}'
    root.mkdir(parents=True, exist_ok=True)
    paths = [
        root / f'seed{s}_n{plan.frames_per_seed}_k{plan.frame_step}.npz' for s in plan.seed_list()
    ]
    todo = [(s, p) for s, p in zip(plan.seed_list(), paths, strict=True) if not p.exists()]
    bar = tqdm(
        total=len(paths),
        initial=len(paths) - len(todo),
        desc='rendering',
        unit='seed',
        disable=not progress,
    )
    with bar:
        if workers <= 1:
            for s, p in todo:
                render_shard(plan, spec, output_stride, s, p)
                bar.update()
        else:
            with ProcessPoolExecutor(workers, mp_context=worker_context()) as pool:
                futures = [
                    pool.submit(render_shard, plan, spec, output_stride, s, p) for s, p in todo
                ]
                for fut in futures:
                    fut.result()
                    bar.update()
    return paths


def available_memory() -> int | None:
    """Bytes the kernel could give a process now without swapping (None off Linux)."""
    try:
        with open('/proc/meminfo') as f:
            for line in f:
                if line.startswith('MemAvailable:'):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def load_shards(paths: Iterable[Path]) -> dict[str, np.ndarray]:
    """Concatenate shards into one in-memory set.

    Frames are counted in a first pass (over the smallest array), then every shard is
    copied into arrays of the full size: the peak is the set itself (750 cells: 11 GB),
    not the set twice as with a concatenate. A set that cannot fit is refused before any
    copy: the kernel would otherwise kill the run without a word.
    """
    paths = list(paths)
    counts = []
    for p in paths:
        with np.load(p) as shard:
            counts.append(len(shard['edge']))
    if paths and counts[0]:
        with np.load(paths[0]) as shard:
            frame_bytes = sum(shard[k].nbytes for k in SHARD_KEYS) / counts[0]
        _check_fits(frame_bytes * sum(counts), frame_bytes * counts[0])
    out: dict[str, np.ndarray] = {}
    at = 0
    for p, n in zip(paths, counts, strict=True):
        with np.load(p) as shard:
            for k in SHARD_KEYS:
                part = shard[k]
                if k not in out:
                    out[k] = np.empty((sum(counts), *part.shape[1:]), dtype=part.dtype)
                out[k][at : at + n] = part
        at += n
    return out


def _check_fits(need: float, per_seed: float) -> None:
    free = available_memory()
    # The model, optimizer and batches take a little more; 90 % leaves them room.
    if free is not None and need > 0.9 * free:
        raise ConfigError(
            f'the training set needs {need / 1e9:.1f} GB of memory and only '
            f'{free / 1e9:.1f} GB are available: train on fewer cells (each takes '
            f'{per_seed / 1e6:.0f} MB, so about {int(0.9 * free / per_seed)} fit: --seeds) '
            'or on a machine with more memory'
        )
