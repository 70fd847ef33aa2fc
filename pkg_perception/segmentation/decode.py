# Copyright 2026 The pkg_perception Authors
# SPDX-License-Identifier: Apache-2.0
"""From ParcelNet's per-pixel outputs to instances at the frame's resolution.

Seeds are pixels deep inside a parcel (predicted edge distance high); each becomes an
instance, grown to the foreground around it at the output scale. A parcel too thin to
reach the seed threshold anywhere (a strip showing beside or under another) is seeded by
hysteresis: a blob above a weaker threshold with no strong seed in it. The foreground
itself is upsampled bilinearly, so outlines against the belt are sub-pixel smooth at full
size.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import numpy.typing as npt

from pkg_perception.classes import ParcelClass
from pkg_perception.segmentation.embedding import split_by_embedding
from pkg_perception.segmentation.instance_features import FeatureContext, instance_features
from pkg_perception.segmentation.instance_head import InstanceHead
from pkg_perception.segmentation.instances import (
    Instance,
    Segmentation,
    boxes_and_areas,
    label_means,
)
from pkg_perception.segmentation.refine import refine_outlines
from pkg_perception.segmentation.seeds import grow_seeds, label_seeds

NUM_CLASSES = len(ParcelClass) + 1


@dataclass(frozen=True)
class DecodeParams:
    """Thresholds of the post-process (config: segmentation.*)."""

    # Edge-distance probability that marks a seed pixel, chosen on the validation bags (seeds
    # 5151 / 5252) for ParcelNet 1.4 (output stride 1): 0.75 gives AP 0.710 / 0.444, 0.85
    # 0.728 / 0.478, 0.92 0.738 / 0.493, 0.95 0.723 / 0.490. (1.1, stride 2: 0.75.)
    seed_threshold: float = 0.92
    # Blobs above this with no strong seed inside seed thin parcels; 0.25 on the validation
    # bags (seeds 5151 / 5252, ParcelNet 1.3): AP 0.683 -> 0.688 / 0.481 -> 0.486, AP50
    # 0.821 -> 0.829 / 0.559 -> 0.572; 0.5 and 0.35 gain less, 0.2 loses on 5252. 1 = off.
    weak_seed_threshold: float = 0.25
    min_seed_pixels: int = 2  # at the output scale
    # Model-input pixels a mask may extend beyond its seed, whatever the model's output
    # stride (24 frame pixels at 640x480); 10 to 16 score the same on the validation bags.
    grow_distance: float = 12.0
    min_score: float = 0.3
    min_area: int = 64  # frame pixels
    # An instance's score is its class probability times sqrt(area / confident_area), at most
    # 1: small masks are more often fragments or slivers than parcels, and the score is what
    # ranks detections (COCO AP, the grasp ranking's mask confidence). min_score applies to
    # the class probability alone, so nothing more is dropped. Chosen on the validation bags
    # 5151 / 5252 / 5353 with ParcelNet 1.5 (AP): off 0.432 / 0.755 / 0.552; 1,600 frame px
    # 0.449 / 0.772 / 0.590; 3,200 0.456 / 0.778 / 0.623; 6,400 0.457 / 0.778 / 0.671;
    # 12,800 0.454 / 0.776 / 0.682. 0 = off. Not used when the model's instance head scores.
    confident_area: int = 6400
    # Models with an embedding head: a mask whose pixels' embeddings form clusters farther
    # apart than this, each a compact part of at least embed_min_pixels (output pixels),
    # splits into parcels. 0 = off. Between the training margins (pull 0.5, push 2 x 1.5).
    embed_threshold: float = 2.0
    embed_min_pixels: int = 12
    # Models with an instance head: a mask's class probabilities are the geometric mean of
    # the head's and the mask's mean pixel probabilities, this weight on the head (1 = the
    # head alone). The head alone was better on most cells and far worse on one with few
    # envelopes (AP, 48 fresh cells pooled / validation bags 5151 / 5252 / dense piles
    # 5353, ParcelNet 1.7): pixels alone 0.614 / 0.464 / 0.777 / 0.702; 0.5: 0.634 / 0.514
    # / 0.787 / 0.680; 0.7: 0.633 / 0.521 / 0.787 / 0.648; 1: 0.634 / 0.530 / 0.787 / 0.585.
    head_class_weight: float = 0.5
    # Other classes each mask also offers (Instance.alternatives), most likely first, each
    # scored as its probability x P(a parcel) x expected overlap. Mask AP on the validation
    # bags 5151 / 5252 / dense piles 5353 (ParcelNet 1.7) with 0 / 1 / 2 / 3: 0.514 / 0.532 /
    # 0.534 / 0.534; 0.787 / 0.796 / 0.796 / 0.796; 0.680 / 0.714 / 0.721 / 0.721.
    alternative_classes: int = 3
    # Outlines redrawn along the colour image's edges at the frame's resolution (refine.py):
    # the band left open around boundaries between instances (outline_band) and against the
    # belt (belt_band), in model-input pixels (2 frame pixels each at 640x480). Mask AP on
    # the validation bags 5151 / 5252 / dense piles 5353 (ParcelNet 1.7, every second frame):
    # off 0.530 / 0.798 / 0.719; 2 and 1 (shipped) 0.566 / 0.827 / 0.744; 2 and 0.5 0.552 /
    # 0.826 / 0.742; 2 and 1.5 0.566 / 0.824 / 0.742; 1 and 1 0.560 / 0.822 / 0.736; 3 and 1
    # 0.564 / 0.829 / 0.744; 3 and 1.5 0.564 / 0.828 / 0.744. 0 and 0 = off.
    outline_band: float = 2.0
    belt_band: float = 1.0


def _softmax(x: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    e = np.exp(x - x.max(axis=0, keepdims=True))
    return e / e.sum(axis=0, keepdims=True)


def _seed_pixels(
    edge: npt.NDArray[np.float32], fg: npt.NDArray[np.bool_], params: DecodeParams
) -> npt.NDArray[np.bool_]:
    """Strong seeds, plus every weak blob (4-connected) that holds no strong seed."""
    strong = (edge > params.seed_threshold) & fg
    if params.weak_seed_threshold >= params.seed_threshold:
        return strong
    weak = (edge > params.weak_seed_threshold) & fg
    n, blobs = cv2.connectedComponents(weak.astype(np.uint8), connectivity=4)
    seeded = np.zeros(n, dtype=bool)
    seeded[blobs[strong]] = True
    return strong | (weak & ~seeded[blobs])


@dataclass(frozen=True)
class DecodedGrid:
    """Instances at the model's output grid, before they are scaled to the frame."""

    labels: npt.NDArray[np.integer]  # (h, w) 0 = belt, 1..count
    count: int
    prob: npt.NDArray[np.float32]  # (5, h, w) class probabilities, belt first
    edge: npt.NDArray[np.float32]  # (h, w) edge-distance probability


