# Copyright 2026 The pkg_perception Authors
# SPDX-License-Identifier: Apache-2.0
"""Suction and parallel-jaw candidates on lifted parcels, scored in [0, 1].

Suction goes where the cup seals: on the top plane, a cup radius (plus margin) away from
every edge of the visible surface (the parcel's outline, a neighbour, the image border, a
hole in depth), on a patch that is flat and not too tilted. The cup approaches along the
patch's normal, or on a soft top along its crown's (wrinkles tilt a patch, not the crown).
Parallel-jaw grasps close across the short side of parcels that fit the opening, with room
for the fingers on both sides.
Candidates come out in the camera's optical frame; the pipeline moves them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache

import cv2
import numpy as np
import numpy.typing as npt

from pkg_perception.classes import ParcelClass
from pkg_perception.errors import ConfigError
from pkg_perception.frames import CameraModel, usable_depth
from pkg_perception.geometry import (
    cross,
    fit_planes,
    frames_from_axes,
    normalized_rays,
    project_points,
    ray_planes,
)
from pkg_perception.lifting import SOFT_CLASSES, LiftedParcel, LiftParams
from pkg_perception.results import GraspCandidate, GraspKind, OrientedBox
from pkg_perception.segmentation.belt import BeltPlane

QUANTIZATION_SIGMA = 0.001 / math.sqrt(12.0)  # 1 mm depth steps
SCORE_DECIMALS = 6  # candidates whose scores agree to this many decimals tie
# The surface's slope is judged over 3 cm (a cup and a half): wide enough to average depth
# noise away, narrow enough to see a bag's crown end. Samples more than 1.5 cm off the top
# plane belong to something else (a side, a neighbour). On the seven grasp bags (ground
# truth masks) windows of 2 and 3 cm score the same; slope limits of 10 / 12 / 14 degrees
# give top-1 0.935 / 0.928 / 0.923 and recall 0.924 / 0.947 / 0.948 (none: 0.898 / 0.948).
SLOPE_WINDOW = 0.03
SLOPE_BAND = 0.015
# The crown fallback trusts a top plane that faces up: a steeply tilted plane was fitted to
# a flank (or the bag leans). Up to 5 degrees with the crown's middle as the spot (eleven
# grasp bags, fallback cups within 5 degrees right 69 times in 109, within 5-10 degrees 7 in
# 44). With a soft parcel's footprint middle as the spot (see `_cup_centres`), on 40 grasp
# bags (ground-truth masks) limits of 5 / 8 / 12 / 90 degrees serve 13985 / 14045 / 14064 /
# 14087 of 14860 graspable parcel-frames, and add 0 / 3 / 4 / 10 frames whose first cup
# misses.
CROWN_FALLBACK_MIN_COS = math.cos(math.radians(12.0))
# A poly bag's crown is rounded and wrinkled, so its plane is least sure where it tilts and
# its flat core is narrow across the bag: over these ranges of crown tilt (degrees) and of the
# cup's offset from the footprint's middle across the bag (a share of the bag's width), the
# score falls to `rounded_crown_penalty` (each range on its own).
ROUNDED_CROWN_TILT_DEG = (5.0, 15.0)
ROUNDED_CROWN_OFFSET = (0.05, 0.15)


@dataclass(frozen=True)
class GraspConfig:
    """Tool geometry and limits, metres and degrees (config section `grasping`).

    Attributes:
        cup_radius: suction cup radius; candidates keep this far from every edge.
        edge_margin: extra distance to edges, for mask and calibration error.
        max_tilt_deg: largest angle between the surface normal and the belt normal.
        max_cup_rms: unevenness under the cup (beyond sensor noise) at which the score
            for flatness reaches 0 and the candidate is dropped.
        min_cup_points: depth samples needed under the cup to judge it.
        max_patch_deviation_deg: largest angle between the surface under the cup and the
            parcel's top plane; beyond it the cup sits on a curved rim or a crease.
        max_surface_slope_deg: where the top, smoothed over 3 cm, tilts more than this
            from its plane (a poly bag's flanks), the surface ends for the cup: it keeps
            its radius from there as from any edge, and so sits on the crown.
        crown_fallback_penalty: score factor for a cup on a crown too small to keep a
            cup radius from its end (small poly bags, a lid halved by a crease), placed at
            a soft parcel's footprint middle, else the crown's middle, with its clearance
            from the real edges; 0 plans none there.
        rounded_crown_penalty: score factor a poly bag's cup falls to as its crown plane
            tilts from 5 to 15 degrees, and again as it sits 5 to 15 % of the bag's width off
            the middle across the bag: there a rounded, wrinkled crown misleads the planner
            most; 1 turns it off.
        suction, parallel_jaw: which tools to plan for.
        gripper_max_opening: parallel-jaw stroke; parcels wider than it minus the clearance
            on both sides get no jaw candidate.
        gripper_clearance: free space wanted beside each finger's contact.
        finger_depth, finger_width: how far the fingers reach below the top, and their width.
        min_jaw_height: thinner parcels (envelopes) offer nothing to close on.
        jaw_score_scale: jaw scores are scaled by this, so a good seal ranks first.
        max_candidates_per_parcel: suction candidates per parcel (spread a cup apart).
        max_candidates: per frame, best first.
        min_score: candidates below are dropped.
        under_penalty: score factor for a parcel another parcel lies on (pile order).
        beside_higher_penalty: score factor for a parcel with a taller neighbour, which
            may rest on it where that cannot be seen.
        partial_view_penalty: score factor for a parcel cut by the image border: what
            lies beyond the border (another parcel resting on it) is unknown.
        withhold_when_all_under: publish no candidate in a frame where every candidate is
            on a parcel something rests on: nothing in view is safe to pick, and the next
            frame, further along the belt, may show a free one.
        edge_score_distance: distance beyond the required edge clearance at which the
            score for edge distance is full; the middle of a surface ranks first.
        lift: how masks become surfaces.
    """

    cup_radius: float = 0.02
    edge_margin: float = 0.004
    max_tilt_deg: float = 30.0
    max_cup_rms: float = 0.004
    min_cup_points: int = 8
    max_patch_deviation_deg: float = 8.0
    max_surface_slope_deg: float = 12.0
    crown_fallback_penalty: float = 0.5
    rounded_crown_penalty: float = 0.5
    suction: bool = True
    parallel_jaw: bool = True
    gripper_max_opening: float = 0.14
    gripper_clearance: float = 0.01
    finger_depth: float = 0.03
    finger_width: float = 0.02
    min_jaw_height: float = 0.02
    jaw_score_scale: float = 0.5
    max_candidates_per_parcel: int = 3
    max_candidates: int = 64
    min_score: float = 0.05
    under_penalty: float = 0.25
    beside_higher_penalty: float = 0.7
    partial_view_penalty: float = 0.7
    withhold_when_all_under: bool = True
    edge_score_distance: float = 0.05
    lift: LiftParams = field(default_factory=LiftParams)

    def __post_init__(self) -> None:
        positive = {
            'cup_radius': self.cup_radius,
            'gripper_max_opening': self.gripper_max_opening,
            'finger_depth': self.finger_depth,
            'finger_width': self.finger_width,
            'max_cup_rms': self.max_cup_rms,
            'edge_score_distance': self.edge_score_distance,
        }
        for name, value in positive.items():
            if not (math.isfinite(value) and value > 0):
                raise ConfigError(f'grasping.{name} = {value} must be a positive number')
        non_negative = {
            'edge_margin': self.edge_margin,
            'gripper_clearance': self.gripper_clearance,
            'min_jaw_height': self.min_jaw_height,
        }
        for name, value in non_negative.items():
            if not (math.isfinite(value) and value >= 0):
                raise ConfigError(f'grasping.{name} = {value} must be 0 or more')
        for name in ('max_tilt_deg', 'max_patch_deviation_deg', 'max_surface_slope_deg'):
            value = getattr(self, name)
            if not 0 < value < 90:
                raise ConfigError(f'grasping.{name} = {value} must be in (0, 90)')
        for name in (
            'jaw_score_scale',
            'min_score',
            'under_penalty',
            'beside_higher_penalty',
            'partial_view_penalty',
            'crown_fallback_penalty',
            'rounded_crown_penalty',
        ):
            value = getattr(self, name)
            if not 0 <= value <= 1:
                raise ConfigError(f'grasping.{name} = {value} must be in [0, 1]')
        for name in ('max_candidates_per_parcel', 'max_candidates', 'min_cup_points'):
            if getattr(self, name) < 1:
                raise ConfigError(f'grasping.{name} = {getattr(self, name)} must be at least 1')

    @property
    def max_surface_tan(self) -> float:
        return math.tan(math.radians(self.max_surface_slope_deg))


@dataclass(frozen=True)
class GraspPlan:
    """One frame's candidates as arrays in the camera's optical frame, best first.

    Arrays keep the per-candidate cost to a few vector operations; `candidates` turns them
    into GraspCandidate objects once ids and the output frame are known.
    """

    poses: npt.NDArray[np.float64]  # (K, 4, 4) T_camera_tool
    scores: npt.NDArray[np.float64]  # (K,)
    jaw: npt.NDArray[np.bool_]  # (K,) parallel-jaw (else suction)
    widths: npt.NDArray[np.float64]  # (K,) metres
    parcel_index: npt.NDArray[np.intp]  # (K,) index into the lifted parcels

    def __len__(self) -> int:
        return len(self.scores)

    def candidates(
        self,
        parcels: list[LiftedParcel],
        *,
        frame_id: str,
        stamp_ns: int,
        transform: npt.NDArray[np.float64] | None = None,
        parcel_ids: list[int] | None = None,
        boxes: list[OrientedBox] | None = None,
        velocities: list[npt.NDArray[np.float64]] | None = None,
    ) -> list[GraspCandidate]:
        """GraspCandidates, moved by `transform` (T_frame_camera) when given.

        `parcel_ids`, `boxes` and `velocities` are per parcel (defaults: labels, camera-frame
        boxes, zero); pass the tracker's ids and the output frame's boxes.
        """
        poses = self.poses if transform is None else transform @ self.poses
        out = []
        for k in range(len(self.scores)):
            i = int(self.parcel_index[k])
            p = parcels[i]
            box = boxes[i] if boxes is not None else p.box
            assert box is not None
            out.append(
                GraspCandidate(
                    pose=poses[k],
                    score=float(self.scores[k]),
                    kind=GraspKind.PARALLEL_JAW if self.jaw[k] else GraspKind.SUCTION,
                    width=float(self.widths[k]),
                    parcel_id=parcel_ids[i] if parcel_ids is not None else p.label,
                    parcel_class=p.instance.parcel_class,
                    parcel_box=box,
                    frame_id=frame_id,
                    stamp_ns=stamp_ns,
                    velocity=velocities[i].copy() if velocities is not None else np.zeros(3),
                )
            )
        return out


def plan(
    parcels: list[LiftedParcel],
    labels: npt.NDArray[np.uint16],
    depth: npt.NDArray[np.float32],
    camera: CameraModel,
    belt: BeltPlane,
    config: GraspConfig,
) -> GraspPlan:
    """Suction and parallel-jaw candidates for all parcels, scored and ranked.

    Args:
        parcels: lifted parcels (optical frame) with boxes and pile order set.
        labels: (H, W) the segmentation's label image.
        depth: (H, W) float32 metres, NaN invalid.
        camera: intrinsics of the image.
        belt: the belt plane in the optical frame.
        config: tool geometry and limits.
    """
    parts = []
    factors = _parcel_factors(parcels, config, labels.shape)
    if config.suction:
        parts.append(_suction(parcels, factors, labels, depth, camera, belt, config))
    if config.parallel_jaw:
        parts.append(_jaws(parcels, factors, labels, depth, camera, belt, config))
    parts = [part for part in parts if part is not None]
    if not parts:
        return GraspPlan(
            np.zeros((0, 4, 4)), np.zeros(0), np.zeros(0, bool), np.zeros(0),
            np.zeros(0, np.intp),
        )  # fmt: skip
    poses = np.concatenate([q[0] for q in parts])
    scores = np.concatenate([q[1] for q in parts])
    jaw = np.concatenate([q[2] for q in parts])
    widths = np.concatenate([q[3] for q in parts])
    index = np.concatenate([q[4] for q in parts])
    fallback = np.concatenate([q[5] for q in parts])
    under = np.array([p.under for p in parcels], bool)[index]
    keep = (scores >= config.min_score) & np.isfinite(poses).all(axis=(1, 2))
    if config.withhold_when_all_under and under[keep].all():
        keep[:] = False
    # Tiers before scores: a free parcel's regular cup, then its crown-fallback cup, then
    # parcels something rests on (a parcel under another is not picked first). Scores equal
    # to 1e-6 tie, and ties keep the planning order (a parcel's most central cup first):
    # rounding noise, which differs between numpy builds, must not pick among equal cups.
    kept = np.nonzero(keep)[0]
    tied = -np.round(scores[kept], SCORE_DECIMALS)
    order = np.lexsort((kept, tied, fallback[kept], under[kept]))[: config.max_candidates]
    sel = kept[order]
    return GraspPlan(poses[sel], scores[sel], jaw[sel], widths[sel], index[sel])


def plan_grasps(
    parcels: list[LiftedParcel],
    labels: npt.NDArray[np.uint16],
    depth: npt.NDArray[np.float32],
    camera: CameraModel,
    belt: BeltPlane,
    config: GraspConfig,
    *,
    stamp_ns: int,
) -> list[GraspCandidate]:
    """`plan` as GraspCandidates in the camera frame, `parcel_id` = the mask's label."""
    result = plan(parcels, labels, depth, camera, belt, config)
    return result.candidates(parcels, frame_id=camera.frame_id, stamp_ns=stamp_ns)


# poses, scores, is-jaw, widths, parcel index, from the crown fallback
_Arrays = tuple[
    npt.NDArray[np.float64],
    npt.NDArray[np.float64],
    npt.NDArray[np.bool_],
    npt.NDArray[np.float64],
    npt.NDArray[np.intp],
    npt.NDArray[np.bool_],
]


def _parcel_factors(
    parcels: list[LiftedParcel], config: GraspConfig, shape: tuple[int, ...]
) -> npt.NDArray[np.float64]:
    """Per parcel, the factor every candidate on it is scaled by.

    Mask confidence, times the under-another (or beside-a-taller-one) penalty, times the
    cut-by-the-border penalty; computed once per frame for both tools.
    """
    h, w = shape[:2]
    out = []
    for p in parcels:
        x0, y0, x1, y1 = p.instance.box
        cut = x0 <= 0 or y0 <= 0 or x1 >= w or y1 >= h
        out.append(
            p.instance.score
            * (
                config.under_penalty
                if p.under
                else config.beside_higher_penalty
                if p.beside_higher
                else 1.0
            )
            * (config.partial_view_penalty if cut else 1.0)
        )
    return np.array(out)


def _cup_centres(
    p: LiftedParcel, camera: CameraModel, belt: BeltPlane, config: GraspConfig
) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.intp], npt.NDArray[np.float64], bool]:
    """Grid cells of up to `max_candidates_per_parcel` cup centres.

    Farthest from the surface's edges first and a cup diameter apart; with each centre's
    distance to the nearest edge, in cells. Among equally far cells (along the long axis of
    a box) the one nearest the middle of the surface comes first. The last value says the
    centre came from the crown fallback (`crown_fallback_penalty`).
    """
    none = np.zeros(0, np.intp), np.zeros(0, np.intp), np.zeros(0), False
    assert p.plane is not None
    # The nearest depth gives the fewest metres per cell: a conservative first cut.
    cell_m = p.stride * p.z_near / max(camera.fx, camera.fy)
    surface = p.surface_grid()
    need = (config.cup_radius + config.edge_margin) / cell_m + 0.5
    slope = p.surface_slope(cell_m, SLOPE_WINDOW, SLOPE_BAND)
    crown = surface
    if slope is not None:
        crown = surface.copy()
        crown[slope > config.max_surface_tan] = 0
    dist = _edge_distance(crown)
    _, best, _, _ = cv2.minMaxLoc(dist)
    if best >= need:
        return (*_spread(dist, best, need, p, cell_m, config), False)
    if (
        config.crown_fallback_penalty <= 0
        or abs(float(p.plane.normal @ belt.normal)) < CROWN_FALLBACK_MIN_COS
    ):
        return none
    # A crown too small to keep a cup radius from its own end (a small poly bag, a lid
    # halved by a flap's crease): one cup all the same, scored down. A soft parcel lies
    # symmetric about its footprint's middle, and so does its crown: the cup goes there when
    # the mask leaves it its clearance.
    if p.instance.parcel_class in SOFT_CLASSES:
        spot = _footprint_middle(p, camera, need)
        if spot is not None:
            return (*spot, True)
    if slope is None or best < 1.0:  # a plane top has no crown apart from it; or no crown
        return none
    # Else the crown's middle, if it keeps its clearance from the surface's real edges there.
    outline = _edge_distance(surface)
    rr, cc = np.nonzero(dist >= best - 1.0)  # the crown's core: along a ridge, a line
    clear = outline[rr, cc]
    most = float(clear.max())
    if most < need:
        return none
    rr, cc = rr[clear >= most - 0.5], cc[clear >= most - 0.5]
    k = int(np.argmin((rr - p.top_cell[0]) ** 2 + (cc - p.top_cell[1]) ** 2))
    return rr[k : k + 1], cc[k : k + 1], outline[rr[k : k + 1], cc[k : k + 1]], True


