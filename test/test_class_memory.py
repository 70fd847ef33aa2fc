# Copyright 2026 The pkg_perception Authors
# SPDX-License-Identifier: Apache-2.0
"""Class memory: a parcel's class pooled over the frames of its track."""

from __future__ import annotations

from dataclasses import replace

import pytest

from pkg_perception.class_memory import ClassMemory
from pkg_perception.classes import ParcelClass
from pkg_perception.errors import ConfigError
from pkg_perception.segmentation.instances import Instance
from pkg_perception.tracking import TrackingConfig

BOX, ENVELOPE = ParcelClass.BOX, ParcelClass.ENVELOPE


def instance(probs: tuple[float, float, float, float], factor: float = 0.8) -> Instance:
    """A mask whose class scores are its probabilities times a common factor."""
    ranked = sorted(zip(ParcelClass, probs, strict=True), key=lambda cp: -cp[1])
    (top, p), *rest = ranked
    others = tuple((c, q * factor) for c, q in rest)
    return Instance(1, top, p * factor, (0, 0, 10, 10), 100, others, probs)


def test_a_misleading_view_is_outvoted_by_the_track_history() -> None:
    memory = ClassMemory(1.0)
    for _ in range(3):
        assert memory.fuse(instance((0.9, 0.02, 0.03, 0.05)), 7).parcel_class is BOX
    doubtful = instance((0.3, 0.05, 0.05, 0.6))  # half hidden: looks like an envelope
    fused = memory.fuse(doubtful, 7)
    assert fused.parcel_class is BOX
    assert sum(fused.class_probs) == pytest.approx(1.0)
    # The score keeps its other factors; only the class probability in it changes.
    assert fused.score == pytest.approx(fused.class_probs[0] * 0.8)
    assert fused.alternatives[0][0] is ENVELOPE
    assert len(fused.alternatives) == len(doubtful.alternatives)
    assert fused.label == doubtful.label and fused.box == doubtful.box


def test_the_first_frame_and_other_tracks_are_left_as_they_are() -> None:
    memory = ClassMemory(1.0)
    first = instance((0.9, 0.02, 0.03, 0.05))
    assert memory.fuse(first, 1) is first
    other = instance((0.1, 0.1, 0.1, 0.7))
    assert memory.fuse(other, 2) is other  # a new track has no history


def test_without_a_distribution_a_track_or_weight_nothing_changes() -> None:
    memory = ClassMemory(1.0)
    plain = replace(instance((0.9, 0.02, 0.03, 0.05)), class_probs=())
    for _ in range(2):
        assert memory.fuse(plain, 3) is plain  # the geometric baseline, ground truth
    untracked = instance((0.2, 0.2, 0.2, 0.4))
    for _ in range(2):
        assert memory.fuse(untracked, 0) is untracked  # not lifted: no track
    off = ClassMemory(0.0)
    for _ in range(2):
        view = instance((0.2, 0.2, 0.2, 0.4))
        assert off.fuse(view, 4) is view


def test_the_evidence_of_ended_tracks_is_dropped() -> None:
    memory = ClassMemory(1.0)
    memory.fuse(instance((0.9, 0.02, 0.03, 0.05)), 5)
    memory.forget({6})
    view = instance((0.1, 0.1, 0.1, 0.7))
    assert memory.fuse(view, 5) is view  # starts afresh


def test_a_negative_weight_is_refused() -> None:
    with pytest.raises(ConfigError, match='class_memory'):
        TrackingConfig(class_memory=-0.5)
