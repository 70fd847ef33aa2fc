# Copyright 2026 The pkg_perception Authors
# SPDX-License-Identifier: Apache-2.0
"""Metrics of a replay: from results.jsonl, against the bag's ground truth when it has one.

Everything is computed from the written records (not from the live pipeline), so a result
file evaluates the same way on any machine, and results of several bags can be merged
before evaluating. Without ground truth only counts and latency are reported.
"""

from __future__ import annotations

import contextlib
import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pkg_perception.bag.topics import TopicMap
from pkg_perception.classes import ParcelClass

METRICS_SCHEMA = 'pkg_perception/metrics/v1'
PERCENTILES = (50, 95, 99)
MATCH_IOU = 0.5  # a detection matches a ground-truth parcel at this mask IoU (per-frame F1)


def latency_stats(values: Sequence[float]) -> dict[str, float]:
    """p50 / p95 / p99 / mean / max of milliseconds (NaN when there are none)."""
    a = np.asarray([v for v in values if math.isfinite(v)], dtype=np.float64)
    if a.size == 0:
        return {'p50': math.nan, 'p95': math.nan, 'p99': math.nan, 'mean': math.nan, 'max': 0.0}
    p = np.percentile(a, PERCENTILES)
    return {
        'p50': float(p[0]),
        'p95': float(p[1]),
        'p99': float(p[2]),
        'mean': float(a.mean()),
        'max': float(a.max()),
    }


