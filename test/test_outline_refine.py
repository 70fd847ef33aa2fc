# Copyright 2026 The pkg_perception Authors
# SPDX-License-Identifier: Apache-2.0
"""Outlines redrawn along the colour image's edges at the frame's resolution."""

from __future__ import annotations

import numpy as np
import pytest
from label_logits import logits_of

from pkg_perception.classes import ParcelClass
from pkg_perception.segmentation.decode import DecodeParams, decode
from pkg_perception.segmentation.instances import Instance, Segmentation, boxes_and_areas
from pkg_perception.segmentation.refine import open_band, refine_outlines

BELT, LEFT, RIGHT = (40, 42, 45), (200, 150, 100), (90, 160, 220)


def _colour(boundary: int, right_end: int = 144) -> np.ndarray:
    """160x120 frame: two parcels meeting at column `boundary`, on a dark belt, with noise."""
    img = np.zeros((120, 160, 3), dtype=np.float64)
    img[:] = BELT
    img[20:100, 16:boundary] = LEFT
    img[20:100, boundary:right_end] = RIGHT
    img += np.random.default_rng(0).normal(0, 4, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def _segmentation(labels: np.ndarray) -> Segmentation:
    boxes, areas = boxes_and_areas(labels, int(labels.max()))
    return Segmentation(
        labels,
        [
            Instance(k, ParcelClass.BOX, 0.9, tuple(int(v) for v in boxes[k]), int(areas[k]))
            for k in range(1, int(labels.max()) + 1)
        ],
    )


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / (a | b).sum())


def test_outlines_move_to_the_colour_edges_and_boxes_follow():
    truth = np.zeros((120, 160), dtype=np.uint16)
    truth[20:100, 16:80] = 1
    truth[20:100, 80:144] = 2
    # What the model gives at a coarser scale: the boundary 3 pixels into the right parcel,
    # the outline a pixel out onto the belt at the top and at the right.
    coarse = np.zeros_like(truth)
    coarse[19:100, 16:83] = 1
    coarse[19:100, 83:145] = 2
    seg = _segmentation(coarse)
    out = refine_outlines(seg, _colour(80), between=4, belt=2)
    for inst in out.instances:
        mask, want = out.mask(inst), truth == inst.label
        assert _iou(seg.mask(inst), want) < 0.97
        assert _iou(mask, want) > 0.99
        assert inst.area == int((out.labels == inst.label).sum())
        x0, y0, x1, y1 = inst.box
        assert mask.sum() == mask[y0:y1, x0:x1].sum()  # the box holds the whole mask


def test_only_the_band_around_outlines_changes():
    labels = np.zeros((120, 160), dtype=np.uint16)
    labels[20:100, 16:83] = 1
    labels[20:100, 83:144] = 2
    seg = _segmentation(labels)
    flat = np.full((120, 160, 3), 128, dtype=np.uint8)  # no edges: the markers meet anywhere
    out = refine_outlines(seg, flat, between=4, belt=2)
    moved = out.labels != labels
    assert not (moved & ~open_band(labels, 4, 2)).any()
    assert refine_outlines(seg, flat, between=0, belt=0) is seg


def test_a_sliver_thinner_than_the_band_keeps_its_pixels():
    labels = np.zeros((120, 160), dtype=np.uint16)
    labels[20:100, 16:80] = 1
    labels[20:100, 80:84] = 2  # 4 pixels wide: every pixel lies within the band
    seg = _segmentation(labels)
    out = refine_outlines(seg, _colour(80, right_end=84), between=4, belt=2)
    assert [i.label for i in out.instances] == [1, 2]
    assert (out.labels[labels == 2] == 2).all()
    assert (out.labels == 2).sum() - (labels == 2).sum() <= 4  # a corner pixel or two at most


def test_decode_redraws_outlines_on_the_frame_colour():
    # The logits put the boundary at output column 20 (frame column 80); the colour image
    # at frame column 82. Bands are in model-input pixels: 2 = 8 frame pixels here.
    grid = np.zeros((30, 40), dtype=np.int32)
    grid[5:25, 4:20] = 1
    grid[5:25, 20:36] = 2
    logits = logits_of(grid, {1: ParcelClass.BOX, 2: ParcelClass.MAILER})
    params = DecodeParams(confident_area=0)
    plain = decode(logits, 160, 120, params, output_stride=1)
    drawn = decode(logits, 160, 120, params, output_stride=1, color=_colour(82))
    want = np.zeros((120, 160), dtype=bool)
    want[20:100, 16:82] = True
    assert [i.parcel_class for i in drawn.instances] == [ParcelClass.BOX, ParcelClass.MAILER]
    left_plain, left_drawn = plain.mask(plain.instances[0]), drawn.mask(drawn.instances[0])
    assert _iou(left_plain, want) < 0.975
    assert _iou(left_drawn, want) > 0.99
    assert drawn.instances[0].score == pytest.approx(plain.instances[0].score)