def _footprint_middle(
    p: LiftedParcel, camera: CameraModel, need: float
) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.intp], npt.NDArray[np.float64]] | None:
    """The grid cell under the footprint's middle, with its distance to the mask's edge.

    None when it lies off the grid or nearer the mask's edge than `need` cells.
    On 40 grasp bags (ground-truth masks) the footprint's middle lies inside the true
    crown's core (a cup radius in from its edge) on 97 % of the poly bags fully in view,
    the middle of the top plane's inliers on 95 %.
    """
    assert p.plane is not None
    n = p.plane.normal
    middle = p.footprint_centre - n * (float(p.footprint_centre @ n) + p.plane.d)
    u, v = project_points(camera, middle[None])[0]
    if not (math.isfinite(u) and math.isfinite(v)):
        return None
    x0, y0 = p.origin
    i, j = int(np.rint((v - y0) / p.stride)), int(np.rint((u - x0) / p.stride))
    if not (0 <= i < p.grid_shape[0] and 0 <= j < p.grid_shape[1]):
        return None
    clearance = float(_edge_distance(p.inside.astype(np.uint8))[i, j])
    if clearance < need:
        return None
    return np.array([i], np.intp), np.array([j], np.intp), np.array([clearance])


def _edge_distance(surface: npt.NDArray[np.uint8]) -> npt.NDArray[np.float32]:
    """Per cell, the distance in cells to the nearest cell off the surface or the grid."""
    padded = cv2.copyMakeBorder(surface, 1, 1, 1, 1, cv2.BORDER_CONSTANT, value=0)
    return cv2.distanceTransform(padded, cv2.DIST_L2, 5)[1:-1, 1:-1]