def latency_summary(records: Sequence[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Per stage (every key the pipeline timed, 'total' last) -> latency_stats."""
    stages: list[str] = []
    for rec in records:
        for k in rec['timings_ms']:
            if k not in stages:
                stages.append(k)
    stages.sort(key=lambda s: s == 'total')
    return {s: latency_stats([r['timings_ms'].get(s, math.nan) for r in records]) for s in stages}


def count_summary(records: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """What was found: parcels and grasps per frame, classes, tracks, flags."""
    n = len(records)
    classes: Counter[str] = Counter()
    flags: Counter[str] = Counter()
    tracks: set[int] = set()
    kinds: Counter[str] = Counter()
    parcels = grasps = 0
    for rec in records:
        parcels += len(rec['parcels'])
        grasps += len(rec['grasps'])
        classes.update(p['class'] for p in rec['parcels'])
        tracks.update(int(p['id']) for p in rec['parcels'])
        flags.update(rec['flags'])
        kinds.update(g['kind'] for g in rec['grasps'][:1])
    return {
        'frames': n,
        'parcels': parcels,
        'parcels_per_frame': parcels / n if n else 0.0,
        'grasps_per_frame': grasps / n if n else 0.0,
        'frames_with_grasp': sum(1 for r in records if r['grasps']),
        'track_ids': len(tracks),
        'per_class': {c.label: classes.get(c.label, 0) for c in ParcelClass},
        'best_grasp_kind': dict(kinds),
        'flags': dict(flags),
    }


@dataclass
class FrameScore:
    """One frame's quality, for picking the best and worst frames to show."""

    frame: int
    stamp_ns: int
    total_ms: float
    gt: int = 0  # ground-truth parcels in view
    matched: int = 0  # detections matching one at IoU >= MATCH_IOU
    detections: int = 0
    top_grasp_ok: bool | None = None  # the best grasp passed the rule (None: no grasp)
    graspable: int = 0  # graspable parcels in view
    served: int = 0  # of them, with at least one successful candidate

    @property
    def f1(self) -> float:
        """2 TP / (2 TP + FP + FN); 1.0 for an empty frame with no detections."""
        denom = self.gt + self.detections
        return 1.0 if denom == 0 else 2.0 * self.matched / denom


@dataclass
class Evaluation:
    """metrics.json content plus what the report draws."""

    metrics: dict[str, Any]
    frames: list[FrameScore]

    def pick(self, count: int) -> tuple[list[FrameScore], list[FrameScore]]:
        """(best, worst) frames: by F1 with ground truth, else fastest and slowest."""
        if self.metrics.get('ground_truth'):
            ranked = sorted(self.frames, key=lambda f: (-f.f1, -f.gt, f.frame))
        else:
            ranked = sorted(self.frames, key=lambda f: (f.total_ms, f.frame))
        count = min(count, len(ranked) // 2 or len(ranked))
        return ranked[:count], ranked[::-1][:count]


def _detections(rec: dict[str, Any], image_id: int) -> list[dict[str, Any]]:
    """COCO detections of a record: each mask under its class, then its alternatives."""
    from pkg_perception.evaluation.segmentation import mask_detections

    out = []
    for d in [*rec['parcels'], *rec.get('unlifted', [])]:
        if 'mask' not in d:
            continue
        rle = {'size': d['mask']['size'], 'counts': d['mask']['counts']}
        labels = [(d['class'], d['score']), *d.get('alternatives', ())]
        classes = [(ParcelClass.from_label(label), score) for label, score in labels]
        out += mask_detections(image_id, rle, classes)
    return out


def _matches(dets: list[dict[str, Any]], gts: list[dict[str, Any]]) -> int:
    """Greedy one-to-one matches at IoU >= MATCH_IOU, best score first (as COCO does)."""
    from pycocotools import mask as mask_utils

    if not dets or not gts:
        return 0
    order = sorted(range(len(dets)), key=lambda i: -dets[i]['score'])
    iou = mask_utils.iou(
        [dets[i]['segmentation'] for i in order],
        [g['segmentation'] for g in gts],
        [0] * len(gts),
    )
    taken: set[int] = set()
    matched = 0
    for row in np.atleast_2d(iou):
        best, best_iou = -1, MATCH_IOU
        for j, v in enumerate(row):
            if j not in taken and v >= best_iou:
                best, best_iou = j, v
        if best >= 0:
            taken.add(best)
            matched += 1
    return matched


def evaluate_records(
    records: Sequence[dict[str, Any]],
    *,
    bag: Path | None,
    topics: TopicMap | None = None,
    progress: bool = False,
    cup_radius: float | None = None,
) -> Evaluation:
    """Metrics of replayed frames; ground-truth metrics when `bag` has simulator truth.

    `bag` is the replay's output bag (it carries the input topics) or the input bag;
    records are matched to its frames by stamp. `cup_radius` (metres) is the grasp rule's
    edge distance: the replayed config's, so the rule judges the tool that was planned for.
    """
    from pkg_perception.bag.reader import BagFrameReader

    records = list(records)
    frames = [
        FrameScore(int(r['frame']), int(r['stamp_ns']), float(r['timings_ms'].get('total', 0)))
        for r in records
    ]
    metrics: dict[str, Any] = {
        'schema': METRICS_SCHEMA,
        'ground_truth': False,
        'counts': count_summary(records),
        'latency_ms': latency_summary(records),
    }
    total = metrics['latency_ms'].get('total', {}).get('mean', math.nan)
    metrics['fps'] = 1e3 / total if total and math.isfinite(total) else math.nan
    evaluation = Evaluation(metrics, frames)
    if bag is None:
        return evaluation
    with BagFrameReader(bag, topics=topics) as reader:
        if not reader.has_ground_truth:
            return evaluation
        _score_against_truth(
            reader.frames(), records, evaluation, progress=progress, cup_radius=cup_radius
        )
    return evaluation


def _score_against_truth(
    bag_frames: Iterable[Any],
    records: Sequence[dict[str, Any]],
    evaluation: Evaluation,
    *,
    progress: bool,
    cup_radius: float | None,
) -> None:
    from tqdm import tqdm

    from pkg_perception.errors import InputError
    from pkg_perception.evaluation.grasps import GraspScorer
    from pkg_perception.evaluation.segmentation import SegmentationScorer, is_pile_frame
    from pkg_perception.records import result_from_record

    by_stamp = {int(r['stamp_ns']): k for k, r in enumerate(records)}
    scorer = SegmentationScorer()
    motion = GraspScorer(cup_radius=cup_radius) if cup_radius else GraspScorer()
    name = 'replay'
    scorer.dt[name] = []
    seen = 0
    bar = tqdm(total=len(records), desc='evaluate', unit='frame', disable=not progress)
    for frame in bag_frames:
        k = by_stamp.get(frame.stamp_ns)
        if k is None or frame.ground_truth is None:
            continue
        rec, gt = records[k], frame.ground_truth
        classes = {p.parcel_id: p.parcel_class for p in gt.truth.parcels}
        before = len(scorer.gt)
        image_id = scorer.add_truth(gt.instance_ids, classes, is_pile_frame(gt.truth))
        gts = scorer.gt[before:]
        dets = _detections(rec, image_id)
        scorer.dt[name].extend(dets)
        score = evaluation.frames[k]
        firsts = [d for d in dets if d['top_class']]  # one per mask
        score.gt, score.detections = len(gts), len(firsts)
        score.matched = _matches(firsts, gts)
        with contextlib.suppress(InputError):  # no conveyor transform: masks only
            checked = motion.add(result_from_record(rec), frame)
            if checked is not None:
                score.top_grasp_ok = None if checked.top is None else bool(checked.top.success)
                score.graspable, score.served = len(checked.graspable), len(checked.served)
        seen += 1
        bar.update()
    bar.close()
    if not seen:
        return
    m = evaluation.metrics
    m['ground_truth'] = True
    m['frames_with_truth'] = seen
    seg = scorer.scores(name)
    m['segmentation'] = {
        **seg['all'],
        'piles': seg['piles'],
        'pile_frames': seg['pile_frames'],
        'per_class': seg['per_class'],
        'top_class': seg['top_class'],
        'class_agnostic': seg['class_agnostic'],
        'f1_at_50': _f1(evaluation.frames),
    }
    m.update(motion.summary())


def _f1(frames: Sequence[FrameScore]) -> float:
    tp = sum(f.matched for f in frames)
    denom = sum(f.gt + f.detections for f in frames)
    return 1.0 if denom == 0 else 2.0 * tp / denom
