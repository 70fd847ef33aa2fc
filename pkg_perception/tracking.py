# Copyright 2026 The pkg_perception Authors
# SPDX-License-Identifier: Apache-2.0
"""Conveyor-aware tracking: parcel ids that stay put while the belt carries parcels along.

Everything on the belt moves with one velocity, so a track is predicted with the belt
velocity (configured, or estimated from the tracks themselves: the median of recent
per-parcel velocities, along the conveyor's x axis when the conveyor frame is known) and
matched to the nearest detection by optimal assignment. Stamps going backwards (a bag
loop) or a long gap start afresh rather than match against a stale past.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import numpy.typing as npt
from scipy.optimize import linear_sum_assignment

from pkg_perception.classes import ParcelClass
from pkg_perception.errors import ConfigError
from pkg_perception.results import GraspCandidate, Parcel

FloatArray = npt.NDArray[np.float64]
# (N, 3) points in the parcels' frame -> (N,) the label of the mask each projects onto: 0 for
# the belt (no mask), -1 outside the image.
LabelsAt = Callable[[FloatArray], npt.NDArray[np.int64]]
_INFEASIBLE = 1e6


@dataclass(frozen=True)
class TrackingConfig:
    """Settings of the tracker (config section `tracking`).

    Attributes:
        belt_velocity: (vx, vy, vz) m/s in the conveyor frame; None estimates it.
        match_gate: largest distance, metres, between a prediction and its detection.
        max_missed: frames a track survives unseen (occlusion, a missed mask).
        max_gap_s: a longer pause between stamps resets the tracker.
        velocity_window: recent per-parcel velocity samples the estimate is the median of.
        class_penalty: metres added to the match cost when the classes differ.
        pile_memory: frames a parcel must be seen resting on another before the tracker
            remembers it there once it is out of sight (0 turns the memory off). It must
            also have been seen on it in most frames that showed both: a neighbour that
            seemed to lie on it in a few ambiguous views is not remembered. It is
            forgotten once its spot, moved on with the belt, shows the lower parcel's own
            mask in as many frames in a row.
        class_memory: how much a parcel's earlier frames count in its class against the
            current one (their mean log-probability; 1 as much, 0 turns it off): a
            parcel keeps its class on the belt, a single view can mislead.
    """

    belt_velocity: tuple[float, float, float] | None = None
    match_gate: float = 0.08
    max_missed: int = 30
    max_gap_s: float = 1.0
    velocity_window: int = 60
    class_penalty: float = 0.03
    pile_memory: int = 3
    class_memory: float = 1.0

    def __post_init__(self) -> None:
        if self.belt_velocity is not None and (
            len(self.belt_velocity) != 3 or not all(math.isfinite(v) for v in self.belt_velocity)
        ):
            raise ConfigError(
                f'tracking.belt_velocity {self.belt_velocity} must be three finite numbers '
                '(m/s in the conveyor frame) or null to estimate it'
            )
        if not (math.isfinite(self.match_gate) and self.match_gate > 0):
            raise ConfigError(f'tracking.match_gate {self.match_gate} must be positive')
        if self.max_missed < 0:
            raise ConfigError(f'tracking.max_missed {self.max_missed} must be 0 or more')
        if not self.max_gap_s > 0:
            raise ConfigError(f'tracking.max_gap_s {self.max_gap_s} must be positive')
        if self.velocity_window < 1:
            raise ConfigError(
                f'tracking.velocity_window {self.velocity_window} must be at least 1'
            )
        if self.pile_memory < 0:
            raise ConfigError(f'tracking.pile_memory {self.pile_memory} must be 0 or more')
        if not (math.isfinite(self.class_memory) and self.class_memory >= 0):
            raise ConfigError(
                f'tracking.class_memory {self.class_memory} must be 0 (off) or more; 1 weighs '
                "a parcel's earlier frames as much as the current one"
            )
        if self.class_penalty < 0:
            raise ConfigError(f'tracking.class_penalty {self.class_penalty} must be 0 or more')


@dataclass
class _Load:
    """A parcel seen resting on a track's parcel: what its pile-order memory keeps."""

    top: FloatArray  # (3,) where its top was last seen
    stamp_ns: int  # when
    seen_on: int = 0  # frames it was seen resting on the track's parcel
    together: int = 0  # frames both were in view since it was first seen on it
    gone: int = 0  # frames in a row its spot, moved on with the belt, showed the lower mask