def _spread(
    dist: npt.NDArray[np.float32],
    best: float,
    need: float,
    p: LiftedParcel,
    cell_m: float,
    config: GraspConfig,
) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.intp], npt.NDArray[np.float64]]:
    """The farthest cell (nearest the middle among ties), then the next ones a cup apart."""
    rr, cc = np.nonzero(dist >= max(best - 0.5, need))  # near ties, never short of need
    k = int(np.argmin((rr - p.top_cell[0]) ** 2 + (cc - p.top_cell[1]) ** 2))
    rows, cols, values = [int(rr[k])], [int(cc[k])], [float(dist[rr[k], cc[k]])]
    if config.max_candidates_per_parcel > 1:
        _, score_map = cv2.threshold(dist, need, 0.0, cv2.THRESH_TOZERO)
        radius = round(2.0 * config.cup_radius / cell_m)
        for _ in range(config.max_candidates_per_parcel - 1):
            cv2.circle(score_map, (cols[-1], rows[-1]), radius, 0.0, -1)
            _, value, _, (j, i) = cv2.minMaxLoc(score_map)
            if value <= 0:
                break
            rows.append(i)
            cols.append(j)
            values.append(float(dist[i, j]))
    return np.array(rows, np.intp), np.array(cols, np.intp), np.array(values)


