# Copyright 2026 The pkg_perception Authors
# SPDX-License-Identifier: Apache-2.0
"""Fit the instance head on the exported model's own masks of fresh simulated cells.

The head must learn the mistakes the network makes on cells it has not seen, so its data
are new seeds (not the training ones) run through the very ONNX model it will ship in:
each decoded mask gives a feature row, the class of the parcel it overlaps most and that
overlap. A cell can fit it on its own labelled images instead (`collect_coco`). The fitted
head goes into the model file's metadata_props.
"""

from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import onnx
from tqdm import tqdm

from pkg_perception.errors import ModelError
from pkg_perception.frames import CameraModel, depth_from_millimetres
from pkg_perception.processes import worker_context
from pkg_perception.segmentation.belt import BeltPlane
from pkg_perception.segmentation.config import SegmentationConfig
from pkg_perception.segmentation.decode import decode_grid, kept_labels
from pkg_perception.segmentation.inputs import prepare_input
from pkg_perception.segmentation.instance_features import (
    FEATURE_NAMES,
    feature_context,
    instance_features,
)
from pkg_perception.segmentation.instance_head import METADATA_KEY, InstanceHead, Perceptron
from pkg_perception.segmentation.instances import label_means
from pkg_perception.segmentation.onnx import OnnxSegmenter
from pkg_perception.sim.simulator import ConveyorSimulator, SimConfig
from pkg_perception.training.coco import coco_frames
from pkg_perception.training.simdata import SimDataPlan, scene_for

MATCH_IOU = 0.5  # below this overlap a mask counts as "not a parcel" (COCO's loosest)


@dataclass(frozen=True)
class HeadData:
    """One row per decoded mask the post-process keeps."""

    features: npt.NDArray[np.float32]  # (n, F)
    iou: npt.NDArray[np.float32]  # overlap with the parcel it covers most
    parcel_class: npt.NDArray[np.int64]  # that parcel's class (1..4), 0 = none
    pixel_class: npt.NDArray[np.int64]  # the class the mean pixel probabilities give
    seed: npt.NDArray[np.int64]  # the simulated cell's seed, or the labelled image's index

    @staticmethod
    def concat(parts: list[HeadData]) -> HeadData:
        return HeadData(*(np.concatenate([getattr(p, f) for p in parts]) for f in _FIELDS))

    def take(self, rows: npt.NDArray[np.bool_]) -> HeadData:
        return HeadData(*(getattr(self, f)[rows] for f in _FIELDS))

    def target(self) -> npt.NDArray[np.int64]:
        return np.where(self.iou >= MATCH_IOU, self.parcel_class, 0)

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(path, **{f: getattr(self, f) for f in _FIELDS})

    @staticmethod
    def load(path: Path) -> HeadData:
        with np.load(path) as z:
            return HeadData(*(z[f] for f in _FIELDS))


_FIELDS = ('features', 'iou', 'parcel_class', 'pixel_class', 'seed')


def frame_rows(
    segmenter: OnnxSegmenter,
    color: npt.NDArray[np.uint8],
    depth: npt.NDArray[np.float32],
    camera: CameraModel,
    belt: BeltPlane,
    truth_ids: npt.NDArray[np.integer],
    truth_class: dict[int, int],
) -> tuple[npt.NDArray[np.float32], ...]:
    """Features, best overlap, its class and the pixel class of one frame's kept masks."""
    params = segmenter.config.decode
    meta = segmenter.metadata
    prepared = prepare_input(meta.spec, color, depth, camera, belt)
    logits = segmenter.infer(prepared.tensor)
    grid = decode_grid(logits, params, output_stride=meta.output_stride)
    n = grid.count
    h, w = grid.labels.shape
    empty = np.zeros((0, len(FEATURE_NAMES)), np.float32), *(np.zeros(0),) * 3
    if n == 0:
        return empty
    counts, means = label_means(grid.labels, grid.prob[1:], n)
    frame_px = (camera.width / w) * (camera.height / h)
    keep = kept_labels(counts, means, frame_px, params)
    if not keep.any():
        return empty
    ctx = feature_context(meta.spec, prepared.tensor[0], camera, belt, (h, w))
    rows = instance_features(grid.labels, n, means, grid.edge, params.seed_threshold, ctx)
    iou, cls = _best_overlap(grid.labels, n, truth_ids, truth_class, camera)
    idx = np.nonzero(keep)[0]
    return rows[idx - 1], iou[idx], cls[idx], means[idx].argmax(axis=1) + 1


