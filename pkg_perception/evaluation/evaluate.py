# Copyright 2026 The pkg_perception Authors
# SPDX-License-Identifier: Apache-2.0
"""Evaluate a replay directory (or a results.jsonl): metrics.json and report.html.

Ground truth, and the colour images the report draws on, come from the replay's output bag
(it carries the input topics), else from the input bag named in run.json.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from pkg_perception.bag.topics import TopicMap
from pkg_perception.errors import InputError
from pkg_perception.evaluation.aggregate import Evaluation, FrameScore, evaluate_records
from pkg_perception.evaluation.report import Overlay, frame_title, write_metrics, write_report
from pkg_perception.records import read_records, result_from_record
from pkg_perception.replay import OUTPUT_BAG, RESULTS_FILE, read_run_file

OVERLAYS_PER_GROUP = 3


@dataclass(frozen=True)
class EvaluateResult:
    """Where the outputs went and what they say."""

    metrics: dict[str, Any]
    metrics_path: Path
    report_path: Path


def locate_results(path: Path) -> tuple[Path, Path]:
    """(results.jsonl, its run directory) for a replay directory or a results file.

    Raises:
        InputError: neither.
    """
    if path.is_dir() and (path / RESULTS_FILE).is_file():
        return path / RESULTS_FILE, path
    if path.is_file() and path.suffix == '.jsonl':
        return path, path.parent
    raise InputError(
        f'{path} is neither a replay directory (with {RESULTS_FILE}) nor a results .jsonl file'
    )


def is_bag(path: Path) -> bool:
    """A rosbag2 directory or storage file (evaluate replays it first)."""
    if path.is_dir():
        return (path / 'metadata.yaml').is_file() or any(
            p.suffix in ('.mcap', '.db3') for p in path.iterdir()
        )
    return path.suffix in ('.mcap', '.db3')


def truth_bag(run_dir: Path, run: dict[str, Any]) -> Path | None:
    """The bag holding ground truth and images: the replay's output, else its input."""
    out = run_dir / OUTPUT_BAG
    if out.is_dir() and run.get('copy_inputs', True):
        return out
    src = run.get('input_bag')
    return Path(src) if src and Path(src).exists() else None


def evaluate_results(
    path: Path,
    *,
    out: Path | None = None,
    topics: TopicMap | None = None,
    progress: bool = True,
) -> EvaluateResult:
    """Evaluate the replay at `path`; write metrics.json and report.html to `out`.

    `out` defaults to the replay directory.
    """
    results, run_dir = locate_results(path)
    out = out or run_dir
    out.mkdir(parents=True, exist_ok=True)
    run = read_run_file(run_dir)
    records = list(read_records(results))
    if not records:
        raise InputError(f'{results} holds no frame; did the replay process any?')
    if topics is None and run.get('topics'):
        topics = TopicMap(**run['topics'])
    bag = truth_bag(run_dir, run)
    cup = run.get('config', {}).get('grasping.cup_radius')
    evaluation = evaluate_records(
        records, bag=bag, topics=topics, progress=progress, cup_radius=cup
    )
    evaluation.metrics['run'] = {
        k: run[k]
        for k in ('input_bag', 'segmenter', 'provider', 'model', 'damage', 'skipped', 'command')
        if k in run
    }
    overlays = _overlays(evaluation, records, bag, topics, cup) if bag is not None else []
    metrics_path = write_metrics(evaluation.metrics, out / 'metrics.json')
    report_path = write_report(evaluation, records, run, overlays, out / 'report.html')
    return EvaluateResult(evaluation.metrics, metrics_path, report_path)


def _overlays(
    evaluation: Evaluation,
    records: Sequence[dict[str, Any]],
    bag: Path,
    topics: TopicMap | None,
    cup_radius: float | None,
) -> list[tuple[str, list[Overlay]]]:
    """Draw the best and worst frames (a second pass over the bag: only they are kept)."""
    from pkg_perception.bag.reader import BagFrameReader
    from pkg_perception.errors import BagError

    best, worst = evaluation.pick(OVERLAYS_PER_GROUP)
    gt = bool(evaluation.metrics.get('ground_truth'))
    wanted: dict[int, FrameScore] = {s.stamp_ns: s for s in (*best, *worst)}
    by_stamp = {int(r['stamp_ns']): r for r in records}
    drawn: dict[int, Overlay] = {}
    try:
        with BagFrameReader(bag, topics=topics) as reader:
            for frame in reader.frames():
                score = wanted.get(frame.stamp_ns)
                if score is None:
                    continue
                result = result_from_record(by_stamp[frame.stamp_ns])
                image = draw(frame, result, cup_radius)
                drawn[frame.stamp_ns] = Overlay(frame_title(score, gt), image)
                if len(drawn) == len(wanted):
                    break
    except BagError:
        pass  # a damaged bag: draw what was read
    label = ('best', 'worst') if gt else ('fastest', 'slowest')
    return [
        (
            f'{label[0].capitalize()} frames',
            [drawn[s.stamp_ns] for s in best if s.stamp_ns in drawn],
        ),
        (
            f'{label[1].capitalize()} frames',
            [drawn[s.stamp_ns] for s in worst if s.stamp_ns in drawn],
        ),
    ]


def draw(frame: Any, result: Any, cup_radius: float | None = None) -> npt.NDArray[np.uint8]:
    """Masks and ranked grasps, with the ground-truth parcels outlined in white.

    Grasp markers are green where the grasp rule says success, red for a failure, white
    without ground truth.
    """
    from pkg_perception.errors import InputError
    from pkg_perception.evaluation.grasps import GraspScorer
    from pkg_perception.visualize import draw_overlay

    t_cam = np.eye(4)
    if result.frame_id != frame.frame_id and frame.transforms is not None:
        with contextlib.suppress(KeyError):
            t_cam = frame.transforms.lookup(frame.frame_id, result.frame_id)
    verdicts = None
    if frame.ground_truth is not None:
        scorer = GraspScorer(cup_radius=cup_radius) if cup_radius else GraspScorer()
        try:
            checked = scorer.add(result, frame)
            verdicts = [c.success for c in checked.checks] if checked is not None else None
        except InputError:
            verdicts = None
    image = draw_overlay(frame.color, result, frame.camera, t_cam, verdicts=verdicts)
    if frame.ground_truth is not None:
        ids = np.asarray(frame.ground_truth.instance_ids)
        for pid in np.unique(ids[ids > 0]):
            contours, _ = cv2.findContours(
                (ids == pid).astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE
            )
            cv2.drawContours(image, contours, -1, (255, 255, 255), 1)
    return image
