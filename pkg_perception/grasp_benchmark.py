# Copyright 2026 The pkg_perception Authors
# SPDX-License-Identifier: Apache-2.0
"""Grasp benchmark: latency of lifting + grasp planning + tracking, and grasp accuracy.

Latency is measured on frames with ten parcels in view (a wide-angle camera 1.6 m above a
1 m belt, mixed scene), with ground-truth masks so segmentation cost and quality stay out
of it. Accuracy is top-1 success, recall of graspable parcels and tracking id consistency
on a held-out simulated bag, with ground-truth masks and with the geometric baseline.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pkg_perception.benchmarks import machine_description, update_section
from pkg_perception.frames import RGBDFrame
from pkg_perception.grasping import GraspConfig
from pkg_perception.pipeline import Pipeline
from pkg_perception.segmentation.oracle import GroundTruthSegmenter
from pkg_perception.sim.simulator import ConveyorSimulator, SimConfig

# Ten parcels in view: a D455-like wide field of view from 1.6 m over a 1 m belt.
DENSE = SimConfig(
    scene='mixed',
    camera_height=(1.6, 1.6),
    belt_width=(1.0, 1.0),
    camera_presets=('realsense_d455',),
)
STAGES = ('lift', 'grasp', 'track')
# Passes over the frames. This machine's speed drifts by tens of percent for seconds at a
# time; ten passes (about 7 s) give a median that one slow second does not set.
REPEATS = 10


def simulated_frames(config: SimConfig, seed: int, count: int) -> Iterator[RGBDFrame]:
    """Frames straight from the simulator, as BagFrameReader would deliver them."""
    sim = ConveyorSimulator(config, seed)
    return (sim.rgbd_frame(k) for k in range(count))


def time_pipeline(
    frames: Sequence[RGBDFrame], *, parcels: int, repeats: int = REPEATS
) -> tuple[np.ndarray, dict[str, np.ndarray], int]:
    """Per-frame lift + grasp + track milliseconds over frames with `parcels` parcels.

    The frames are processed in order (tracking needs the sequence) `repeats` times after
    one warm-up pass; segmentation is done once up front and replayed, so its cost stays
    out. Returns the wall-clock totals (pass after pass), the per-stage times plus 'cpu'
    (the thread's CPU time for the whole `process` call, which other processes on the
    machine cannot inflate by preempting it) and how many frames qualified.
    """
    segmenter = GroundTruthSegmenter()
    pipe = Pipeline(segmenter)
    segs = [segmenter.segment(f, pipe.belt_plane(f)[0]) for f in frames]
    replay = _Replay(segs)
    pipe = Pipeline(replay)
    totals: list[float] = []
    stages: dict[str, list[float]] = {s: [] for s in (*STAGES, 'cpu')}
    qualifying = 0
    for rep in range(repeats + 1):
        pipe.reset()
        replay.index = 0
        for frame in frames:
            cpu = time.thread_time()
            result = pipe.process(frame)
            cpu = time.thread_time() - cpu
            if rep == 0 or len(result.parcels) != parcels:
                continue
            qualifying += rep == 1
            t = result.timings_ms
            totals.append(sum(t[s] for s in STAGES))
            for s in STAGES:
                stages[s].append(t[s])
            stages['cpu'].append(cpu * 1e3)
    return np.array(totals), {s: np.array(v) for s, v in stages.items()}, qualifying


class _Replay:
    """A segmenter that hands out precomputed segmentations in order."""

    name = 'ground-truth'
    provider = 'simulator'

    def __init__(self, segs: list[Any]) -> None:
        self.segs = segs
        self.index = 0

    def segment(self, frame: RGBDFrame, belt: Any, belt_velocity: Any = None) -> Any:
        seg = self.segs[self.index % len(self.segs)]
        self.index += 1
        return seg


TRUTH_PILE_ORDER_ROW = 'ground-truth, pile order from the simulator'


def accuracy_rows(
    bag: Path, grasping: GraspConfig, *, truth_pile_order: bool = False
) -> list[tuple[str, dict[str, Any]]]:
    """(masks, summary) with ground-truth masks and, when present, the baseline.

    With `truth_pile_order`, one more row: ground-truth masks and the simulator's pile order
    among the parcels in view, the most a better pile order could give.
    """
    from pkg_perception.evaluation.grasps import evaluate_bag

    segmenters: list[Any] = [GroundTruthSegmenter()]
    try:
        from pkg_perception.segmentation.geometric import GeometricSegmenter

        segmenters.append(GeometricSegmenter())
    except ImportError:  # the baseline is optional for this benchmark
        pass
    rows = [
        (getattr(s, 'name', type(s).__name__), evaluate_bag(bag, s, grasping=grasping).summary)
        for s in segmenters
    ]
    if truth_pile_order:
        truth = evaluate_bag(bag, segmenters[0], grasping=grasping, pile_order='truth-in-view')
        rows.append((TRUTH_PILE_ORDER_ROW, truth.summary))
    return rows


def benchmark_grasping(
    *,
    frames: int,
    seed: int,
    bags: Sequence[tuple[Path, str]] = (),
    doc: Path | None,
    truth_pile_order: bool = False,
) -> str:
    """Run both parts and write the section between the grasping markers of `doc`.

    Args:
        frames: frames to simulate for the latency part.
        seed: simulator seed for them.
        bags: (held-out bag, how it was recorded) for the accuracy part.
        doc: markdown file to update, or None.
        truth_pile_order: add the row with the simulator's pile order (`accuracy_rows`).
    """
    rendered = list(simulated_frames(DENSE, seed, frames))
    totals, stages, count = time_pipeline(rendered, parcels=10)
    passes = np.median(totals.reshape(REPEATS, -1), axis=1) if count else np.zeros(0)
    command = f'pkg-perception benchmark-grasps --frames {frames} --seed {seed}'
    for path, _ in bags:
        command += f' --bag {path.name}'
    if truth_pile_order:
        command += ' --truth-pile-order'
    lines = [
        '## Grasping: lifting + grasp planning + tracking',
        '',
        f'Machine: {machine_description()}. Command: `{command}`.',
        '',
        f'Latency over the {count} frames with exactly 10 parcels among {frames} simulated '
        f'640x480 frames (mixed scene, wide-angle camera 1.6 m above a 1 m belt, seed {seed}), '
        f'ground-truth masks (segmentation is not part of this figure), each frame timed '
        f'{REPEATS} times after a warm-up pass. CPU is the thread time of the whole '
        '`Pipeline.process` call, which other processes cannot inflate by preempting it. '
        'Target: p50 <= 5 ms.',
        '',
        '| stage | p50 | p99 |',
        '| --- | --- | --- |',
    ]
    for s in STAGES:
        lines.append(f'| {s} | {_pct(stages[s], 50)} | {_pct(stages[s], 99)} |')
    p50 = float(np.percentile(totals, 50)) if len(totals) else math.nan
    lines.append(f'| **lift + grasp + track** | **{_pct(totals, 50)}** | {_pct(totals, 99)} |')
    lines.append(
        f'| CPU time of `process` | {_pct(stages["cpu"], 50)} | {_pct(stages["cpu"], 99)} |'
    )
    lines += ['', f'Target p50 <= 5 ms {"met" if p50 <= 5.0 else "not met"} ({p50:.2f} ms).']
    if len(passes):
        lines[-1] += (
            f' The p50 of each of the {REPEATS} passes: {passes.min():.2f} to '
            f'{passes.max():.2f} ms ({int((passes <= 5.0).sum())} of {REPEATS} at or under 5 ms).'
        )
    if bags:
        lines += [
            '',
            'Accuracy on held-out bags (rule: a grasp succeeds on the visible top face of a '
            'parcel nothing rests on, at least a cup radius inside its edge, normal error <= '
            "10 degrees, position error <= 5 mm beyond the face's flatness; targets: top-1 >= "
            '99 %, recall >= 95 %, id consistency >= 99 %). Recall counts the parcels the '
            'ground truth calls graspable whose top face is at least a cup radius + 5 mm wide '
            'on each side of its middle; "any face" counts all of them. Id consistency is '
            'over every frame a parcel was detected, and over those showing at least half its '
            'top face.'
            + (
                f' The "{TRUTH_PILE_ORDER_ROW}" rows replace the pipeline\'s pile order with '
                "the simulator's among the parcels in view: the most a better pile order "
                'from this view could give.'
                if truth_pile_order
                else ''
            ),
            '',
            '| bag | masks | top-1 success | recall | recall, any face | id consistency | '
            'id consistency, face visible |',
            '| --- | --- | --- | --- | --- | --- | --- |',
        ]
        for path, note in bags:
            rows = accuracy_rows(path, GraspConfig(), truth_pile_order=truth_pile_order)
            for name, summary in rows:
                g, t = summary['grasping'], summary['tracking']
                lines.append(
                    f'| {note or path.name} | {name} | {_rate(g["top1_success"])} '
                    f'({g["top1_successes"]}/{g["frames_with_grasp"]}) | {_rate(g["recall"])} '
                    f'({g["served_parcel_frames"]}/{g["graspable_parcel_frames"]}) | '
                    f'{_rate(g["recall_any_face"])} | {_rate(t["id_consistency"])} '
                    f'({t["id_switches"]} switches, {t["parcels"]} parcels) | '
                    f'{_rate(t["id_consistency_face_visible"])} |'
                )
    body = '\n'.join(lines)
    if doc is not None:
        update_section(doc, 'grasping', body)
    return body


def _pct(values: np.ndarray, q: float) -> str:
    return f'{np.percentile(values, q):.2f} ms' if len(values) else 'n/a'


def _rate(value: float) -> str:
    return 'n/a' if value != value else f'{100.0 * value:.1f} %'