def decode_grid(
    logits: npt.NDArray[np.float32], params: DecodeParams, *, output_stride: int
) -> DecodedGrid:
    """(6 + e, h, w) logits (5 classes, edge distance, e embeddings) -> labelled grid.

    `output_stride` (model input pixels per output pixel, from the model's metadata) puts
    the grow distance in the same units for every model.
    """
    prob = _softmax(logits[:NUM_CLASSES])
    edge = 1.0 / (1.0 + np.exp(-logits[NUM_CLASSES]))
    fg = prob[0] < 0.5
    seeds, n = label_seeds(_seed_pixels(edge, fg, params), params.min_seed_pixels)
    grown = grow_seeds(seeds, fg, params.grow_distance / output_stride)
    if len(logits) > NUM_CLASSES + 1 and params.embed_threshold > 0:
        grown, n = split_by_embedding(
            grown,
            seeds,
            logits[NUM_CLASSES + 1 :],
            n,
            params.embed_threshold,
            params.embed_min_pixels,
        )
    return DecodedGrid(grown, n, prob, edge)


def kept_labels(
    counts: npt.NDArray[np.float64],
    means: npt.NDArray[np.float64],
    frame_px: float,
    params: DecodeParams,
) -> npt.NDArray[np.bool_]:
    """Labels 0..n that become instances: large enough and sure enough of some class."""
    keep = (counts * frame_px >= params.min_area) & (means.max(axis=1) >= params.min_score)
    keep[0] = False
    return keep


