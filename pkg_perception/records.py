# Copyright 2026 The pkg_perception Authors
# SPDX-License-Identifier: Apache-2.0
"""results.jsonl: one JSON object per processed frame, and back to a PerceptionResult.

One line per frame, flushed as it is written, so a replay that dies keeps every frame
before it, and results of many bags merge by concatenation. Poses are a position (metres)
and an (x, y, z, w) quaternion in the record's `frame_id`, like geometry_msgs/Pose; masks
are COCO RLE at the image's resolution, so pycocotools and COCO tools read them directly.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import numpy.typing as npt

from pkg_perception.classes import ParcelClass
from pkg_perception.errors import InputError
from pkg_perception.results import GraspCandidate, GraspKind, OrientedBox, Parcel, PerceptionResult
from pkg_perception.segmentation.instances import Instance, Segmentation
from pkg_perception.transforms import (
    make_transform,
    matrix_from_quaternion,
    quaternion_from_matrix,
)

SCHEMA = 'pkg_perception/results/v1'
DIGITS = 6  # micrometres and micro-radians: below any sensor's noise, keeps files small


def _r(values: npt.ArrayLike) -> list[float]:
    return [round(float(v), DIGITS) for v in np.asarray(values, dtype=np.float64).reshape(-1)]


def pose_record(t: npt.NDArray[np.float64]) -> dict[str, list[float]]:
    """4x4 transform -> {'position': [x, y, z], 'orientation': [x, y, z, w]}."""
    return {'position': _r(t[:3, 3]), 'orientation': _r(quaternion_from_matrix(t[:3, :3]))}


def pose_from_record(d: dict[str, Any]) -> npt.NDArray[np.float64]:
    return make_transform(matrix_from_quaternion(d['orientation']), d['position'])


def _rle(seg: Segmentation, inst: Instance) -> dict[str, Any]:
    from pkg_perception.evaluation.segmentation import encode

    return encode(seg.mask(inst))


def _instance(seg: Segmentation, inst: Instance) -> dict[str, Any]:
    return {
        'label': int(inst.label),
        'class': inst.parcel_class.label,
        'score': round(float(inst.score), 4),
        'bbox_px': [int(v) for v in inst.box],
        'area': int(inst.area),
        'mask': _rle(seg, inst),
        'alternatives': [[c.label, round(float(v), 4)] for c, v in inst.alternatives],
    }


def result_record(result: PerceptionResult, *, frame: int) -> dict[str, Any]:
    """The JSON-ready record of one frame (frame = its index in the replay)."""
    seg = result.segmentation
    by_label = {int(i.label): i for i in seg.instances}
    parcels = []
    for p in result.parcels:
        inst = by_label.pop(int(p.label), None)
        rec: dict[str, Any] = {
            'id': int(p.track_id),
            'class': p.parcel_class.label,
            'score': round(float(p.score), 4),
            'box': {**pose_record(p.box.pose), 'size': _r(p.box.size)},
            'top_center': _r(p.top_center),
            'top_normal': _r(p.top_normal),
            'height': round(float(p.height), DIGITS),
            'supports': [int(s) for s in p.supports],
            'velocity': _r(p.velocity),
            'points': int(p.point_count),
        }
        if inst is not None:
            rec.update(_instance(seg, inst))
        parcels.append(rec)
    grasps = [
        {
            'parcel_id': int(g.parcel_id),
            'kind': g.kind.value,
            'score': round(float(g.score), 4),
            'width': round(float(g.width), DIGITS),
            **pose_record(g.pose),
            'velocity': _r(g.velocity),
        }
        for g in result.grasps
    ]
    h, w = seg.labels.shape
    return {
        'schema': SCHEMA,
        'frame': int(frame),
        'stamp_ns': int(result.stamp_ns),
        'frame_id': result.frame_id,
        'camera_frame_id': result.camera_frame_id,
        'image_size': [int(w), int(h)],
        'segmenter': result.segmenter,
        'provider': result.provider,
        'flags': list(result.flags),
        'timings_ms': {k: round(float(v), 3) for k, v in result.timings_ms.items()},
        'parcels': parcels,
        # Segmented but not lifted to a parcel (e.g. too few valid depth points): they count
        # for mask AP, because the segmenter did find them.
        'unlifted': [_instance(seg, i) for i in by_label.values()],
        'grasps': grasps,
    }


def result_from_record(rec: dict[str, Any]) -> PerceptionResult:
    """Inverse of `result_record` (masks decoded into a label image)."""
    from pycocotools import mask as mask_utils

    w, h = rec['image_size']
    labels = np.zeros((h, w), dtype=np.uint16)
    instances = []
    for d in [*rec['parcels'], *rec.get('unlifted', [])]:
        if 'mask' not in d:
            continue
        m = mask_utils.decode({'size': d['mask']['size'], 'counts': d['mask']['counts'].encode()})
        labels[m.astype(bool)] = d['label']
        instances.append(
            Instance(
                int(d['label']),
                ParcelClass.from_label(d['class']),
                float(d['score']),
                tuple(int(v) for v in d['bbox_px']),
                int(d['area']),
                tuple((ParcelClass.from_label(c), float(v)) for c, v in d.get('alternatives', ())),
            )
        )
    boxes: dict[int, OrientedBox] = {}
    parcels = []
    for d in rec['parcels']:
        box = OrientedBox(pose_from_record(d['box']), np.asarray(d['box']['size']))
        boxes[int(d['id'])] = box
        parcels.append(
            Parcel(
                track_id=int(d['id']),
                label=int(d.get('label', 0)),
                parcel_class=ParcelClass.from_label(d['class']),
                score=float(d['score']),
                box=box,
                top_center=np.asarray(d['top_center']),
                top_normal=np.asarray(d['top_normal']),
                height=float(d['height']),
                supports=tuple(d['supports']),
                velocity=np.asarray(d['velocity']),
                point_count=int(d['points']),
            )
        )
    classes = {p.track_id: p.parcel_class for p in parcels}
    grasps = [
        GraspCandidate(
            pose=pose_from_record(g),
            score=float(g['score']),
            kind=GraspKind(g['kind']),
            width=float(g['width']),
            parcel_id=int(g['parcel_id']),
            parcel_class=classes.get(int(g['parcel_id']), ParcelClass.BOX),
            parcel_box=boxes.get(int(g['parcel_id']), OrientedBox(np.eye(4), np.zeros(3))),
            frame_id=rec['frame_id'],
            stamp_ns=int(rec['stamp_ns']),
            velocity=np.asarray(g.get('velocity', [0.0, 0.0, 0.0])),
        )
        for g in rec['grasps']
    ]
    return PerceptionResult(
        stamp_ns=int(rec['stamp_ns']),
        frame_id=rec['frame_id'],
        camera_frame_id=rec['camera_frame_id'],
        segmentation=Segmentation(labels, instances, tuple(rec['flags'])),
        parcels=parcels,
        grasps=grasps,
        timings_ms=dict(rec['timings_ms']),
        flags=tuple(rec['flags']),
        segmenter=rec.get('segmenter', ''),
        provider=rec.get('provider', ''),
    )


class ResultsWriter:
    """Appends records to results.jsonl, one flushed line per frame."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file: TextIO = path.open('w', encoding='utf-8')
        self.count = 0

    def write(self, record: dict[str, Any]) -> None:
        self._file.write(json.dumps(record, separators=(',', ':')) + '\n')
        self._file.flush()
        self.count += 1

    def close(self) -> None:
        if not self._file.closed:
            self._file.close()

    def __enter__(self) -> ResultsWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_records(path: Path) -> Iterator[dict[str, Any]]:
    """Records of a results.jsonl; a cut-off last line (a replay that died) is skipped.

    Raises:
        InputError: a line in the middle is not a results record.
    """
    lines = path.read_text(encoding='utf-8').splitlines()
    for k, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            if k == len(lines) - 1:
                return
            raise InputError(f'{path}:{k + 1} is not valid JSON; is it a results.jsonl?') from None
        if not isinstance(rec, dict) or rec.get('schema') != SCHEMA:
            raise InputError(
                f'{path}:{k + 1} is not a {SCHEMA} record; write it with `pkg-perception replay`'
            )
        yield rec
