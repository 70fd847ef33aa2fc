# Copyright 2026 The pkg_perception Authors
# SPDX-License-Identifier: Apache-2.0
"""Each parcel's outcome at IoU 0.5: found, wrong class, merged, split, missed."""

from __future__ import annotations

import numpy as np

from pkg_perception.classes import ParcelClass
from pkg_perception.evaluation.mask_errors import (
    AREA_BINS,
    area_bin,
    format_errors,
    judge_frame,
    tally,
)
from pkg_perception.evaluation.segmentation import SegmentationScorer, encode
from pkg_perception.segmentation.instances import Instance, Segmentation

BOX, BAG = int(ParcelClass.BOX), int(ParcelClass.POLYBAG)


def _labels() -> np.ndarray:
    """Five parcels on a 60x80 frame, each meant for one outcome."""
    labels = np.zeros((60, 80), dtype=np.int32)
    labels[0:10, 0:10] = 1  # small, merged into its neighbour 2
    labels[0:10, 10:40] = 2  # found: the merged mask still overlaps it by 0.75
    labels[20:50, 0:30] = 3  # split in three
    labels[20:40, 40:60] = 4  # wrong class
    labels[55:57, 70:72] = 5  # a 4-pixel sliver nothing covers
    return labels


def _masks(labels: np.ndarray) -> np.ndarray:
    out = np.zeros_like(labels)
    out[(labels == 1) | (labels == 2)] = 1
    for k, rows in enumerate(((20, 30), (30, 40), (40, 50))):
        out[rows[0] : rows[1], 0:30] = 2 + k
    out[labels == 4] = 5
    return out


CLASSES = {1: BOX, 2: BOX, 3: BOX, 4: BOX, 5: BAG}
MASK_CLASSES = {1: BOX, 2: BOX, 3: BOX, 4: BOX, 5: BAG}


def test_each_parcel_gets_the_outcome_its_masks_give_it():
    labels, masks = _labels(), _masks(_labels())
    truth = [(encode(labels == i), CLASSES[i]) for i in range(1, 6)]
    found = [(encode(masks == i), MASK_CLASSES[i]) for i in range(1, 6)]
    assert judge_frame(truth, found) == ['merged', 'found', 'split', 'wrong_class', 'missed']
    assert judge_frame(truth, []) == ['missed'] * 5
    assert judge_frame([], found) == []


def test_tally_counts_by_class_and_visible_area():
    rows = [('box', 50.0, 'missed'), ('box', 5000.0, 'found'), ('envelope', 400.0, 'merged')]
    t = tally(rows, ['box', 'envelope'])
    assert t['by_class']['box'] == {
        **dict.fromkeys(t['by_class']['box'], 0),
        'missed': 1,
        'found': 1,
    }
    assert t['by_class']['all']['merged'] == 1
    assert t['by_area']['<100']['missed'] == 1
    assert t['by_area']['400-1600']['merged'] == 1
    assert t['by_area']['1600-6400']['found'] == 1
    assert set(t['by_area']) == set(AREA_BINS)
    assert area_bin(6400) == '>=6400' and area_bin(99.9) == '<100'


def test_scorer_reports_each_parcels_outcome():
    labels, masks = _labels(), _masks(_labels())
    scorer = SegmentationScorer()
    image = scorer.add_truth(labels, {i: ParcelClass(c) for i, c in CLASSES.items()}, pile=False)
    instances = []
    for i in range(1, 6):
        ys, xs = np.nonzero(masks == i)
        box = (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
        instances.append(Instance(i, ParcelClass(MASK_CLASSES[i]), 0.9, box, len(xs)))
    scorer.add_detections('model', image, Segmentation(masks, instances))
    errors = scorer.errors('model')
    assert errors['by_class']['all'] == {
        'found': 1,
        'wrong_class': 1,
        'merged': 1,
        'split': 1,
        'missed': 1,
    }
    assert errors['by_class']['polybag']['missed'] == 1
    table = format_errors({'model': {'errors': errors}})
    assert '| all | 5 | 1 (20%) | 1 (20%) | 1 (20%) | 1 (20%) | 1 (20%) |' in table