def _suction(
    parcels: list[LiftedParcel],
    factors: npt.NDArray[np.float64],
    labels: npt.NDArray[np.uint16],
    depth: npt.NDArray[np.float32],
    camera: CameraModel,
    belt: BeltPlane,
    config: GraspConfig,
) -> _Arrays | None:
    """Cup placements on every parcel's top plane, evaluated together."""
    index, us, vs, dist, fallbacks = [], [], [], [], []
    # Laying every parcel's grid on one canvas (each filter called once per frame) was
    # tried and gives the same cups: the canvas, twice the grids' area, cost as much as the
    # calls per parcel (0.70 against 0.66 ms a frame of eleven parcels).
    for i, p in enumerate(parcels):
        if p.plane is None:
            continue
        rows, cols, values, fallback = _cup_centres(p, camera, belt, config)
        if len(rows):
            u, v = p.pixels(rows, cols)
            index.append(np.full(len(rows), i, np.intp))
            fallbacks.append(np.full(len(rows), fallback))
            us.append(u)
            vs.append(v)
            dist.append(values * p.stride)  # pixels
    if not index:
        return None
    idx = np.concatenate(index)
    u, v, dist_px = np.concatenate(us), np.concatenate(vs), np.concatenate(dist)
    plane_n = np.array([p.plane.normal if p.plane is not None else belt.normal for p in parcels])
    plane_d = np.array([p.plane.d if p.plane is not None else 0.0 for p in parcels])
    n, d = plane_n[idx], plane_d[idx]
    rays = np.ones((len(idx), 3))
    rays[:, :2] = normalized_rays(camera)[v, u]
    on_plane = rays * (-d / np.einsum('ki,ki->k', rays, n))[:, None]
    label_of = np.array([p.label for p in parcels])[idx]
    patch, weights = _cup_patches(
        label_of, n, labels, depth, camera, u, v, on_plane, config.cup_radius
    )
    counts = weights.sum(axis=1)
    normals, centroids, rms = fit_planes(patch, weights)
    normals *= np.where(normals @ belt.normal < 0, -1.0, 1.0)[:, None]
    positions = on_plane + normals * np.einsum('ki,ki->k', centroids - on_plane, normals)[:, None]
    # A soft top's cup approaches along its crown's normal: the 2 cm patch under the cup
    # tilts with every wrinkle, the crown fit averages them out (bellows take up the rest).
    # Grasp bags A-X, ground-truth masks: top-1 0.9636 -> 0.9675, recall 0.946 -> 0.951;
    # bags g-n, recorded after this choice: 0.9908 -> 0.9933, 0.945 -> 0.957.
    # (Top planes face up already: RANSAC orients them so and the crown fit keeps the side.)
    soft = np.array([p.instance.parcel_class in SOFT_CLASSES for p in parcels])[idx]
    approach = np.where(soft[:, None], n, normals)
    tilt = np.degrees(np.arccos(np.clip(approach @ belt.normal, -1.0, 1.0)))
    sigma2 = (config.lift.depth_noise_at_1m * positions[:, 2] ** 2) ** 2 + QUANTIZATION_SIGMA**2
    excess = np.sqrt(np.maximum(rms**2 - sigma2, 0.0))
    deviation = np.degrees(np.arccos(np.clip(np.einsum('ki,ki->k', normals, n), -1.0, 1.0)))
    flat = np.clip(1.0 - excess / config.max_cup_rms, 0.0, 1.0)
    flat *= np.clip(1.0 - deviation / config.max_patch_deviation_deg, 0.0, 1.0)
    need = config.cup_radius + config.edge_margin
    edge_m = (dist_px - 0.5 * np.array([p.stride for p in parcels])[idx]) * positions[:, 2]
    edge_m /= max(camera.fx, camera.fy)
    edge = np.clip((edge_m - need) / config.edge_score_distance, 0.0, 1.0)
    upright = np.clip(1.0 - tilt / config.max_tilt_deg, 0.0, 1.0)
    crowned = np.concatenate(fallbacks)
    scores = factors[idx] * np.where(crowned, config.crown_fallback_penalty, 1.0)
    scores *= 0.4 * flat + 0.35 * edge + 0.25 * upright
    # Down to `min_score` at most: the factor ranks a cup, it does not drop it.
    rounded = scores * _rounded_crown_factor(parcels, idx, positions, tilt, config)
    scores = np.maximum(rounded, np.minimum(scores, config.min_score))
    ok = (
        (counts >= config.min_cup_points)
        & (tilt <= config.max_tilt_deg)
        & (flat > 0.0)
        & (edge_m >= need)
        & np.isfinite(positions).all(axis=1)
        & np.isfinite(scores)
    )
    if not ok.any():
        return None
    long_axes = np.array([p.long_axis for p in parcels])[idx[ok]]
    rots = frames_from_axes(-approach[ok], cross(approach[ok], long_axes))
    poses = np.zeros((int(ok.sum()), 4, 4))
    poses[:, :3, :3] = rots
    poses[:, :3, 3] = positions[ok]
    poses[:, 3, 3] = 1.0
    k = len(poses)
    return (
        poses,
        np.clip(scores[ok], 0.0, 1.0),
        np.zeros(k, bool),
        np.full(k, 2.0 * config.cup_radius),
        idx[ok],
        crowned[ok],
    )


