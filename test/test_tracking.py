# Copyright 2026 The pkg_perception Authors
# SPDX-License-Identifier: Apache-2.0
"""Tracker: ids stay with parcels riding the belt; belt velocity; loops reset."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from pkg_perception.classes import ParcelClass
from pkg_perception.errors import ConfigError
from pkg_perception.results import GraspCandidate, GraspKind, OrientedBox, Parcel
from pkg_perception.tracking import Tracker, TrackingConfig
from pkg_perception.transforms import make_transform, rotation_z

PERIOD_NS = 66_666_667  # 15 Hz
BELT = np.array([0.3, 0.0, 0.0])  # m/s in the conveyor frame


def _parcel(label: int, x: float, y: float, *, supports: tuple[int, ...] = ()) -> Parcel:
    centre = np.array([x, y, 0.05])
    return Parcel(
        track_id=0,
        label=label,
        parcel_class=ParcelClass.BOX,
        score=1.0,
        box=OrientedBox(make_transform(np.eye(3), centre), np.array([0.2, 0.1, 0.1])),
        top_center=centre + np.array([0.0, 0.0, 0.05]),
        top_normal=np.array([0.0, 0.0, 1.0]),
        height=0.1,
        supports=supports,
        velocity=np.zeros(3),
        point_count=100,
    )


def _frame(k: int, starts: dict[int, tuple[float, float]]) -> list[Parcel]:
    """Parcels (label -> start xy) moved along with the belt to frame k."""
    dt = k * PERIOD_NS * 1e-9
    return [_parcel(label, x + BELT[0] * dt, y) for label, (x, y) in starts.items()]


def test_ids_stay_with_parcels_that_ride_the_belt() -> None:
    tracker = Tracker(TrackingConfig(belt_velocity=tuple(BELT)))
    starts = {1: (0.0, -0.2), 2: (0.0, 0.0), 3: (0.1, 0.2)}
    first = tracker.update(_frame(0, starts), 0)
    ids = {p.label: p.track_id for p in first}
    assert len(set(ids.values())) == 3
    for k in range(1, 30):
        # The labels change every frame (a segmenter numbers masks afresh); ids must not.
        shuffled = list(reversed(_frame(k, starts)))
        out = tracker.update(shuffled, k * PERIOD_NS)
        for p in out:
            assert p.track_id == ids[p.label]
            np.testing.assert_allclose(p.velocity, BELT)


def test_new_parcels_get_new_ids_and_a_missed_parcel_keeps_its_own() -> None:
    tracker = Tracker(TrackingConfig(belt_velocity=tuple(BELT), max_missed=5))
    starts = {1: (0.0, 0.0), 2: (0.0, 0.3)}
    ids = {p.label: p.track_id for p in tracker.update(_frame(0, starts), 0)}
    # Parcel 2 is hidden for three frames while parcel 3 arrives.
    for k in range(1, 4):
        tracker.update(_frame(k, {1: starts[1]}), k * PERIOD_NS)
    out = tracker.update(_frame(4, {**starts, 3: (-0.5, 0.0)}), 4 * PERIOD_NS)
    got = {p.label: p.track_id for p in out}
    assert got[1] == ids[1] and got[2] == ids[2]
    assert got[3] not in ids.values()


def test_belt_velocity_is_estimated_along_the_conveyor() -> None:
    # Parcels in a frame whose x is the conveyor's y (yaw 90 degrees), as base_link here.
    rot = rotation_z(np.pi / 2)
    tracker = Tracker(TrackingConfig())
    starts = {1: (0.0, -0.2), 2: (0.2, 0.1)}
    for k in range(12):
        moved = _frame(k, starts)
        parcels = [
            _parcel(p.label, *(rot @ p.box.pose[:3, 3])[:2]) for p in moved
        ]  # fmt: skip
        out = tracker.update(parcels, k * PERIOD_NS, frame_from_conveyor=rot)
    np.testing.assert_allclose(out[0].velocity, rot @ BELT, atol=1e-6)
    np.testing.assert_allclose(tracker.velocity_estimate, rot @ BELT, atol=1e-6)
    assert len({p.track_id for p in out}) == 2


def test_configured_velocity_is_rotated_into_the_parcels_frame() -> None:
    rot = rotation_z(np.pi / 2)
    tracker = Tracker(TrackingConfig(belt_velocity=(0.5, 0.0, 0.0)))
    np.testing.assert_allclose(tracker.velocity(rot), [0.0, 0.5, 0.0], atol=1e-12)
    np.testing.assert_allclose(
        tracker.velocity(make_transform(rot, [1, 2, 3])), [0, 0.5, 0], atol=1e-12
    )
    assert tracker.velocity_estimate is None


def test_a_stamp_going_backwards_starts_afresh() -> None:
    tracker = Tracker(TrackingConfig())
    starts = {1: (0.0, 0.0)}
    for k in range(5):
        first_id = tracker.update(_frame(k, starts), 10_000_000_000 + k * PERIOD_NS)[0].track_id
    assert tracker.velocity_estimate is not None
    # The bag loops: the same parcel, earlier stamp.
    again = tracker.update(_frame(0, starts), 10_000_000_000)[0]
    assert again.track_id != first_id
    assert tracker.velocity_estimate is None
    # A long pause does the same.
    later = tracker.update(_frame(0, starts), 20_000_000_000)[0]
    assert later.track_id != again.track_id


def test_supports_come_back_as_track_ids_and_are_remembered_out_of_sight() -> None:
    tracker = Tracker(TrackingConfig(belt_velocity=tuple(BELT), pile_memory=3))
    for k in range(4):
        dt = k * PERIOD_NS * 1e-9
        x = BELT[0] * dt
        parcels = [_parcel(5, x, 0.0, supports=(6,)), _parcel(6, x + 0.05, 0.0)]
        out = tracker.update(parcels, k * PERIOD_NS)
    lower, upper = out
    assert lower.supports == (upper.track_id,)
    # The upper parcel leaves the view: the lower one still carries it.
    out = tracker.update([_parcel(5, BELT[0] * 4 * PERIOD_NS * 1e-9, 0.0)], 4 * PERIOD_NS)
    assert out[0].supports == (upper.track_id,)


def test_a_remembered_parcel_is_forgotten_where_its_spot_shows_the_lower_one() -> None:
    # A segmenter cut a piece off a parcel for four frames, then joined it again: the piece
    # "rested on" the parcel and vanished, and its spot now shows the parcel itself.
    def run(shown: list[int]) -> tuple[int, list[tuple[int, ...]], list[np.ndarray]]:
        """Four frames with the piece on it, then one frame per label its spot shows."""
        tracker = Tracker(TrackingConfig(belt_velocity=tuple(BELT), pile_memory=3))
        asked: list[np.ndarray] = []
        for k in range(4):
            x = BELT[0] * k * PERIOD_NS * 1e-9
            parcels = [_parcel(5, x, 0.0, supports=(6,)), _parcel(6, x + 0.05, 0.0)]
            upper = tracker.update(parcels, k * PERIOD_NS)[1].track_id
        supports = []
        for k, label in enumerate(shown, start=6):
            x = BELT[0] * k * PERIOD_NS * 1e-9

            def at(points: np.ndarray, label: int = label) -> np.ndarray:
                asked.append(points)
                return np.full(len(points), label)

            (lower,) = tracker.update([_parcel(5, x, 0.0)], k * PERIOD_NS, labels_at=at)
            supports.append(lower.supports)
        return upper, supports, asked

    # The lower parcel's own mask for 3 frames (pile_memory), then off the image.
    upper, supports, asked = run([5, 5, 5, -1])
    assert supports == [(upper,), (upper,), (), ()]  # gone for good once seen gone 3 times
    # It looked where the piece's top was last seen, moved on with the belt for 3 frames.
    np.testing.assert_allclose(
        asked[0], [[0.05 + BELT[0] * 6 * PERIOD_NS * 1e-9, 0.0, 0.1]], atol=1e-9
    )
    # Off the image (-1), under a third parcel's mask, or not 3 frames in a row: still on it
    # (a mask merged with the lower one's for a frame or two shows the same).
    upper, supports, _ = run([-1, 9, 5, 5, -1, 5, 5, 9])
    assert supports == [(upper,)] * 8


def test_a_neighbour_seen_on_it_in_a_few_ambiguous_views_is_not_remembered() -> None:
    tracker = Tracker(TrackingConfig(belt_velocity=tuple(BELT), pile_memory=3))
    for k in range(10):
        x = BELT[0] * k * PERIOD_NS * 1e-9
        on = (6,) if k in (0, 3, 5) else ()
        out = tracker.update(
            [_parcel(5, x, 0.0, supports=on), _parcel(6, x + 0.05, 0.0)], k * PERIOD_NS
        )
    assert out[0].supports == ()
    # The neighbour leaves the view: three sightings in ten frames are not a pile.
    out = tracker.update([_parcel(5, BELT[0] * 10 * PERIOD_NS * 1e-9, 0.0)], 10 * PERIOD_NS)
    assert out[0].supports == ()


def test_predicted_grasp_moves_with_the_belt() -> None:
    tracker = Tracker(TrackingConfig(belt_velocity=tuple(BELT)))
    (parcel,) = tracker.update([_parcel(1, 0.0, 0.0)], 1_000_000_000)
    grasp = GraspCandidate(
        pose=make_transform(np.eye(3), [0.1, 0.2, 0.3]),
        score=0.9,
        kind=GraspKind.SUCTION,
        width=0.04,
        parcel_id=parcel.track_id,
        parcel_class=parcel.parcel_class,
        parcel_box=parcel.box,
        frame_id='conveyor',
        stamp_ns=1_000_000_000,
        velocity=parcel.velocity,
    )
    later = tracker.predict(grasp, 1_500_000_000)
    np.testing.assert_allclose(later.pose[:3, 3], [0.25, 0.2, 0.3])
    np.testing.assert_allclose(later.parcel_box.pose[:3, 3], parcel.box.pose[:3, 3] + [0.15, 0, 0])
    assert later.stamp_ns == 1_500_000_000


@pytest.mark.parametrize(
    ('field', 'value', 'message'),
    [
        ('belt_velocity', (0.3, float('nan'), 0.0), 'belt_velocity'),
        ('match_gate', 0.0, 'match_gate'),
        ('max_missed', -1, 'max_missed'),
        ('velocity_window', 0, 'velocity_window'),
    ],
)
def test_config_rejects_bad_values(field: str, value: object, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        TrackingConfig(**{field: value})


def test_a_track_matches_against_the_class_it_is_given() -> None:
    config = TrackingConfig(belt_velocity=(0.0, 0.0, 0.0), class_penalty=0.05)
    tracker = Tracker(config)
    first = tracker.update([_parcel(1, 0.0, 0.0)], 0)
    # Two detections at the same distance; the one of the track's class wins.
    near = [
        replace(_parcel(1, 0.01, 0.0), parcel_class=ParcelClass.ENVELOPE),
        replace(_parcel(2, -0.01, 0.0), parcel_class=ParcelClass.BOX),
    ]
    tracker.set_classes({first[0].track_id: ParcelClass.ENVELOPE})
    ids = [p.track_id for p in tracker.update(near, PERIOD_NS)]
    assert ids[0] == first[0].track_id and ids[1] != ids[0]
