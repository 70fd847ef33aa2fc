# Copyright 2026 The pkg_perception Authors
# SPDX-License-Identifier: Apache-2.0
"""COCO mask AP (pycocotools) of segmenters against a simulated bag's instance labels.

Ground truth masks are the simulator's label image at full resolution. Frames where some
parcel rests on another count as pile frames and get their own figures, because piles are
where segmenters fail.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from pkg_perception.classes import ParcelClass
from pkg_perception.evaluation.mask_errors import judge_frame, tally
from pkg_perception.segmentation.instances import Segmentation

CATEGORIES = [{'id': int(c), 'name': c.label} for c in ParcelClass]
MIN_GT_PIXELS = 1  # every visible parcel counts; slivers are hard, and that is the point


def encode(mask: np.ndarray) -> dict[str, Any]:
    """Boolean mask -> COCO RLE with a JSON-safe `counts` string."""
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    rle['counts'] = rle['counts'].decode('ascii')
    return rle


def label_rles(labels: np.ndarray, ids: Iterable[int]) -> dict[int, dict[str, Any]]:
    """RLEs of several labels of one label image, cutting each from its bounding box."""
    out = {}
    h, w = labels.shape
    for i in ids:
        ys, xs = np.nonzero(labels == i)
        if len(xs) == 0:
            continue
        m = np.zeros((h, w), dtype=bool)
        m[ys, xs] = True
        out[int(i)] = encode(m)
    return out


def mask_detections(
    image_id: int, rle: dict[str, Any], classes: Iterable[tuple[ParcelClass, float]]
) -> list[dict[str, Any]]:
    """COCO detections of one mask: its class first, then the others it offers.

    A mask unsure between two classes is scored under both, each with its own score, as COCO
    scores detectors that give a class distribution per mask; `top_class` marks the first,
    which `SegmentationScorer.scores` uses where each mask counts once.
    """
    area, bbox = float(mask_utils.area(rle)), [float(v) for v in mask_utils.toBbox(rle)]
    return [
        {
            'image_id': image_id,
            'category_id': int(cls),
            'segmentation': rle,
            'score': float(score),
            'area': area,
            'bbox': bbox,
            'top_class': rank == 0,
        }
        for rank, (cls, score) in enumerate(classes)
    ]


@dataclass
class SegmentationScorer:
    """Collects ground truth and detections frame by frame, then runs COCOeval."""

    images: list[dict[str, Any]] = field(default_factory=list)
    gt: list[dict[str, Any]] = field(default_factory=list)
    dt: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    pile_images: list[int] = field(default_factory=list)

    def add_truth(self, labels: np.ndarray, classes: Mapping[int, ParcelClass], pile: bool) -> int:
        """Register one frame's ground truth; returns its image id."""
        image_id = len(self.images) + 1
        h, w = labels.shape
        self.images.append({'id': image_id, 'height': h, 'width': w})
        if pile:
            self.pile_images.append(image_id)
        for pid, rle in label_rles(labels, classes).items():
            area = float(mask_utils.area(rle))
            if area < MIN_GT_PIXELS:
                continue
            self.gt.append(
                {
                    'id': len(self.gt) + 1,
                    'image_id': image_id,
                    'category_id': int(classes[pid]),
                    'segmentation': rle,
                    'area': area,
                    'bbox': [float(v) for v in mask_utils.toBbox(rle)],
                    'iscrowd': 0,
                }
            )
        return image_id

    def add_detections(
        self,
        name: str,
        image_id: int,
        seg: Segmentation,
        rles: dict[int, dict[str, Any]] | None = None,
    ) -> dict[int, dict[str, Any]]:
        """One detection per mask and class it offers (`mask_detections`).

        `rles` (label -> RLE) holds masks already encoded for the same label image, so a
        second set of classes for the same masks is not encoded again; returns them.
        """
        dets = self.dt.setdefault(name, [])
        rles = {} if rles is None else rles
        for inst in seg.instances:
            if inst.label not in rles:
                rles[inst.label] = encode(seg.mask(inst))
            classes = ((inst.parcel_class, inst.score), *inst.alternatives)
            dets += mask_detections(image_id, rles[inst.label], classes)
        return rles

    def _coco_gt(self) -> COCO:
        coco = COCO()
        coco.dataset = {'images': self.images, 'annotations': self.gt, 'categories': CATEGORIES}
        with contextlib.redirect_stdout(io.StringIO()):
            coco.createIndex()
        return coco

    def scores(self, name: str) -> dict[str, Any]:
        """AP, AP50, AP75: overall, with the top class only, class-agnostic, per class, piles."""
        gt = self._coco_gt()
        dets = self.dt.get(name, [])
        out: dict[str, Any] = {'frames': len(self.images), 'detections': len(dets)}
        every = [img['id'] for img in self.images]
        out['all'] = _evaluate(gt, dets, every, None)
        firsts = [d for d in dets if d.get('top_class', True)]
        out['top_class'] = _evaluate(gt, firsts, every, None)  # one class per mask
        # Masks matched whatever class was called: what is lost to classification alone.
        out['class_agnostic'] = _evaluate(gt, firsts, every, None, use_classes=False)
        out['piles'] = _evaluate(gt, dets, self.pile_images, None)
        out['pile_frames'] = len(self.pile_images)
        out['per_class'] = {c.label: _evaluate(gt, dets, every, [int(c)]) for c in ParcelClass}
        return out

    def errors(self, name: str) -> dict[str, Any]:
        """What became of each visible parcel (`mask_errors`): found, wrong class, merged..."""
        masks: dict[int, list[tuple[dict[str, Any], int]]] = {}
        for d in self.dt.get(name, []):
            if d.get('top_class', True):
                masks.setdefault(d['image_id'], []).append((d['segmentation'], d['category_id']))
        truth: dict[int, list[dict[str, Any]]] = {}
        for g in self.gt:
            truth.setdefault(g['image_id'], []).append(g)
        rows = []
        for image_id, parcels in truth.items():
            pairs = [(g['segmentation'], g['category_id']) for g in parcels]
            outcomes = judge_frame(pairs, masks.get(image_id, []))
            for g, outcome in zip(parcels, outcomes, strict=True):
                rows.append((ParcelClass(g['category_id']).label, g['area'], outcome))
        return tally(rows, [c.label for c in ParcelClass])