def _best_overlap(
    labels: npt.NDArray[np.integer],
    count: int,
    truth_ids: npt.NDArray[np.integer],
    truth_class: dict[int, int],
    camera: CameraModel,
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.int64]]:
    """Per label 0..count: IoU with the truth parcel it overlaps most (on the output grid)."""
    h, w = labels.shape
    ys = ((np.arange(h) + 0.5) * camera.height / h).astype(np.intp)
    xs = ((np.arange(w) + 0.5) * camera.width / w).astype(np.intp)
    ids = np.unique(truth_ids)
    ids = ids[ids > 0]
    if ids.size == 0:
        return np.zeros(count + 1), np.zeros(count + 1, np.int64)
    truth = np.searchsorted(ids, truth_ids[np.ix_(ys, xs)]) + 1
    truth[truth_ids[np.ix_(ys, xs)] == 0] = 0
    m = ids.size + 1
    pair = np.bincount(
        labels.ravel().astype(np.int64) * m + truth.ravel(), minlength=(count + 1) * m
    ).reshape(count + 1, m)
    inter = pair[:, 1:]
    union = pair.sum(axis=1)[:, None] + pair.sum(axis=0)[None, 1:] - inter
    iou = inter / np.maximum(union, 1)
    best = iou.argmax(axis=1)
    classes = np.array([truth_class.get(int(i), 0) for i in ids], dtype=np.int64)
    return iou[np.arange(count + 1), best], classes[best]


_WORKER_SEGMENTER: OnnxSegmenter | None = None


def _rows_segmenter(model: str) -> OnnxSegmenter:
    return OnnxSegmenter(model, SegmentationConfig(threads=1, warmup_runs=0))


def _init_worker(model: str) -> None:
    """Set up a worker: one ONNX session for all its cells.

    One per cell would cost more than the cell's frames, and log the skipped providers each
    time.
    """
    global _WORKER_SEGMENTER  # one session per worker process, built once
    _WORKER_SEGMENTER = _rows_segmenter(model)


def _worker_rows(task: tuple[SimDataPlan, int]) -> HeadData:
    assert _WORKER_SEGMENTER is not None
    return _seed_rows(_WORKER_SEGMENTER, *task)


def _seed_rows(segmenter: OnnxSegmenter, plan: SimDataPlan, seed: int) -> HeadData:
    sim = ConveyorSimulator(
        SimConfig(width=plan.width, height=plan.height, scene=scene_for(seed)), seed
    )
    belt = BeltPlane.from_extrinsics(sim.conveyor_from_camera)
    parts = []
    for k in range(plan.frames_per_seed):
        f = sim.frame(k * plan.frame_step)
        classes = {p.parcel_id: int(p.parcel_class) for p in f.truth.parcels}
        depth = depth_from_millimetres(f.depth_mm)
        rows = frame_rows(segmenter, f.color, depth, sim.camera, belt, f.instance_ids, classes)
        parts.append(_head_data(rows, seed))
    return HeadData.concat(parts)


def _head_data(rows: tuple[npt.NDArray[np.float32], ...], source: int) -> HeadData:
    features, iou, cls, pix = rows
    return HeadData(
        features.astype(np.float32),
        iou.astype(np.float32),
        cls.astype(np.int64),
        pix.astype(np.int64),
        np.full(len(iou), source, dtype=np.int64),
    )


def collect(
    model: Path, plan: SimDataPlan, *, workers: int = 2, progress: bool = True
) -> HeadData:
    """Rows of every kept mask in `plan`'s cells, one seed per task."""
    seeds = plan.seed_list()
    parts = []
    bar = tqdm(total=len(seeds), desc='masks', unit='seed', disable=not progress)
    with bar:
        if workers <= 1:
            segmenter = _rows_segmenter(str(model))
            for seed in seeds:
                parts.append(_seed_rows(segmenter, plan, seed))
                bar.update()
        else:
            with ProcessPoolExecutor(
                workers,
                mp_context=worker_context(),
                initializer=_init_worker,
                initargs=(str(model),),
            ) as pool:
                for part in pool.map(_worker_rows, [(plan, seed) for seed in seeds]):
                    parts.append(part)
                    bar.update()
    return HeadData.concat(parts)


def collect_coco(model: Path, annotations: Path, *, progress: bool = True) -> HeadData:
    """Rows of every kept mask on a cell's labelled images; `seed` holds the image's index.

    Best on images the fine-tuning did not see: on its own training images the network is
    surer and righter than it will be on the belt, and the head would learn to trust it.
    """
    segmenter = OnnxSegmenter(model, SegmentationConfig(warmup_runs=0))
    frames = tqdm(coco_frames(annotations), desc='masks', unit='image', disable=not progress)
    parts = [
        _head_data(
            frame_rows(segmenter, f.color, f.depth, f.camera, f.belt, f.labels, f.class_of), k
        )
        for k, f in enumerate(frames)
    ]
    return HeadData.concat(parts)