@dataclass
class _Track:
    track_id: int
    position: FloatArray  # (3,) reference point (centroid or box centre) at the last update
    top: FloatArray  # (3,) top-surface centre at the last update
    box: tuple[FloatArray, FloatArray]  # (4, 4) pose and (3,) size of the largest view yet
    parcel_class: ParcelClass
    missed: int = 0
    age: int = 0  # frames since the track started
    # Track id -> a parcel seen resting on this one (pile order memory).
    loads: dict[int, _Load] = field(default_factory=dict)


class Tracker:
    """Stable ids for parcels riding the belt; one instance per camera stream.

    Positions are compared in whatever frame the parcels come in; pass the rotation from
    the conveyor frame into it when the belt velocity is configured.
    """

    def __init__(self, config: TrackingConfig | None = None) -> None:
        self.config = config or TrackingConfig()
        self._next_id = 1
        self.reset()

    def reset(self) -> None:
        """Forget every track and the velocity estimate; ids keep counting up."""
        self._tracks: list[_Track] = []
        self._stamp_ns: int | None = None
        self._estimate: FloatArray | None = None
        self._samples: deque[FloatArray] = deque(maxlen=self.config.velocity_window)

    def set_classes(self, classes: Mapping[int, ParcelClass]) -> None:
        """Give tracks (by id) the class their parcel has over its frames (`ClassMemory`).

        The next frame's match then weighs a detection's class against that, not against
        the last view's.
        """
        for track in self._tracks:
            track.parcel_class = classes.get(track.track_id, track.parcel_class)

    @property
    def track_ids(self) -> frozenset[int]:
        """Ids of the tracks alive (seen, or unseen for at most `max_missed` frames)."""
        return frozenset(t.track_id for t in self._tracks)

    @property
    def velocity_estimate(self) -> FloatArray | None:
        """Belt velocity measured from the tracks (parcels' frame), None before two frames."""
        return None if self._estimate is None else self._estimate.copy()

    def velocity(self, frame_from_conveyor: npt.ArrayLike | None = None) -> FloatArray:
        """Belt velocity in the parcels' frame, m/s: configured, else estimated, else 0."""
        if self.config.belt_velocity is not None:
            v = np.asarray(self.config.belt_velocity, dtype=np.float64)
            if frame_from_conveyor is not None:
                v = np.asarray(frame_from_conveyor, dtype=np.float64)[:3, :3] @ v
            return v
        return np.zeros(3) if self._estimate is None else self._estimate.copy()

    def known_velocity(
        self, frame_from_conveyor: npt.ArrayLike | None = None
    ) -> FloatArray | None:
        """`velocity` where it is known: configured (and placeable), else measured; else None.

        A configured velocity is in the conveyor frame, so it needs `frame_from_conveyor`.
        """
        if self.config.belt_velocity is not None:
            return None if frame_from_conveyor is None else self.velocity(frame_from_conveyor)
        return self.velocity_estimate

    def update(
        self,
        parcels: Sequence[Parcel],
        stamp_ns: int,
        *,
        frame_from_conveyor: npt.ArrayLike | None = None,
        whole: Sequence[bool] | None = None,
        positions: npt.ArrayLike | None = None,
        labels_at: LabelsAt | None = None,
    ) -> list[Parcel]:
        """Give each parcel a track id and the belt velocity; same order as `parcels`.

        A track matches a detection when either its reference point or its top-surface
        centre, moved on with the belt, lands within the gate: when a parcel enters the view
        or is uncovered one of the two jumps, rarely both. Tracks left over get a second
        chance at twice the gate before a new track starts, and older tracks win ties, so
        one parcel does not end up with two tracks taking turns.

        Args:
            parcels: this frame's parcels, all in one frame; `supports` hold their labels
                (the segmentation's), and come back holding track ids.
            stamp_ns: the frame's stamp; earlier than the last one (a loop) resets.
            frame_from_conveyor: (3, 3) or (4, 4) rotation from the conveyor frame into the
                parcels' frame, for a configured belt velocity.
            whole: per parcel, whether it lies wholly in view; only those, and only with
                nothing on them, measure the belt velocity (a parcel sliding into view or
                being uncovered seems to move at another speed).
            positions: (N, 3) reference points in the parcels' frame (e.g. the centroid of
                each parcel's points); the box centres by default.
            labels_at: the frame's masks under points of the parcels' frame (`LabelsAt`).
                A parcel remembered on another is forgotten where the spot it was last
                seen at, moved on with the belt, now shows the lower parcel's own mask:
                nothing lies there any more (it was taken off, or it was a piece of the
                lower parcel that a segmenter had cut off for a few frames), once that
                holds for `pile_memory` frames in a row. Without it the memory holds until
                the lower parcel's track ends.
        """
        cfg = self.config
        if self._stamp_ns is not None:
            gap = (stamp_ns - self._stamp_ns) * 1e-9
            if gap < 0 or gap > cfg.max_gap_s:
                self.reset()
        dt = 0.0 if self._stamp_ns is None else (stamp_ns - self._stamp_ns) * 1e-9
        velocity = self.velocity(frame_from_conveyor)
        if positions is None:
            det = np.array([p.box.pose[:3, 3] for p in parcels], dtype=np.float64)
        else:
            det = np.asarray(positions, dtype=np.float64)
        det = det.reshape(-1, 3)
        top = np.array([p.top_center for p in parcels], dtype=np.float64).reshape(-1, 3)
        ids = [0] * len(parcels)
        matched: dict[int, int] = {}  # track index -> detection index
        if self._tracks and len(parcels):
            shift = velocity * dt
            pred = np.array([t.position for t in self._tracks]) + shift
            pred_top = np.array([t.top for t in self._tracks]) + shift
            cost = np.minimum(
                np.linalg.norm(pred[:, None, :] - det[None, :, :], axis=2),
                np.linalg.norm(pred_top[:, None, :] - top[None, :, :], axis=2),
            )
            track_cls = np.array([int(t.parcel_class) for t in self._tracks])
            det_cls = np.array([int(p.parcel_class) for p in parcels])
            cost += cfg.class_penalty * (track_cls[:, None] != det_cls[None, :])
            # Ties go to the older track (a millimetre per frame of age, up to a centimetre).
            cost -= 0.001 * np.minimum([t.age for t in self._tracks], 10)[:, None]
            for attempt in range(3):
                free_t = [r for r in range(len(self._tracks)) if r not in matched]
                free_d = [c for c in range(len(parcels)) if c not in matched.values()]
                if not free_t or not free_d:
                    break
                if attempt < 2:
                    sub = cost[np.ix_(free_t, free_d)]
                    gate = cfg.match_gate * (1 + attempt)
                else:  # what reappears from behind another parcel shows another part of it
                    sub = self._box_cost(free_t, [parcels[c] for c in free_d], det[free_d], shift)
                    gate = cfg.match_gate
                sub = np.where(sub > gate, _INFEASIBLE, sub)
                rows, cols = linear_sum_assignment(sub)
                for r, c in zip(rows, cols, strict=True):
                    if sub[r, c] < _INFEASIBLE:
                        matched[free_t[r]] = free_d[c]
            moves = []
            for r, c in matched.items():
                track = self._tracks[r]
                if dt > 0 and (whole is None or whole[c]) and not parcels[c].supports:
                    moves.append((top[c] - track.top) / dt)
                track.position, track.top = det[c], top[c]
                size = parcels[c].box.size
                if size[0] * size[1] >= track.box[1][0] * track.box[1][1] or track.missed:
                    track.box = (parcels[c].box.pose, size)
                else:  # keep the largest view of the parcel, carried along with the belt
                    track.box = _moved(track.box, velocity * dt)
                track.parcel_class = parcels[c].parcel_class
                track.missed = 0
                track.age += 1
                ids[c] = track.track_id
            if moves and cfg.belt_velocity is None:
                self._samples.extend(moves)
                self._estimate = _belt_velocity(np.array(self._samples), frame_from_conveyor)
                velocity = self._estimate.copy()
        kept = []
        for r, track in enumerate(self._tracks):
            if r not in matched:
                track.missed += 1
                track.age += 1
                track.position = track.position + velocity * dt
                track.top = track.top + velocity * dt
                track.box = _moved(track.box, velocity * dt)
                if track.missed > cfg.max_missed:
                    continue
            kept.append(track)
        for c, p in enumerate(parcels):
            if ids[c] == 0:
                ids[c] = self._next_id
                self._next_id += 1
                kept.append(
                    _Track(ids[c], det[c], top[c], (p.box.pose, p.box.size), p.parcel_class)
                )
        self._tracks = kept
        self._stamp_ns = stamp_ns
        by_label = {p.label: tid for p, tid in zip(parcels, ids, strict=True)}
        by_id = {t.track_id: t for t in kept}
        seen_now = set(ids)
        out = []
        top_of = {tid: top[c] for c, tid in enumerate(ids)}
        for p, tid in zip(parcels, ids, strict=True):
            on_it = {by_label[s] for s in p.supports if s in by_label}
            loads = by_id[tid].loads
            for s in on_it:
                if s not in loads:
                    loads[s] = _Load(top_of[s], stamp_ns)
                loads[s].seen_on += 1
            for s, load in loads.items():
                if s in seen_now:
                    load.together += 1
                    load.top, load.stamp_ns, load.gone = top_of[s], stamp_ns, 0
            # Pile order does not change on a belt: a parcel seen on this one for a few
            # frames stays on it after it leaves the view or is hidden. One in view and no
            # longer seen on it has been taken off.
            remembered = [
                s
                for s, load in loads.items()
                if cfg.pile_memory
                and load.seen_on >= cfg.pile_memory
                and 2 * load.seen_on >= load.together
                and s not in seen_now
            ]
            if remembered and labels_at is not None:
                spots = [
                    loads[s].top + velocity * ((stamp_ns - loads[s].stamp_ns) * 1e-9)
                    for s in remembered
                ]
                for s, at in zip(remembered, labels_at(np.array(spots)), strict=True):
                    # Its spot shows this parcel: gone, once that holds for as many frames
                    # as it took to be remembered (a mask merged with it for a frame or two
                    # shows the same).
                    load = loads[s]
                    load.gone = load.gone + 1 if at == p.label else 0
                    if load.gone >= cfg.pile_memory:
                        del loads[s]
                remembered = [s for s in remembered if s in loads]
            supports = tuple(sorted(on_it | set(remembered)))
            out.append(replace(p, track_id=tid, velocity=velocity.copy(), supports=supports))
        return out

    def _box_cost(
        self,
        track_rows: list[int],
        parcels: list[Parcel],
        points: FloatArray,
        shift: FloatArray,
    ) -> FloatArray:
        """(T, D) distance between tracks and detections by their boxes (0 when inside).

        The least of: the detection's point outside the track's predicted box, and the
        track's predicted point outside the detection's box.
        """
        out = np.empty((len(track_rows), len(parcels)))
        for i, r in enumerate(track_rows):
            t = self._tracks[r]
            to_track = _outside(points, *_moved(t.box, shift))
            to_det = np.array(
                [_outside((t.position + shift)[None], p.box.pose, p.box.size)[0] for p in parcels]
            )
            out[i] = np.minimum(to_track, to_det)
        return out

    def predict(self, candidate: GraspCandidate, stamp_ns: int) -> GraspCandidate:
        """The candidate where its parcel will be at `stamp_ns` (moved with its velocity)."""
        return candidate.at_time(stamp_ns)