def _rounded_crown_factor(
    parcels: list[LiftedParcel],
    idx: npt.NDArray[np.intp],
    positions: npt.NDArray[np.float64],
    tilt: npt.NDArray[np.float64],
    config: GraspConfig,
) -> npt.NDArray[np.float64]:
    """Per cup, the score factor for a poly bag's uncertain crown (`rounded_crown_penalty`).

    A bag lies symmetric about the middle of its footprint, and so does its crown's flat
    core; a cup off that middle across the bag, or on a tilted crown plane, misses the core
    most often. On 40 grasp bags (ground-truth masks), before this factor, the best cups on
    free poly bags were right 89 % of the time within 4 % of the bag's width from its
    middle and 58 % beyond 11 %; 93 % on crowns within 6 degrees of the belt and 57-65 %
    beyond 11 degrees.
    """
    is_bag = np.array([p.instance.parcel_class is ParcelClass.POLYBAG for p in parcels])
    on_bag = is_bag[idx]
    factor = np.ones(len(idx))
    if config.rounded_crown_penalty >= 1.0 or not on_bag.any():
        return factor
    # Per bag, from the box lifting set: its centre (the footprint's middle, lowered along the
    # top normal, which does not change the offset across), its y axis (across) and width.
    bags = np.flatnonzero(is_bag)
    boxes: list[OrientedBox] = []
    for i in bags.tolist():
        box = parcels[i].box
        assert box is not None  # lifting sets every parcel's box
        boxes.append(box)
    row = np.searchsorted(bags, idx[on_bag])  # each cup's bag
    poses = np.array([box.pose for box in boxes])[row]
    width = np.array([max(float(box.size[1]), 1e-6) for box in boxes])[row]
    offset = np.abs(np.einsum('ki,ki->k', positions[on_bag] - poses[:, :3, 3], poses[:, :3, 1]))
    offset /= width
    (t0, t1), (o0, o1) = ROUNDED_CROWN_TILT_DEG, ROUNDED_CROWN_OFFSET
    steep = np.minimum(np.maximum((tilt[on_bag] - t0) / (t1 - t0), 0.0), 1.0)
    off = np.minimum(np.maximum((offset - o0) / (o1 - o0), 0.0), 1.0)
    drop = 1.0 - config.rounded_crown_penalty
    factor[on_bag] = (1.0 - drop * steep) * (1.0 - drop * off)
    return factor