def _evaluate(
    gt: COCO,
    dets: list[dict[str, Any]],
    image_ids: list[int],
    cat_ids: list[int] | None,
    use_classes: bool = True,
) -> dict[str, float]:
    if not image_ids:
        return {'AP': float('nan'), 'AP50': float('nan'), 'AP75': float('nan')}
    with contextlib.redirect_stdout(io.StringIO()):
        dt = gt.loadRes(dets) if dets else COCO()
        ev = COCOeval(gt, dt, iouType='segm')
        ev.params.imgIds = image_ids
        if cat_ids is not None:
            ev.params.catIds = cat_ids
        ev.params.useCats = int(use_classes)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    s = ev.stats
    return {'AP': float(s[0]), 'AP50': float(s[1]), 'AP75': float(s[2])}


def is_pile_frame(truth: Any) -> bool:
    """True when at least one visible parcel rests on another."""
    return any(p.rests_on for p in truth.parcels)


ONE_FRAME = ', one frame'  # suffix of the figures of a segmenter's own per-frame output


class _Capture:
    """A segmenter that keeps its last output: the pipeline's input, before class pooling."""

    def __init__(self, segmenter: Any) -> None:
        self.segmenter = segmenter
        self.name = getattr(segmenter, 'name', '')
        self.provider = getattr(segmenter, 'provider', '')
        self.last: Segmentation | None = None

    def segment(self, frame: Any, belt: Any, belt_velocity: Any = None) -> Segmentation:
        self.last = self.segmenter.segment(frame, belt, belt_velocity)
        return self.last


