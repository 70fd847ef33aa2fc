# Copyright 2026 The pkg_perception Authors
# SPDX-License-Identifier: Apache-2.0
"""From a mask and depth to a parcel in 3D: points, top surface, box, height, pile order.

Works in the camera's optical frame; the pipeline moves results into the target frame.
Each parcel is lifted from its mask's bounding box only, subsampled to a bounded number of
points, so the cost per parcel does not grow with how close the camera hangs.
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
    CROSS_3X3,
    PlaneFit,
    cross,
    fit_planes,
    frames_from_axes,
    plane_basis,
    ransac_padded,
    ransac_planes,
    ray_planes,
)
from pkg_perception.piles import pile_order
from pkg_perception.results import OrientedBox
from pkg_perception.segmentation.belt import BeltPlane
from pkg_perception.segmentation.instances import Instance, Segmentation

FloatArray = npt.NDArray[np.float64]
# Share of a parcel's samples near its top plane but off it below which the top is a plane.
_CURVED_SHARE = 0.05
SOFT_CLASSES = frozenset({ParcelClass.POLYBAG, ParcelClass.MAILER})
# Refits of a soft top's plane, each moving the normal twice as far as the fit did (over-
# relaxation): on a wrinkled bag tilted 24 degrees (test_grasping) the error falls from 13
# to 3 degrees in 3 rounds, where plain refits take 6 to reach 4. On the grasp bags A-P,
# 3 such rounds and 6 plain ones give the same top-1 and recall, at half the cost.
CROWN_ROUNDS = 3
CROWN_STEP = 2.0
# The refits settle near where they start: on a curved surface, the cap around the highest
# point along any direction faces that direction. A bag resting 24 degrees tilted, started
# from a plane within a few degrees of the belt's, stays 13-16 degrees off. The crown is the
# flattest part of the top, so along its own normal a cap of `crown_depth` holds the most of
# the surface: a poly bag's refits start from whichever of the first plane's normal and a fan of
# directions around the belt normal (every 30 degrees of azimuth at 5 to 25 degrees of
# tilt) holds the largest cap, when it holds `CROWN_START_GAIN` times the first plane's.
# Poly bags fully in view on grasp bags A-n: resting 15-30 degrees tilted, normals more than
# 10 degrees off 25.5 % -> 18 %, median error 5.9 -> 4.9 degrees; lying flat (within 3
# degrees), 4.1 % -> 4.3 % and 3.4 -> 3.6 degrees. A gain of 1.0 instead of 1.2 helps the
# tilted ones more (14 %) and costs the flat ones more; top-1 0.9764 against 0.9786.
CROWN_FAN_TILTS_DEG = (5.0, 10.0, 15.0, 20.0, 25.0)
CROWN_FAN_AZIMUTHS = 12
CROWN_START_GAIN = 1.2


@dataclass(frozen=True)
class LiftParams:
    """How masks become surfaces and piles (config section `grasping.lift`).

    Attributes:
        max_points: depth samples per parcel mask (a grid over its box); bounds the cost.
        min_points: masks with fewer valid depth samples are not lifted.
        plane_tolerance: least distance from the top plane that counts as on it, metres;
            grown with the expected depth noise at the parcel's range.
        depth_noise_at_1m: depth noise (1 sigma) of the camera at 1 m, metres; it grows
            with the square of the range.
        max_plane_tilt_deg: steeper planes are not taken for a parcel's top.
        pile_step: height step along a shared edge that can mean one parcel lies on the
            other, metres.
        lean_tilt_deg, lean_max_tilt_deg: tilt range of a parcel that leans on another's
            edge; steeper "tops" are the sides of a mostly hidden parcel.
        lean_rise: how far a leaning parcel's high end stands above its centre, metres.
        lean_gap: how far below that high end the supporting edge may be, metres.
        min_raise: a parcel whose rim against the belt (where its side shows) stays this
            far above the belt is held up by something, metres. A standing box's lowest
            coarse sample can sit a few cm up its side.
        min_intrusion: coarse-grid cells of the upper parcel inside the lower's hull.
        tall_step: steps above this (metres) must also show the upper parcel over the
            lower one's footprint: a tall neighbour hides parts of others in perspective.
        min_thickness: least box thickness, metres.
        outline_depth: the footprint uses points at most this far below the top, metres
            (flying pixels hang lower along mask edges).
        crown_depth: a soft parcel's (poly bag, mailer) top plane is refitted by least
            squares to the top this many metres of its surface, measured along the plane's
            own normal, a few rounds over; 0 keeps the first plane.
    """

    max_points: int = 800
    min_points: int = 30
    plane_tolerance: float = 0.004
    depth_noise_at_1m: float = 0.0012
    max_plane_tilt_deg: float = 60.0
    pile_step: float = 0.008
    lean_tilt_deg: float = 10.0
    lean_max_tilt_deg: float = 40.0
    lean_rise: float = 0.01
    lean_gap: float = 0.03
    # On the seven grasp bags A-G (ground-truth masks) 0.03 / 0.05 / 0.08 give top-1
    # 0.949 / 0.946 / 0.945 (rule off 0.928), recall unchanged.
    min_raise: float = 0.05
    min_intrusion: int = 2
    tall_step: float = 0.2
    min_thickness: float = 0.003
    outline_depth: float = 0.02
    # A wrinkled crown departs from any plane by more than the noise tolerance, so the
    # first plane is a small flat patch of it, on a tilted bag often a flank. On the grasp
    # bags A-L (ground-truth masks) crown depths 0 / 1 / 1.5 / 2 / 3 cm give top-1 0.963 /
    # 0.963 / 0.973 / 0.968 / 0.966 and recall 0.956 / 0.968 / 0.973 / 0.971 / 0.947.
    crown_depth: float = 0.015

    def __post_init__(self) -> None:
        if self.max_points < 10 or self.min_points < 3:
            raise ConfigError(
                f'grasping.lift.max_points {self.max_points} must be at least 10 and '
                f'min_points {self.min_points} at least 3'
            )
        positive = (
            'plane_tolerance', 'pile_step', 'lean_rise', 'lean_gap', 'min_raise', 'tall_step',
        )  # fmt: skip
        for name in (
            *positive, 'depth_noise_at_1m', 'min_thickness', 'outline_depth', 'crown_depth',
        ):  # fmt: skip
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0 and (value > 0 or name not in positive)):
                raise ConfigError(f'grasping.lift.{name} = {value} must be a positive number')
        for name in ('max_plane_tilt_deg', 'lean_tilt_deg', 'lean_max_tilt_deg'):
            value = getattr(self, name)
            if not 0 < value < 90:
                raise ConfigError(f'grasping.lift.{name} = {value} must be in (0, 90)')


@dataclass
class LiftedParcel:
    """One parcel in the optical frame, with the sampling grid its surface lives on.

    Grid cell (i, j) is pixel (u, v) = (x0 + j * stride, y0 + i * stride).
    """

    instance: Instance
    points: FloatArray  # (N, 3) metres, outliers removed
    cell_index: npt.NDArray[np.intp]  # (N,) flat grid index of each point
    origin: tuple[int, int]  # x0, y0 pixels
    stride: int
    grid_shape: tuple[int, int]
    inside: npt.NDArray[np.bool_]  # grid cells in the mask
    plane: PlaneFit | None  # top surface; inliers index `points`
    tolerance: float  # plane inlier distance used, metres
    centroid: FloatArray  # (3,) mean of the points: steadier than any fitted feature
    top_cell: FloatArray  # (2,) grid row, column of the middle of the top surface
    z_near: float  # nearest depth among the points, metres
    top_center: FloatArray
    top_normal: FloatArray  # unit, towards the camera / up
    height: float  # top centre above the belt, metres
    long_axis: FloatArray  # (3,) unit, in the top plane
    footprint: FloatArray  # (2,) long and short side, metres
    footprint_centre: FloatArray  # (3,) rectangle centre in the plane through the origin
    over: set[int] = field(default_factory=set)  # labels of parcels lying on this one
    beside_higher: set[int] = field(default_factory=set)  # labels of taller neighbours
    covered: bool = False  # something rests on it out of sight (the tracker remembers)
    support_height: float = 0.0  # what this parcel rests on, metres above the belt
    box: OrientedBox | None = None

    @property
    def label(self) -> int:
        return self.instance.label

    @property
    def under(self) -> bool:
        """Something rests on it, seen in this frame or remembered by the tracker."""
        return bool(self.over) or self.covered

    def surface_grid(self) -> npt.NDArray[np.uint8]:
        """(rows, cols) uint8, 1 on cells of the top plane and on what the plane encloses.

        A hole in depth that the surface encloses (a dark label, glare) is no edge of it;
        whether a cup over it seals is judged from the depth around it. One that reaches the
        mask's outline is: it is most often the stereo shadow along a tall box's side, and
        counting it would put the top's edge beyond the real one. Single cells off the
        plane (depth noise beyond the tolerance) are closed, or every noisy sample would
        count as an edge. So is any patch off the plane that the surface encloses (a
        wrinkle on a bag's crown, a dent in a lid): the depth under the cup judges it.
        """
        gh, gw = self.grid_shape
        grid = np.zeros(gh * gw, dtype=np.uint8)
        if self.plane is not None:
            grid[self.cell_index[self.plane.inliers]] = 1
        grid = grid.reshape(self.grid_shape)
        closed = cv2.morphologyEx(grid, cv2.MORPH_CLOSE, CROSS_3X3, borderValue=0) & self.inside
        # A mask's own holes (another parcel lying inside its outline) stay edges.
        return _fill_enclosed(closed) & self.inside

    def surface_slope(
        self, cell_m: float, window: float, band: float
    ) -> npt.NDArray[np.float32] | None:
        """(rows, cols) tangent of the angle between the surface and the top plane.

        A soft parcel's top is a crown, not a plane: the plane fit takes in part of its
        flanks, where a cup does not seal. Heights above the plane are averaged over
        `window` metres (depth noise would otherwise read as slope) from the samples within
        `band` of the plane: a box's sides and its neighbours lie further off, and left in
        they would make a flat top's rim look steep. `cell_m` is metres per grid cell.
        None when nearly every sample within `band` is on the plane (a box's lid): then
        nothing tilts beyond what the plane tolerance allows, and the work is skipped.
        """
        assert self.plane is not None
        gh, gw = self.grid_shape
        offset = self.points @ self.plane.normal + self.plane.d
        near = np.abs(offset) <= band
        if np.count_nonzero(near) - np.count_nonzero(self.plane.inliers) < _CURVED_SHARE * len(
            offset
        ):
            return None
        cells = self.cell_index[near]
        rise = np.zeros((gh, gw), np.float32)
        weight = np.zeros((gh, gw), np.float32)
        rise.ravel()[cells] = offset[near]
        weight.ravel()[cells] = 1.0
        k = max(3, round(window / cell_m) | 1)
        total = cv2.boxFilter(weight, -1, (k, k), normalize=False, borderType=cv2.BORDER_CONSTANT)
        smooth = cv2.boxFilter(rise, -1, (k, k), normalize=False, borderType=cv2.BORDER_CONSTANT)
        smooth /= np.maximum(total, 1e-6)
        # Central differences (kernel [-1, 0, 1] / 2), in metres per metre.
        scale = 0.5 / cell_m
        du = cv2.Sobel(smooth, -1, 1, 0, ksize=1, scale=scale, borderType=cv2.BORDER_REPLICATE)
        dv = cv2.Sobel(smooth, -1, 0, 1, ksize=1, scale=scale, borderType=cv2.BORDER_REPLICATE)
        return cv2.magnitude(du, dv)

    def pixels(self, rows: npt.ArrayLike, cols: npt.ArrayLike) -> tuple[np.ndarray, np.ndarray]:
        """Pixel (u, v) of grid cells."""
        x0, y0 = self.origin
        return x0 + np.asarray(cols) * self.stride, y0 + np.asarray(rows) * self.stride


def _fill_enclosed(grid: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
    """Set the 0 cells that no 4-connected path of 0 cells links to the grid's border."""
    outside = cv2.copyMakeBorder(1 - grid, 1, 1, 1, 1, cv2.BORDER_CONSTANT, value=1)
    cv2.floodFill(outside, None, (0, 0), 2, flags=4)
    return (outside[1:-1, 1:-1] != 2).astype(np.uint8)


def noise_sigma(params: LiftParams, z: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """Expected depth noise (1 sigma) at range z: stereo error grows with z squared."""
    z = np.asarray(z, dtype=np.float64)
    return params.depth_noise_at_1m * z * z


@dataclass
class _Sample:
    inst: Instance
    stride: int
    shape: tuple[int, int]
    cells: npt.NDArray[np.intp]  # flat grid indices with valid depth
    inside: npt.NDArray[np.bool_]  # grid: in the mask
    z: npt.NDArray[np.float32]
    x: npt.NDArray[np.float32]  # normalized ray coordinates x/z, y/z
    y: npt.NDArray[np.float32]


def _sample(
    seg: Segmentation,
    inst: Instance,
    depth: npt.NDArray[np.float32],
    rays: tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]],
    params: LiftParams,
) -> _Sample | None:
    """The instance's valid depth on a grid of at most ~`max_points` cells over its box."""
    x0, y0, x1, y1 = inst.box
    if inst.area <= 0 or x1 <= x0 or y1 <= y0:
        return None
    stride = max(1, math.ceil(math.sqrt(inst.area / params.max_points)))
    z_grid = depth[y0:y1:stride, x0:x1:stride]
    inside = seg.labels[y0:y1:stride, x0:x1:stride] == inst.label
    valid = inside & usable_depth(z_grid)
    cells = np.flatnonzero(valid)
    if len(cells) < params.min_points:
        return None
    window = (slice(y0, y1, stride), slice(x0, x1, stride))
    x, y = rays[0][window][valid], rays[1][window][valid]
    return _Sample(inst, stride, valid.shape, cells, inside, z_grid[valid], x, y)


def lift_all(
    seg: Segmentation,
    depth: npt.NDArray[np.float32],
    camera: CameraModel,
    belt: BeltPlane,
    params: LiftParams,
    *,
    settle: bool = True,
) -> list[LiftedParcel]:
    """Lift every instance with enough valid depth; settle pile order and boxes.

    All parcels go through one padded (P, N, 3) array: the per-parcel work is a handful of
    slices, everything else (outliers, planes, centres, footprints) runs once per frame.

    Args:
        seg: instances and their label image, at the depth's resolution.
        depth: (H, W) float32 metres, NaN invalid, registered to `camera`.
        camera: intrinsics (distortion honoured through the cached ray table).
        belt: the belt plane in the optical frame.
        params: sampling and threshold settings.
        settle: False leaves pile order and boxes to the caller (who lifts some parcels
            again and keeps the pile order they had; `set_boxes` then).

    Returns:
        One LiftedParcel per instance with at least `min_points` valid points after outlier
        removal, in the order of `seg.instances`.
    """
    rays = ray_planes(camera)
    samples = [s for inst in seg.instances if (s := _sample(seg, inst, depth, rays, params))]
    if not samples:
        return []
    counts = np.array([len(s.z) for s in samples], dtype=np.intp)
    n_max = int(counts.max())
    pad = np.zeros((len(samples), n_max, 3))
    cells = np.zeros((len(samples), n_max), dtype=np.intp)
    for i, s in enumerate(samples):
        n = len(s.z)
        pad[i, :n, 2] = s.z
        pad[i, :n, 0] = s.x * s.z
        pad[i, :n, 1] = s.y * s.z
        cells[i, :n] = s.cells
    keep = _inlier_heights(pad, counts, belt)
    kept_counts = keep.sum(axis=1)
    valid = keep
    z_mean = (pad[:, :, 2] * keep).sum(axis=1) / np.maximum(kept_counts, 1)
    tol = np.maximum(params.plane_tolerance, 2.5 * noise_sigma(params, z_mean))
    max_tilt = math.radians(params.max_plane_tilt_deg)
    normal, d, inliers, rms, good = ransac_padded(
        pad, counts, tol, up=belt.normal, max_tilt=max_tilt, valid=valid
    )
    # Soft tops get their crown fitted instead of an upper plane (lids and flaps are boxes').
    # Starting the crown fit from a wider plane (RANSAC within 8-12 mm, most support wins,
    # no upright preference) was tried: grasp bags A-P top-1 0.956 -> 0.961, all of it on
    # one bag tilted 24 degrees (recall 0.944 either way); fresh bags Q-X top-1 0.970 ->
    # 0.975 but recall 0.950 -> 0.945. Not kept.
    crowns = params.crown_depth > 0
    soft = good & np.array([crowns and s.inst.parcel_class in SOFT_CLASSES for s in samples])
    _prefer_upper(pad, valid, tol, normal, d, inliers, rms, good & ~soft, belt, max_tilt, params)
    if soft.any():
        # A poly bag's rounded crown: its refits start from its largest top cap (a mailer's
        # crown is flat, and never moved there on the grasp bags).
        bags = soft & np.array([s.inst.parcel_class is ParcelClass.POLYBAG for s in samples])
        _fit_crowns(pad, valid, tol, normal, d, inliers, rms, soft, bags, belt, max_tilt, params)
    n_in = inliers.sum(axis=1)
    top_center = (inliers[:, None, :] @ pad)[:, 0, :] / np.maximum(n_in, 1)[:, None]
    centroid = (valid[:, None, :] @ pad)[:, 0, :] / np.maximum(kept_counts, 1)[:, None]
    # Middle of the top surface on each parcel's grid (rows, cols), and its nearest depth.
    widths = np.array([sm.shape[1] for sm in samples])
    top_cells = np.stack([cells // widths[:, None], cells % widths[:, None]], axis=2)
    top_cell = (inliers[:, None, :] @ top_cells)[:, 0, :] / np.maximum(n_in, 1)[:, None]
    z_near = np.where(valid, pad[:, :, 2], np.inf).min(axis=1)
    for i in np.nonzero(~good & (kept_counts >= params.min_points))[0]:
        pts = pad[i][valid[i]]  # no plane faces up: the highest fifth stands in
        h = pts @ belt.normal
        top_center[i] = pts[h >= np.percentile(h, 80)].mean(axis=0)
        normal[i] = belt.normal
    # The outline from points near the top: flying pixels along mask edges hang between the
    # top and what lies below, and would stretch the rectangle.
    below = (pad @ normal[:, :, None])[:, :, 0] + d[:, None]
    band = valid & (below > -np.maximum(3.0 * tol, params.outline_depth)[:, None])
    band[~good] = valid[~good]
    centres, long_axes, sizes = _footprints(pad, _row_ends(cells, band, widths), normal)
    heights = top_center @ belt.normal + belt.offset
    lifted = []
    for i, s in enumerate(samples):
        if kept_counts[i] < params.min_points:
            continue
        row = valid[i, : counts[i]]
        whole = kept_counts[i] == counts[i]
        plane = None
        if good[i]:
            inl = inliers[i, : counts[i]] if whole else inliers[i, : counts[i]][row]
            plane = PlaneFit(normal[i], float(d[i]), inl, float(rms[i]))
        lifted.append(
            LiftedParcel(
                instance=s.inst,
                points=pad[i, : counts[i]] if whole else pad[i, : counts[i]][row],
                cell_index=cells[i, : counts[i]] if whole else cells[i, : counts[i]][row],
                origin=(s.inst.box[0], s.inst.box[1]),
                stride=s.stride,
                grid_shape=s.shape,
                inside=s.inside,
                plane=plane,
                tolerance=float(tol[i]),
                centroid=centroid[i],
                top_cell=top_cell[i],
                z_near=float(z_near[i]),
                top_center=top_center[i],
                top_normal=normal[i],
                height=float(heights[i]),
                long_axis=long_axes[i],
                footprint=sizes[i],
                footprint_centre=centres[i],
            )
        )
    if settle:
        pile_order(lifted, seg, depth, camera, belt, params)
        set_boxes(lifted, params)
    return lifted


def _inlier_heights(
    pad: FloatArray, counts: npt.NDArray[np.intp], belt: BeltPlane
) -> npt.NDArray[np.bool_]:
    """(P, N) points within reach of their parcel's median height (median absolute deviation).

    Flying pixels and mask bleed sit far from the parcel's own heights; a standard deviation
    would chase them. Median and deviation come from 64 evenly spaced points per parcel,
    which is plenty for a threshold and far cheaper than sorting every row.
    """
    rows = np.arange(len(counts))[:, None]
    filled = np.arange(pad.shape[1])[None, :] < counts[:, None]
    heights = (pad @ belt.normal) + belt.offset
    idx = (np.arange(64)[None, :] * counts[:, None]) // 64
    sub = np.sort(heights[rows, idx], axis=1)
    med = sub[:, 32]
    mad = 1.4826 * np.sort(np.abs(sub - med[:, None]), axis=1)[:, 32]
    reach = np.maximum(5.0 * mad, 0.03)
    return filled & (heights > -0.01) & (np.abs(heights - med[:, None]) <= reach[:, None])


def _prefer_upper(
    pad: FloatArray,
    valid: npt.NDArray[np.bool_],
    tol: FloatArray,
    normal: FloatArray,
    d: FloatArray,
    inliers: npt.NDArray[np.bool_],
    rms: FloatArray,
    good: npt.NDArray[np.bool_],
    belt: BeltPlane,
    max_tilt: float,
    params: LiftParams,
) -> None:
    """A smaller plane above the dominant one is the top (a closed lid beside an open flap).

    Updates the plane arrays in place for the parcels where one is found.
    """
    dist = (pad @ normal[:, :, None])[:, :, 0] + d[:, None]
    above = valid & (dist > tol[:, None])
    n_above = above.sum(axis=1)
    n_in = inliers.sum(axis=1)
    candidates = np.nonzero(good & (n_above >= np.maximum(params.min_points, n_in // 4)))[0]
    if not len(candidates):
        return
    uppers = ransac_planes(
        [pad[i][above[i]] for i in candidates], tol[candidates], up=belt.normal, max_tilt=max_tilt
    )
    for i, upper in zip(candidates, uppers, strict=True):
        if upper is None or int(np.count_nonzero(upper.inliers)) < 0.3 * n_in[i]:
            continue
        normal[i], d[i], rms[i] = upper.normal, upper.d, upper.rms
        inliers[i] = valid[i] & (np.abs(pad[i] @ upper.normal + upper.d) < tol[i])


def _fit_crowns(
    pad: FloatArray,
    valid: npt.NDArray[np.bool_],
    tol: FloatArray,
    normal: FloatArray,
    d: FloatArray,
    inliers: npt.NDArray[np.bool_],
    rms: FloatArray,
    soft: npt.NDArray[np.bool_],
    rounded: npt.NDArray[np.bool_],
    belt: BeltPlane,
    max_tilt: float,
    params: LiftParams,
) -> None:
    """Soft parcels' top planes: least squares over the top `crown_depth` of the surface.

    A pillow's crown is what a cup seals on and what its tilt is judged by. Measured along
    the plane's normal, the top few centimetres of a crown lie around its middle only when
    the normal is the crown's; the fit over them tilts the normal towards it, and a few
    rounds settle it. The plane then passes through the middle of that cap, so its
    inliers are a band around the crown, not only its highest point. A round is one
    batched least-squares fit (`fit_planes`) for all soft parcels. The `rounded` ones (poly
    bags) start from their largest top cap (`_crown_starts`). Updates in place; a plane that
    does not settle keeps its first fit, normal and offset alike.
    """
    idx = np.nonzero(soft)[0]
    width = int(np.nonzero(valid[idx].any(axis=0))[0][-1]) + 1
    # Every other sample is plenty for a plane and halves the cost.
    pts, ok, n = pad[idx, :width:2], valid[idx, :width:2], normal[idx]
    start = rounded[idx]
    if start.any():
        n[start] = _crown_starts(pts[start], ok[start], n[start], belt, params.crown_depth)

    def cap_fit(n: FloatArray) -> tuple[FloatArray, ...]:
        """The cap (mask), plane normal (on n's side) and rms distance of its fit."""
        h = (pts @ n[:, :, None])[:, :, 0]
        top = np.max(h, axis=1, where=ok, initial=-np.inf)
        cap = ok & (h >= (top - params.crown_depth)[:, None])
        fitted, _, fit_rms = fit_planes(pts, cap)
        fitted *= np.where(np.einsum('pi,pi->p', fitted, n) < 0, -1.0, 1.0)[:, None]
        return cap, fitted, fit_rms

    for _ in range(CROWN_ROUNDS):
        cap, fitted, fit_rms = cap_fit(n)
        n = n + CROWN_STEP * (fitted - n)
        n /= np.linalg.norm(n, axis=1, keepdims=True)
    # Through the median height of the last cap (all but the same under the final normal):
    # on a rounded crown its mean would sit so low that the ridge fell out of the band.
    ranked = np.sort(np.where(cap, (pts @ n[:, :, None])[:, :, 0], -np.inf), axis=1)
    counts = cap.sum(axis=1)
    offset = -ranked[np.arange(len(idx)), ranked.shape[1] - 1 - counts // 2]
    # Counts are of every other sample.
    settled = (n @ belt.normal >= math.cos(max_tilt)) & (2 * counts >= params.min_points)
    k, i = np.nonzero(settled)[0], idx[settled]
    normal[i], d[i], rms[i] = n[k], offset[k], fit_rms[k]
    above = (pad[i] @ n[k][:, :, None])[:, :, 0] + offset[k, None]
    inliers[i] = valid[i] & (np.abs(above) < tol[i, None])


def _crown_starts(
    pts: FloatArray, ok: npt.NDArray[np.bool_], first: FloatArray, belt: BeltPlane, depth: float
) -> FloatArray:
    """(P, 3) where each soft top's refits start: the direction with the largest top cap.

    Candidates are the first plane's normal and the fan around the belt normal
    (`CROWN_FAN_TILTS_DEG`); a fan direction replaces the first normal only when its cap of
    `depth` metres holds `CROWN_START_GAIN` times as many points, so a flat-lying bag keeps
    the plane it had. Every other of the samples given is plenty to count caps with.
    """
    fan = _crown_fan(tuple(belt.normal.tolist()))
    # Single precision, one product for the whole fan, and laid out (direction, parcel,
    # point) so the reductions run along contiguous rows: this runs every frame.
    filled = np.flatnonzero(ok.any(axis=0))
    if not len(filled):
        return first
    width = int(filled[-1]) + 1
    sub = pts[:, :width:2].astype(np.float32)
    sub[~ok[:, :width:2]] = -1e6 * belt.normal  # far below every cap
    count, samples = sub.shape[:2]
    d = np.float32(depth)
    h = (fan @ sub.reshape(-1, 3).T).reshape(len(fan), count, samples)
    caps = (h >= h.max(axis=2, keepdims=True) - d).sum(axis=2, dtype=np.int32)  # (K, P)
    h0 = np.einsum('pni,pi->pn', sub, first.astype(np.float32))
    cap0 = (h0 >= h0.max(axis=1, keepdims=True) - d).sum(axis=1, dtype=np.int32)
    best = caps.argmax(axis=0)
    take = caps[best, np.arange(count)] > CROWN_START_GAIN * cap0
    return np.where(take[:, None], fan[best], first)


@lru_cache(maxsize=4)
def _crown_fan(normal: tuple[float, ...]) -> npt.NDArray[np.float32]:
    """(K, 3) unit directions around the belt normal, itself first; the belt rarely moves."""
    up = np.asarray(normal)
    e1, e2 = plane_basis(up)
    tilts = np.radians(np.repeat(CROWN_FAN_TILTS_DEG, CROWN_FAN_AZIMUTHS))[:, None]
    phis = np.tile(
        np.arange(CROWN_FAN_AZIMUTHS) * (2.0 * math.pi / CROWN_FAN_AZIMUTHS),
        len(CROWN_FAN_TILTS_DEG),
    )
    side = np.cos(phis)[:, None] * e1 + np.sin(phis)[:, None] * e2
    fan = np.concatenate([up[None], np.cos(tilts) * up + np.sin(tilts) * side]).astype(np.float32)
    fan.flags.writeable = False  # shared between calls
    return fan


def _row_ends(
    cells: npt.NDArray[np.intp], selected: npt.NDArray[np.bool_], widths: npt.NDArray[np.intp]
) -> npt.NDArray[np.bool_]:
    """(P, N) the first and last selected point of every grid row: they hold the outline.

    Points are in row-major grid order, so the selected points of one parcel's row follow
    each other: a row's ends are where the (parcel, row) key changes. The outline is all a
    minimum-area rectangle needs.
    """
    row = cells // widths[:, None]
    idx = np.flatnonzero(selected)
    key = row.ravel()[idx] + (idx // selected.shape[1]) * (int(row.max(initial=0)) + 1)
    change = key[1:] != key[:-1]
    ends = np.ones(len(idx), dtype=bool)
    ends[1:-1] = change[1:] | change[:-1]
    out = np.zeros(selected.size, dtype=bool)
    out[idx[ends]] = True
    return out.reshape(selected.shape)


def _footprints(
    pad: FloatArray, outline: npt.NDArray[np.bool_], normals: FloatArray
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Minimum-area rectangles of each parcel's outline points seen along its top normal.

    Returns centres (P, 3) in the plane through the origin orthogonal to the normal, long
    axes (P, 3) unit, and sizes (P, 2) long then short side, metres.
    """
    helper = np.where(np.abs(normals[:, :1]) < 0.9, [[1.0, 0.0, 0.0]], [[0.0, 1.0, 0.0]])
    e1 = cross(normals, helper)
    e1 /= np.linalg.norm(e1, axis=1, keepdims=True)
    e2 = cross(normals, e1)
    basis = np.stack([e1, e2], axis=2)  # (P, 3, 2)
    uv = (pad @ basis).astype(np.float32)
    rects = [cv2.minAreaRect(uv[i][outline[i]]) for i in range(len(pad))]
    centre_uv = np.array([r[0] for r in rects], dtype=np.float64)
    wh = np.array([r[1] for r in rects], dtype=np.float64)
    theta = np.radians(np.array([r[2] for r in rects], dtype=np.float64))[:, None]
    axis_w = np.cos(theta) * e1 + np.sin(theta) * e2  # OpenCV: width runs along the angle
    axis_h = -np.sin(theta) * e1 + np.cos(theta) * e2
    w_long = wh[:, :1] >= wh[:, 1:]
    long_axes = np.where(w_long, axis_w, axis_h)
    sizes = np.where(w_long, wh, wh[:, ::-1])
    centres = centre_uv[:, :1] * e1 + centre_uv[:, 1:] * e2
    return centres, long_axes, sizes


def set_boxes(lifted: list[LiftedParcel], params: LiftParams) -> None:
    """Boxes with z along the top normal and x along the long side, all at once.

    Each reaches from the top down to what the parcel rests on (the belt, or the parcel
    below it): the camera sees no bottom, so that is the best bound on its thickness.
    """
    if not lifted:
        return
    normals = np.array([p.top_normal for p in lifted])
    poses = np.zeros((len(lifted), 4, 4))
    poses[:, :3, :3] = frames_from_axes(
        normals, cross(normals, np.array([p.long_axis for p in lifted]))
    )
    poses[:, 3, 3] = 1.0
    sizes = np.empty((len(lifted), 3))
    sizes[:, :2] = [p.footprint for p in lifted]
    sizes[:, 2] = [max(p.height - p.support_height, params.min_thickness) for p in lifted]
    along = np.einsum('pi,pi->p', np.array([p.top_center for p in lifted]), normals)
    footprint_centres = np.array([p.footprint_centre for p in lifted])
    poses[:, :3, 3] = footprint_centres + normals * (along - sizes[:, 2] / 2.0)[:, None]
    for p, pose, size in zip(lifted, poses, sizes, strict=True):
        p.box = OrientedBox(pose=pose, size=size)