def _moved(
    box: tuple[FloatArray, FloatArray], offset: FloatArray
) -> tuple[FloatArray, FloatArray]:
    """A (pose, size) box translated by `offset` (the belt's travel), as a new pose."""
    pose = box[0].copy()
    pose[:3, 3] += offset
    return pose, box[1]


def _outside(points: FloatArray, pose: FloatArray, size: FloatArray) -> FloatArray:
    """Distance of (N, 3) points outside a box (0 for points inside), metres."""
    local = (points - pose[:3, 3]) @ pose[:3, :3]
    excess = np.maximum(np.abs(local) - np.asarray(size) / 2.0, 0.0)
    return np.linalg.norm(excess, axis=1)


def _belt_velocity(samples: FloatArray, frame_from_conveyor: npt.ArrayLike | None) -> FloatArray:
    """Median of per-parcel velocity samples; along the belt's travel (conveyor x) if known.

    Single parcels seem to move at odd speeds while they slide into view or are uncovered;
    the median over many recent samples ignores them, and knowing the direction leaves a
    single number to estimate.
    """
    if frame_from_conveyor is None:
        return np.median(samples, axis=0)
    axis = np.asarray(frame_from_conveyor, dtype=np.float64)[:3, 0]
    speeds = samples @ axis
    speed = float(np.median(speeds))
    # The samples near the median (within 20 %) are the parcels moving cleanly.
    near = np.abs(speeds - speed) <= 0.2 * abs(speed) + 0.01
    if near.any():
        speed = float(np.mean(speeds[near]))
    return speed * axis