def evaluate_bag(
    bag: Any,
    segmenters: Mapping[str, Any],
    *,
    max_frames: int | None = None,
    every: int = 1,
    progress: bool = True,
    preview: Any = None,
    preview_rows: int = 4,
    grasping: Any = None,
    tracking: Any = None,
) -> dict[str, dict[str, Any]]:
    """Score what the pipeline publishes for each segmenter on every `every`-th frame.

    Every frame runs through a `Pipeline` per segmenter (its tracker needs them all), so
    the masks scored carry their classes pooled over each parcel's track (`ClassMemory`,
    with the `tracking` settings; `grasping` holds the lifting ones, which decide the masks
    that get a track). A segmenter that gives class distributions is also scored on its
    own output frame by frame, as '<name>, one frame'.
    """
    from tqdm import tqdm

    from pkg_perception.bag.reader import BagFrameReader
    from pkg_perception.errors import BagError
    from pkg_perception.pipeline import Pipeline

    scorer = SegmentationScorer()
    rows: list[Any] = []
    captures = {name: _Capture(s) for name, s in segmenters.items()}
    pipelines = {name: Pipeline(c, grasping, tracking) for name, c in captures.items()}
    pooled: set[str] = set()
    with BagFrameReader(bag) as reader:
        if not reader.has_ground_truth:
            raise BagError(f'{bag} has no simulator ground truth; mask AP needs a simulated bag')
        total = reader.message_counts.get(reader.topics.color, 0)
        bar = tqdm(total=total, desc='evaluating', unit='frame', disable=not progress)
        for k, frame in enumerate(reader.frames()):
            bar.update()
            if max_frames is not None and len(scorer.images) >= max_frames:
                break
            segs = {}
            for name, pipeline in pipelines.items():
                captures[name].last = None  # a frame without a belt plane is not segmented
                segs[name] = pipeline.process(frame).segmentation
            if k % every:
                continue
            gt = frame.ground_truth
            classes = {p.parcel_id: p.parcel_class for p in gt.truth.parcels}
            image_id = scorer.add_truth(gt.instance_ids, classes, is_pile_frame(gt.truth))
            for name, seg in segs.items():
                rles = scorer.add_detections(name, image_id, seg)
                own = captures[name].last
                if own is None or not any(i.class_probs for i in own.instances):
                    continue  # nothing pooled: its own output is what was scored
                pooled.add(name)
                same_masks = own.labels is seg.labels  # pooling moves classes, not masks
                scorer.add_detections(
                    name + ONE_FRAME, image_id, own, rles if same_masks else None
                )
            if preview is not None and is_pile_frame(gt.truth):
                rows.append((frame, segs))
        bar.close()
    if preview is not None and rows:
        import cv2

        from pkg_perception.segmentation.preview import comparison_sheet

        pick = np.linspace(0, len(rows) - 1, min(preview_rows, len(rows))).round().astype(int)
        cv2.imwrite(str(preview), comparison_sheet([rows[i] for i in pick]))
    names = [
        n for name in segmenters for n in (name, name + ONE_FRAME) if n == name or name in pooled
    ]
    return {name: {**scorer.scores(name), 'errors': scorer.errors(name)} for name in names}


def format_table(results: Mapping[str, Mapping[str, Any]]) -> str:
    """Markdown table: one row per segmenter, AP / AP50 / AP75, piles, and per-class AP."""
    head = (
        '| segmenter | AP | AP50 | AP75 | top class AP | top class AP50 | piles AP | piles AP50 | '
        'any-class AP | any-class AP50 | ' + ' | '.join(f'{c.label} AP' for c in ParcelClass)
    )
    lines = [head + ' |', '|' + '---|' * (10 + len(ParcelClass))]
    for name, r in results.items():
        a, t, p, u = r['all'], r['top_class'], r['piles'], r['class_agnostic']
        per = ' | '.join(f'{r["per_class"][c.label]["AP"]:.3f}' for c in ParcelClass)
        lines.append(
            f'| {name} | {a["AP"]:.3f} | {a["AP50"]:.3f} | {a["AP75"]:.3f} | {t["AP"]:.3f} | '
            f'{t["AP50"]:.3f} | {p["AP"]:.3f} | {p["AP50"]:.3f} | {u["AP"]:.3f} | {u["AP50"]:.3f} '
            f'| {per} |'
        )
    return '\n'.join(lines)
