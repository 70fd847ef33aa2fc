# Copyright 2026 The pkg_perception Authors
# SPDX-License-Identifier: Apache-2.0
"""Where AP50 is lost: what became of each visible parcel, by class and by visible area.

COCO AP says how much a segmenter loses, not why. Each ground-truth parcel is judged against
the masks of its frame, each mask once under its top class, at COCO's loosest overlap:

- found: a mask overlaps it with IoU >= 0.5 and names its class;
- wrong class: such a mask names another class (grouping right, classification wrong);
- merged: no mask reaches 0.5, but one covers more than half of it (joined with a neighbour);
- split: no mask reaches 0.5, and two or more each cover a sizeable share of it;
- missed: none of these (a sliver nothing covers, or a mask far off).

Fixing merges and splits is a matter of grouping, wrong classes one of classification,
and misses of slivers mostly; the split by visible area shows which parcels are at stake.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils

OUTCOMES = ('found', 'wrong_class', 'merged', 'split', 'missed')
MATCH_IOU = 0.5
MERGED_COVER = 0.5  # one mask holding more than this share of a parcel has swallowed it
SPLIT_COVER = 0.15  # a mask holding at least this share of a parcel is one of its pieces
AREA_EDGES = (100, 400, 1600, 6400)  # visible pixels: slivers up to whole parcels


def judge_frame(
    truth: Sequence[tuple[dict[str, Any], int]], masks: Sequence[tuple[dict[str, Any], int]]
) -> list[str]:
    """One outcome per (RLE, class) of `truth`, against one frame's (RLE, class) masks."""
    if not truth:
        return []
    if not masks:
        return ['missed'] * len(truth)
    gt_rles = [r for r, _ in truth]
    dt_rles = [r for r, _ in masks]
    iou = np.asarray(mask_utils.iou(dt_rles, gt_rles, [0] * len(gt_rles)), dtype=np.float64)
    iou = iou.reshape(len(masks), len(truth))
    gt_area = mask_utils.area(gt_rles).astype(np.float64)
    dt_area = mask_utils.area(dt_rles).astype(np.float64)
    # IoU = I / (A + B - I), so the intersection follows without intersecting again.
    inter = iou * (dt_area[:, None] + gt_area[None, :]) / (1.0 + iou)
    cover = inter / np.maximum(gt_area[None, :], 1.0)
    outcomes = []
    for j, (_, cls) in enumerate(truth):
        best = int(iou[:, j].argmax())
        if iou[best, j] >= MATCH_IOU:
            outcomes.append('found' if masks[best][1] == cls else 'wrong_class')
        elif cover[:, j].max() > MERGED_COVER:
            outcomes.append('merged')
        elif (cover[:, j] >= SPLIT_COVER).sum() >= 2:
            outcomes.append('split')
        else:
            outcomes.append('missed')
    return outcomes


def area_bin(area: float) -> str:
    """The visible-area range a parcel falls in, as '<100', '100-400', ..., '>=6400'."""
    edges = AREA_EDGES
    if area < edges[0]:
        return f'<{edges[0]}'
    for lo, hi in itertools.pairwise(edges):
        if area < hi:
            return f'{lo}-{hi}'
    return f'>={edges[-1]}'


AREA_BINS = tuple(area_bin(a) for a in (0, *AREA_EDGES))


def tally(rows: Iterable[tuple[str, float, str]], labels: Sequence[str]) -> dict[str, Any]:
    """Counts of each outcome by class and by visible area, from (class, area, outcome) rows."""

    def empty() -> dict[str, int]:
        return dict.fromkeys(OUTCOMES, 0)

    by_class = {label: empty() for label in (*labels, 'all')}
    by_area = {b: empty() for b in AREA_BINS}
    for label, area, outcome in rows:
        by_class[label][outcome] += 1
        by_class['all'][outcome] += 1
        by_area[area_bin(area)][outcome] += 1
    return {'by_class': by_class, 'by_area': by_area}


def format_errors(results: Mapping[str, Mapping[str, Any]]) -> str:
    """Markdown: per segmenter, its parcels' outcomes by class, then by visible area."""
    columns = ' | '.join(o.replace('_', ' ') for o in OUTCOMES)
    rule = '|' + '---|' * (len(OUTCOMES) + 2)
    lines = []
    for name, r in results.items():
        errors = r.get('errors')
        if not errors:
            continue
        lines += ['', f'| {name}: class / visible px | parcels | {columns} |', rule]
        for group in ('by_class', 'by_area'):
            for key, counts in errors[group].items():
                total = sum(counts.values())
                cells = ' | '.join(_share(counts[o], total) for o in OUTCOMES)
                lines.append(f'| {key} | {total} | {cells} |')
    return '\n'.join(lines).strip('\n')


def _share(n: int, total: int) -> str:
    return f'{n} ({n / total:.0%})' if total else '0'