def fit_head(
    data: HeadData,
    *,
    members: int = 5,
    hidden: int = 64,
    epochs: int = 60,
    seed: int = 0,
    init: InstanceHead | None = None,
    lr: float = 3e-3,
) -> InstanceHead:
    """`members` perceptrons from seeds seed, seed + 1, ... on the same standardized rows.

    With `init`, its members are trained further on `data` with its own standardization
    (`members` and `hidden` then come from it): a few thousand masks of one cell refine
    what tens of thousands of simulated ones taught, where alone they would overfit.
    """
    x = data.features.astype(np.float64)
    if init is not None:
        mean, scale, starts = init.mean, init.scale, list(init.members)
    else:
        mean, scale, starts = x.mean(axis=0), x.std(axis=0) + 1e-6, [None] * members
    fitted = tuple(
        _fit_member((x - mean) / scale, data, hidden, epochs, seed + k, start, lr)
        for k, start in enumerate(
            tqdm(starts, desc='fitting', unit='member', disable=len(starts) < 2)
        )
    )
    head = InstanceHead(features=FEATURE_NAMES, mean=mean, scale=scale, members=fitted)
    head.check()
    return head


def _fit_member(
    x: npt.NDArray[np.float64],
    data: HeadData,
    hidden: int,
    epochs: int,
    seed: int,
    start: Perceptron | None,
    lr: float,
) -> Perceptron:
    """Cross-entropy on (none, 4 classes) plus BCE on the overlap; AdamW with cosine decay."""
    import torch

    torch.manual_seed(seed)
    xt = torch.tensor(x, dtype=torch.float32)
    yt = torch.tensor(data.target(), dtype=torch.long)
    it = torch.tensor(data.iou, dtype=torch.float32)
    widths = [x.shape[1], hidden, hidden, 6]
    if start is not None:
        widths = [start.weights[0].shape[1], *(w.shape[0] for w in start.weights)]
    layers: list[torch.nn.Module] = []
    for k in range(len(widths) - 1):
        layers += [torch.nn.Linear(widths[k], widths[k + 1]), torch.nn.ReLU()]
    net = torch.nn.Sequential(*layers[:-1])
    if start is not None:
        linears = [m for m in net if isinstance(m, torch.nn.Linear)]
        with torch.no_grad():
            for m, w, b in zip(linears, start.weights, start.biases, strict=True):
                m.weight.copy_(torch.from_numpy(w))
                m.bias.copy_(torch.from_numpy(b))
    batch = 256
    steps_per_epoch = max(1, len(xt) // batch)
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs * steps_per_epoch)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        order = torch.randperm(len(xt), generator=gen)
        for k in range(steps_per_epoch):
            b = order[k * batch : (k + 1) * batch]
            out = net(xt[b])
            loss = torch.nn.functional.cross_entropy(
                out[:, :5], yt[b]
            ) + torch.nn.functional.binary_cross_entropy_with_logits(out[:, 5], it[b])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    linears = [m for m in net if isinstance(m, torch.nn.Linear)]
    return Perceptron(
        weights=tuple(m.weight.detach().double().numpy() for m in linears),
        biases=tuple(m.bias.detach().double().numpy() for m in linears),
    )


@dataclass(frozen=True)
class HeadReport:
    """Class accuracy on masks that cover a parcel, pixel vote against the head."""

    masks: int
    matched: int
    pixel_accuracy: float
    head_accuracy: float
    iou_correlation: float


def report(head: InstanceHead, data: HeadData) -> HeadReport:
    p_class, overlap = head.predict(data.features)
    matched = data.iou >= MATCH_IOU
    head_class = p_class[:, 1:].argmax(axis=1) + 1
    truth = data.parcel_class[matched]
    corr = float(np.corrcoef(overlap, data.iou)[0, 1]) if len(overlap) > 1 else float('nan')
    return HeadReport(
        masks=len(data.iou),
        matched=int(matched.sum()),
        pixel_accuracy=float((data.pixel_class[matched] == truth).mean()),
        head_accuracy=float((head_class[matched] == truth).mean()),
        iou_correlation=corr,
    )


def read_head(model: Path) -> InstanceHead | None:
    """The head a model file carries; None without one or with one for other features."""
    props = {p.key: p.value for p in onnx.load(str(model)).metadata_props}
    if METADATA_KEY not in props:
        return None
    try:
        return InstanceHead.from_json(props[METADATA_KEY], str(model))
    except ModelError:
        return None  # fitted for other features: it is about to be replaced


def write_head(model: Path, head: InstanceHead, out: Path) -> None:
    """Copy `model` to `out` (may be the same file) with the head in its metadata_props."""
    proto = onnx.load(str(model))
    kept = [p for p in proto.metadata_props if p.key != METADATA_KEY]
    del proto.metadata_props[:]
    proto.metadata_props.extend(kept)
    entry = proto.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, head.to_json()
    onnx.checker.check_model(proto)
    tmp = out.with_suffix('.tmp.onnx')
    onnx.save(proto, str(tmp))
    tmp.replace(out)