def _head_classes(
    grid: DecodedGrid,
    class_means: npt.NDArray[np.float64],
    head: InstanceHead,
    context: FeatureContext,
    params: DecodeParams,
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Per label 0..n: class probabilities (head blended with pixels) and a score factor.

    The factor is P(a parcel) x expected overlap; a class's score is its probability times
    it: what a detection's chance of matching its parcel is, so COCO AP and the grasp
    ranking order masks by it.
    """
    n = grid.count
    rows = instance_features(
        grid.labels, n, class_means, grid.edge, params.seed_threshold, context
    )
    pixel_means = class_means[1:]
    p_head, overlap = head.predict(rows)
    parcel = np.maximum(1.0 - p_head[:, 0], 1e-9)
    w = params.head_class_weight
    tiny = 1e-9
    head_cls = np.log(p_head[:, 1:] / parcel[:, None] + tiny)
    pixel_cls = np.log(
        pixel_means / np.maximum(pixel_means.sum(axis=1, keepdims=True), tiny) + tiny
    )
    blend = np.exp(w * head_cls + (1.0 - w) * pixel_cls)
    blend /= blend.sum(axis=1, keepdims=True)
    zero = np.zeros((1, blend.shape[1]))
    return np.concatenate([zero, blend]), np.concatenate([[0.0], parcel * overlap])


def decode(
    logits: npt.NDArray[np.float32],
    width: int,
    height: int,
    params: DecodeParams,
    *,
    output_stride: int,
    head: InstanceHead | None = None,
    context: FeatureContext | None = None,
    color: npt.NDArray[np.uint8] | None = None,
) -> Segmentation:
    """(6 + e, h, w) logits -> instances at width x height.

    With an instance `head` (and the frame `context` its features need), each mask's class
    and score come from the head; without, from the mean class probabilities in the mask
    and the small-mask prior. With the frame's (height, width, 3) `color`, outlines are
    redrawn along its edges.
    """
    grid = decode_grid(logits, params, output_stride=output_stride)
    grown, n, prob = grid.labels, grid.count, grid.prob
    h, w = grown.shape
    if n == 0:
        return Segmentation.empty(height, width)
    # Mean class probabilities per instance at the output scale.
    counts, means = label_means(grown, prob[1:], n)
    sx, sy = width / w, height / h
    keep = kept_labels(counts, means, sx * sy, params)
    if head is not None and context is not None:
        class_prob, factor = _head_classes(grid, means, head, context, params)
    else:
        class_prob, factor = means, np.ones(n + 1)
        if params.confident_area > 0:
            factor = np.sqrt(np.minimum(1.0, counts * sx * sy / params.confident_area))
    ranked = np.argsort(-class_prob, axis=1, kind='stable')
    best = ranked[:, 0]
    class_scores = class_prob * factor[:, None]
    score = class_scores[np.arange(n + 1), best]
    # Pixel means leave out the belt's share; the head's blend already sums to 1.
    probs = class_prob / np.maximum(class_prob.sum(axis=1, keepdims=True), 1e-12)
    lut = np.zeros(n + 1, dtype=np.uint16)
    lut[keep] = np.arange(1, int(keep.sum()) + 1, dtype=np.uint16)
    small = lut[grown]
    labels = cv2.resize(small, (width, height), interpolation=cv2.INTER_NEAREST)
    bg_full = cv2.resize(prob[0], (width, height), interpolation=cv2.INTER_LINEAR)
    labels[bg_full >= 0.5] = 0
    instances = []
    boxes, _ = boxes_and_areas(small, int(keep.sum()))
    for old in np.nonzero(keep)[0]:
        new = int(lut[old])
        x0, y0, x1, y1 = boxes[new]
        box = (
            int(x0 * sx),
            int(y0 * sy),
            min(width, int(np.ceil(x1 * sx))),
            min(height, int(np.ceil(y1 * sy))),
        )
        area = int(counts[old] * sx * sy)
        others = tuple(
            (ParcelClass(int(c) + 1), float(class_scores[old, c]))
            for c in ranked[old, 1 : 1 + params.alternative_classes]
        )
        instances.append(
            Instance(
                new,
                ParcelClass(int(best[old]) + 1),
                float(score[old]),
                box,
                area,
                others,
                tuple(probs[old].tolist()),
            )
        )
    seg = Segmentation(labels, instances)
    if color is None:
        return seg
    per_input_px = width / (w * output_stride)  # frame pixels per model-input pixel
    return refine_outlines(
        seg,
        color,
        round(params.outline_band * per_input_px),
        round(params.belt_band * per_input_px),
    )
