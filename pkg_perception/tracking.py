# Copyright 2026 The pkg_perception Authors
# SPDX-License-Identifier: Apache-2.0
"""Conveyor-aware tracking: parcel ids that stay put while the belt carries parcels along.

Everything on the belt moves with one velocity, so a track is predicted with the belt
velocity (configured, or estimated from the tracks themselves) and matched to the nearest
detection by optimal assignment. Stamps going backwards (a bag loop) or a long gap start
afresh rather than match against a stale past.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import numpy.typing as npt
from scipy.optimize import linear_sum_assignment

from pkg_perception.classes import ParcelClass
from pkg_perception.errors import ConfigError
from pkg_perception.results import GraspCandidate, Parcel

FloatArray = npt.NDArray[np.float64]
_INFEASIBLE = 1e6


@dataclass(frozen=True)
class TrackingConfig:
    """Settings of the tracker (config section `tracking`).

    Attributes:
        belt_velocity: (vx, vy, vz) m/s in the conveyor frame; None estimates it.
        match_gate: largest distance, metres, between a prediction and its detection.
        max_missed: frames a track survives unseen (occlusion, a missed mask).
        max_gap_s: a longer pause between stamps resets the tracker.
        velocity_smoothing: weight of each new velocity measurement (exponential average).
        class_penalty: metres added to the match cost when the classes differ.
    """

    belt_velocity: tuple[float, float, float] | None = None
    match_gate: float = 0.08
    max_missed: int = 5
    max_gap_s: float = 1.0
    velocity_smoothing: float = 0.3
    class_penalty: float = 0.03

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
        if not 0 < self.velocity_smoothing <= 1:
            raise ConfigError(
                f'tracking.velocity_smoothing {self.velocity_smoothing} must be in (0, 1]'
            )
        if self.class_penalty < 0:
            raise ConfigError(f'tracking.class_penalty {self.class_penalty} must be 0 or more')


@dataclass
class _Track:
    track_id: int
    position: FloatArray  # (3,) box centre at the last update
    top: FloatArray  # (3,) top-surface centre at the last update
    parcel_class: ParcelClass
    missed: int = 0


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

    def update(
        self,
        parcels: Sequence[Parcel],
        stamp_ns: int,
        *,
        frame_from_conveyor: npt.ArrayLike | None = None,
        whole: Sequence[bool] | None = None,
    ) -> list[Parcel]:
        """Give each parcel a track id and the belt velocity; same order as `parcels`.

        A track matches a detection when either its box centre or its top-surface centre,
        moved on with the belt, lands within the gate: when a parcel enters the view or is
        uncovered one of the two jumps, rarely both.

        Args:
            parcels: this frame's parcels, all in one frame; `supports` hold their labels
                (the segmentation's), and come back holding track ids.
            stamp_ns: the frame's stamp; earlier than the last one (a loop) resets.
            frame_from_conveyor: (3, 3) or (4, 4) rotation from the conveyor frame into the
                parcels' frame, for a configured belt velocity.
            whole: per parcel, whether it lies wholly in view; only those measure the belt
                velocity (a parcel sliding into view seems to move at another speed).
        """
        cfg = self.config
        if self._stamp_ns is not None:
            gap = (stamp_ns - self._stamp_ns) * 1e-9
            if gap < 0 or gap > cfg.max_gap_s:
                self.reset()
        dt = 0.0 if self._stamp_ns is None else (stamp_ns - self._stamp_ns) * 1e-9
        velocity = self.velocity(frame_from_conveyor)
        det = np.array([p.box.pose[:3, 3] for p in parcels], dtype=np.float64).reshape(-1, 3)
        top = np.array([p.top_center for p in parcels], dtype=np.float64).reshape(-1, 3)
        ids = [0] * len(parcels)
        matched_tracks: set[int] = set()
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
            cost = cost + cfg.class_penalty * (track_cls[:, None] != det_cls[None, :])
            cost[cost > cfg.match_gate] = _INFEASIBLE
            rows, cols = linear_sum_assignment(cost)
            moves = []
            for r, c in zip(rows, cols, strict=True):
                if cost[r, c] >= _INFEASIBLE:
                    continue
                track = self._tracks[r]
                if dt > 0 and (whole is None or whole[c]):
                    moves.append((top[c] - track.top) / dt)
                track.position, track.top = det[c], top[c]
                track.parcel_class = parcels[c].parcel_class
                track.missed = 0
                ids[c] = track.track_id
                matched_tracks.add(r)
            if moves and cfg.belt_velocity is None:
                measured = np.median(np.array(moves), axis=0)
                a = cfg.velocity_smoothing
                self._estimate = (
                    measured if self._estimate is None else (1 - a) * self._estimate + a * measured
                )
                velocity = self._estimate.copy()
        kept = []
        for r, track in enumerate(self._tracks):
            if r not in matched_tracks:
                track.missed += 1
                track.position = track.position + velocity * dt
                track.top = track.top + velocity * dt
                if track.missed > cfg.max_missed:
                    continue
            kept.append(track)
        for c, p in enumerate(parcels):
            if ids[c] == 0:
                ids[c] = self._next_id
                self._next_id += 1
                kept.append(_Track(ids[c], det[c], top[c], p.parcel_class))
        self._tracks = kept
        self._stamp_ns = stamp_ns
        by_label = {p.label: tid for p, tid in zip(parcels, ids, strict=True)}
        return [
            replace(
                p,
                track_id=tid,
                velocity=velocity.copy(),
                supports=tuple(sorted(by_label[s] for s in p.supports if s in by_label)),
            )
            for p, tid in zip(parcels, ids, strict=True)
        ]

    def predict(self, candidate: GraspCandidate, stamp_ns: int) -> GraspCandidate:
        """The candidate where its parcel will be at `stamp_ns` (moved with its velocity)."""
        return candidate.at_time(stamp_ns)