@lru_cache(maxsize=32)
def _disc_offsets(radius_px: int, step: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel offsets (du, dv) on a `step` grid inside a disc of `radius_px`."""
    r = np.arange(-radius_px, radius_px + 1, step)
    du, dv = np.meshgrid(r, r)
    inside = du * du + dv * dv <= radius_px * radius_px
    return du[inside], dv[inside]


def _cup_patches(
    label_of: npt.NDArray[np.integer],
    normals: npt.NDArray[np.float64],
    labels: npt.NDArray[np.uint16],
    depth: npt.NDArray[np.float32],
    camera: CameraModel,
    us: npt.NDArray[np.intp],
    vs: npt.NDArray[np.intp],
    centres: npt.NDArray[np.float64],
    radius: float,
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Full-resolution depth samples under each cup: points (K, M, 3) and weights (K, M).

    Sampled from the image, not the parcel's subsampled points, so the flatness under a
    cup is judged at the same detail on a small mailer and on a large box. A sample counts
    when it belongs to the parcel, has depth and lies within the cup radius in the plane.
    """
    focal = max(camera.fx, camera.fy)
    r_px = max(1, math.ceil(radius * focal / float(np.min(centres[:, 2]))))
    du, dv = _disc_offsets(r_px, max(1, math.ceil(r_px / 6)))
    h, w = labels.shape
    uu = us[:, None] + du[None, :]
    vv = vs[:, None] + dv[None, :]
    inside = (uu >= 0) & (uu < w) & (vv >= 0) & (vv < h)
    # One flat index for the four gathers: indexing with (rows, cols) pairs costs more.
    flat = np.clip(vv, 0, h - 1) * w + np.clip(uu, 0, w - 1)
    z = depth.ravel()[flat].astype(np.float64)
    valid = inside & (labels.ravel()[flat] == label_of[:, None]) & usable_depth(z)
    z = np.where(valid, z, 0.0)
    rx, ry = ray_planes(camera)
    pts = np.empty((*z.shape, 3))
    pts[..., 0] = rx.ravel()[flat] * z
    pts[..., 1] = ry.ravel()[flat] * z
    pts[..., 2] = z
    diff = pts - centres[:, None, :]
    along = np.einsum('kmi,ki->km', diff, normals)
    radial2 = np.einsum('kmi,kmi->km', diff, diff) - along * along
    return pts, valid & (radial2 <= radius * radius)


def _jaws(
    parcels: list[LiftedParcel],
    factors: npt.NDArray[np.float64],
    labels: npt.NDArray[np.uint16],
    depth: npt.NDArray[np.float32],
    camera: CameraModel,
    belt: BeltPlane,
    config: GraspConfig,
) -> _Arrays | None:
    """Parallel-jaw grasps across the short side, approaching along the top normal.

    Only for parcels wholly in view (a cut-off parcel's width is unknown), thick enough to
    hold, narrow enough for the opening, with free space where both fingers go down.
    """
    h, w = labels.shape
    cos_max = math.cos(math.radians(config.max_tilt_deg))
    chosen = []
    for i, p in enumerate(parcels):
        x0, y0, x1, y1 = p.instance.box
        if (
            p.box is not None
            and x0 > 0
            and y0 > 0
            and x1 < w
            and y1 < h
            and p.footprint[1] + 2.0 * config.gripper_clearance <= config.gripper_max_opening
            and p.height - p.support_height >= config.min_jaw_height
            and float(p.top_normal @ belt.normal) >= cos_max
        ):
            chosen.append(i)
    if not chosen:
        return None
    sel = [parcels[i] for i in chosen]
    normal = np.array([p.top_normal for p in sel])
    long_axis = np.array([p.long_axis for p in sel])
    closing = cross(normal, long_axis)
    closing /= np.linalg.norm(closing, axis=1, keepdims=True)
    centre = np.array([p.top_center for p in sel])
    short = np.array([p.footprint[1] for p in sel])
    grip = np.minimum(config.finger_depth, np.array([p.height - p.support_height for p in sel]))
    # Where the fingers go down: both sides, across the finger's width, at the top's level.
    side = (short / 2.0 + config.gripper_clearance)[:, None, None]
    signs = np.array([-1.0, -1.0, -1.0, 1.0, 1.0, 1.0])[None, :, None]
    along = (np.array([-0.5, 0.0, 0.5, -0.5, 0.0, 0.5]) * config.finger_width)[None, :, None]
    samples = centre[:, None, :] + signs * side * closing[:, None, :] + along * long_axis[:, None]
    uv = np.rint(project_points(camera, samples.reshape(-1, 3))).reshape(len(sel), 6, 2)
    finite = np.isfinite(uv).all(axis=(1, 2))
    uv = np.where(np.isfinite(uv), uv, -1.0).astype(np.intp)
    u, v = uv[..., 0], uv[..., 1]
    in_view = finite & ((u >= 0) & (u < w) & (v >= 0) & (v < h)).all(axis=1)
    u, v = np.clip(u, 0, w - 1), np.clip(v, 0, h - 1)
    z = depth[v, u].astype(np.float64)
    heights = z * (normalized_rays(camera)[v, u] @ belt.normal[:2] + belt.normal[2]) + belt.offset
    top_h = np.array([p.height for p in sel])
    tol = np.array([p.tolerance for p in sel])
    lab = labels[v, u]
    own = np.array([p.label for p in sel])
    with np.errstate(invalid='ignore'):
        free = np.where(
            np.isfinite(heights),
            heights < (top_h - grip + tol)[:, None],
            (lab == 0) | (lab == own[:, None]),
        )
    ok = in_view & free.all(axis=1)
    if not ok.any():
        return None
    chosen_idx = np.array(chosen, np.intp)[ok]
    tilt = np.degrees(np.arccos(np.clip(normal[ok] @ belt.normal, -1.0, 1.0)))
    upright = np.clip(1.0 - tilt / config.max_tilt_deg, 0.0, 1.0)
    scores = factors[chosen_idx] * config.jaw_score_scale
    scores *= 0.5 + 0.5 * upright
    k = int(ok.sum())
    poses = np.zeros((k, 4, 4))
    poses[:, :3, :3] = frames_from_axes(-normal[ok], closing[ok])
    poses[:, :3, 3] = centre[ok]
    poses[:, 3, 3] = 1.0
    return (
        poses,
        np.clip(scores, 0.0, 1.0),
        np.ones(k, bool),
        short[ok] + 2.0 * config.gripper_clearance,
        chosen_idx,
        np.zeros(k, bool),
    )
