# Copyright 2026 The pkg_perception Authors
# SPDX-License-Identifier: Apache-2.0
"""Pile order: which parcel lies on which, from one top-down RGB-D view.

A parcel something rests on must not be picked first; from above, one sees only heights
along the edges between masks and the shapes the masks make. The rules and why are in
`pile_order`.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import TYPE_CHECKING

import cv2
import numpy as np
import numpy.typing as npt

from pkg_perception.frames import CameraModel
from pkg_perception.geometry import CROSS_3X3, normalized_rays, plane_basis
from pkg_perception.segmentation.belt import BeltPlane
from pkg_perception.segmentation.instances import Segmentation

if TYPE_CHECKING:
    from pkg_perception.lifting import LiftedParcel, LiftParams

FloatArray = npt.NDArray[np.float64]


def pile_order(
    lifted: list[LiftedParcel],
    seg: Segmentation,
    depth: npt.NDArray[np.float32],
    camera: CameraModel,
    belt: BeltPlane,
    params: LiftParams,
) -> None:
    """Mark which parcels lie on which: `over`, `beside_higher`, `support_height`, in place.

    Heights are compared pixel against pixel across every edge between two masks (a few
    pixels apart, to step over the band without depth that stereo leaves along edges).
    Signs that B rests on A:
    - B stands higher along their shared edge (by more than `pile_step`, for most samples)
      and reaches into the convex hull of A's visible part in the image (`min_intrusion`
      coarse cells): a parcel lying on another hides part of it, a neighbour standing beside
      A stays outside the hull. A step over `tall_step` is more often a tall neighbour
      hiding part of A in perspective: then B must also stand over A's footprint on the
      belt (its top points inside the hull of A's points seen along the belt normal).
      Unless A leans on B.
    - B is tilted (between `lean_tilt_deg` and `lean_max_tilt_deg`; steeper "tops" are
      side faces of a mostly hidden parcel), its shared edge with A is its high end
      (`lean_rise` above its centre), and A's edge there is about as high (from `lean_gap`
      below to `pile_step` above): B's high end rests on A's edge. Against a taller side
      it merely leans. B's height at the edge is its samples' next to it or, where higher,
      its top plane carried to A's samples: a steep top's samples a cell or two in stand
      lower than its end (a mailer on a box's edge, fresh bag F7). A lean seen only that
      way gives way where the other signs put A on B.
    - B is held off the belt (its rim against the belt, where its side shows, stops
      `min_raise` or more above it) and stands higher than A along their shared edge: it
      rests on something, and A is what it stands above. This finds the parcel lying
      across the end of another, which hides no part of it inside the hull.
    - B's top stands above A's edge (by more than `pile_step`), B is higher on average along
      that edge, reaches into A's hull and stands over A's footprint: a thin parcel lying
      on another shows its side along their edge, where the step from sample to sample is
      small and the first sign misses it.
    Any neighbour standing higher along the shared edge than A's top goes into
    `beside_higher`: it may rest on A where neither can be seen (or where A casts no depth),
    so A ranks after parcels with nothing taller beside them.
    """
    if len(lifted) < 2:
        return
    labels, heights, stride = _coarse_heights(seg.labels, depth, camera, belt)
    # Labels renumbered 1..P (0 elsewhere) in the narrowest integer type: these arrays are
    # compared whole several times per frame.
    small = np.uint8 if len(lifted) < 255 else np.uint16
    # A small mask can fall between the coarse grid's samples: size the table for both.
    top_label = max(int(labels.max()), max(p.label for p in lifted))
    lut = np.zeros(top_label + 1, dtype=small)
    lut[[p.label for p in lifted]] = np.arange(1, len(lifted) + 1)
    compact = lut[labels]
    ia, ib, ha, hb, pairs = [], [], [], [], []
    rows, cols = compact.shape
    for dy, dx in _PAIR_OFFSETS:
        a = compact[: rows - dy, : cols - dx]
        b = compact[dy:, dx:]
        pair = (a != b) & (np.minimum(a, b) > 0)
        ia.append(a[pair])
        ib.append(b[pair])
        ha.append(heights[: rows - dy, : cols - dx][pair])
        hb.append(heights[dy:, dx:][pair])
        pairs.append((dy, dx, pair))
    a, b = np.concatenate(ia).astype(np.intp), np.concatenate(ib).astype(np.intp)
    if not len(a):
        return
    # Parcel samples next to a sample of bare belt: each parcel's rim.
    with np.errstate(invalid='ignore'):
        belt_seen = ((compact == 0) & (np.abs(heights) < _BELT_BAND)).astype(np.uint8)
    rim = (cv2.dilate(belt_seen, CROSS_3X3) > 0) & (compact > 0) & np.isfinite(heights)
    raised = _raised(lifted, compact[rim].astype(np.intp), heights[rim], params)
    h_a, h_b = np.concatenate(ha), np.concatenate(hb)
    n = len(lifted) + 1
    # Both orientations of every sample: key (first, second), heights on each side (NaN
    # where there is no depth: the shadow a tall parcel casts on the stereo pair).
    key = np.concatenate([a * n + b, b * n + a])
    first_h, second_h = np.concatenate([h_a, h_b]), np.concatenate([h_b, h_a])
    has_first, has_second = np.isfinite(first_h), np.isfinite(second_h)
    both = has_first & has_second
    first_h, second_h = np.where(has_first, first_h, 0.0), np.where(has_second, second_h, 0.0)
    size = n * n
    count = np.bincount(key, weights=both, minlength=size)
    up = np.bincount(key, weights=both & (second_h - first_h > params.pile_step), minlength=size)
    mean_first = np.bincount(key, weights=first_h * both, minlength=size) / np.maximum(count, 1)
    mean_second = np.bincount(key, weights=second_h * both, minlength=size) / np.maximum(count, 1)
    count_second = np.bincount(key, weights=has_second, minlength=size)
    mean_beside = np.bincount(key, weights=second_h, minlength=size) / np.maximum(count_second, 1)
    for k in np.flatnonzero(count_second >= 3).tolist():
        lower, upper = lifted[k // n - 1], lifted[k % n - 1]
        if mean_beside[k] > lower.height + params.pile_step:
            lower.beside_higher.add(upper.label)
    # Python scalars from here on: the loop over pairs reads a handful per pair, and numpy
    # scalar arithmetic costs several times more.
    count_l, up_l = count.tolist(), up.tolist()
    first_l, second_l = mean_first.tolist(), mean_second.tolist()
    facing = (np.array([p.top_normal for p in lifted]) @ belt.normal).tolist()
    raised_l = raised.tolist()
    cos_lean = math.cos(math.radians(params.lean_tilt_deg))
    cos_steep = math.cos(math.radians(params.lean_max_tilt_deg))

    first_cells: list[npt.NDArray[np.intp]] = []

    def end_height(k: int) -> float:
        """The second parcel's top plane carried to the first's samples of pair key k."""
        if not first_cells:  # rarely needed: only for a tilted parcel against a higher edge
            grid = [(np.nonzero(pair), dy, dx) for dy, dx, pair in pairs]
            first_cells.append(
                np.concatenate(
                    [r * cols + c for (r, c), _, _ in grid]
                    + [(r + dy) * cols + c + dx for (r, c), dy, dx in grid]
                )
            )
        upper = lifted[k % n - 1]
        cells = first_cells[0][(key == k) & both]
        h = _plane_heights(upper.top_normal, upper.top_center, cells, camera, stride, belt)
        h = h[np.isfinite(h)]
        return float(h.mean()) if len(h) else -math.inf

    def leans_on(k: int, at_end: bool = False) -> bool:
        """The second parcel of pair key k leans on the first.

        The first's edge must stand no higher than the second's samples next to it or, with
        `at_end`, than the second's top plane carried to that edge.
        """
        i_up = k % n
        second, first = second_l[k], first_l[k]
        if not (
            count_l[k] >= 3
            and cos_steep <= facing[i_up - 1] < cos_lean
            and second > lifted[i_up - 1].height + params.lean_rise
            and second - params.lean_gap < first
        ):
            return False
        if first < second + params.pile_step:
            return True
        return at_end and first < end_height(k) + params.pile_step

    leaning: list[tuple[LiftedParcel, LiftedParcel, float]] = []
    hulls: dict[int, tuple[np.ndarray, npt.NDArray[np.bool_]]] = {}
    footprints: dict[int, FloatArray | None] = {}
    basis = _belt_basis(tuple(belt.normal.tolist()))
    for k in np.flatnonzero(count >= 1).tolist():
        i_low, i_up = divmod(k, n)
        lower, upper = lifted[i_low - 1], lifted[i_up - 1]
        first, second = first_l[k], second_l[k]
        if leans_on(k):
            on_top = True
        else:
            high = up_l[k] > count_l[k] / 2  # most samples step up from A to B
            # Held off the belt, the upper parcel rests on something: a lower neighbour it
            # stands above along their edge, even where it hides no part the hull would show.
            on_top = high and raised_l[i_up]
            # A thin parcel lying on another shows its side along their edge, so the step
            # there is small; but its top stands above that edge and over the lower's
            # footprint.
            thin = count_l[k] >= 3 and first < second and upper.height > first + params.pile_step
            # Either sign needs B inside A's hull and A not leaning on B; a tall step (a
            # neighbour hiding A in perspective) or a thin parcel must stand over A as well.
            if not on_top and (high or thin) and not leans_on(i_up * n + i_low):
                intrudes = (
                    _intrusion(compact, i_low, i_up, lower.instance.box, stride, hulls)
                    >= params.min_intrusion
                )
                on_top = intrudes and (
                    (high and second - first < params.tall_step)
                    or _overlap(lower, upper, basis, footprints) >= params.min_intrusion
                )
            if not on_top and leans_on(k, at_end=True):
                leaning.append((lower, upper, first))
        if on_top:
            lower.over.add(upper.label)
            upper.support_height = max(upper.support_height, first)
    # A lean that shows only at the top's extended end gives way to the other signs where
    # they put the pair the other way round (a parcel under another tilts towards its load).
    for lower, upper, first in leaning:
        if lower.label not in upper.over:
            lower.over.add(upper.label)
            upper.support_height = max(upper.support_height, first)


def _raised(
    lifted: list[LiftedParcel],
    rim_ids: npt.NDArray[np.integer],
    rim_heights: npt.NDArray[np.float32],
    params: LiftParams,
) -> npt.NDArray[np.bool_]:
    """(P + 1,) by compact label: whether the parcel is held off the belt.

    Where a parcel's side shows, its rim against the belt is the side's foot: on the belt
    for a parcel standing there, at the height of its support for one lying on another.
    Where only its top shows, the rim is the top's edge; so a rim low in the rest of the
    parcel (10th percentile) but still `min_raise` above the belt means a raised parcel.
    """
    n = len(lifted) + 1
    if not len(rim_ids):
        return np.zeros(n, dtype=bool)
    order = np.lexsort((rim_heights, rim_ids))  # by parcel, then height
    ids, heights = rim_ids[order], rim_heights[order]
    starts = np.searchsorted(ids, np.arange(n + 1))
    sizes = np.diff(starts)
    low = heights[np.minimum(starts[:-1] + sizes // 10, len(heights) - 1)]
    tops = np.array([0.0] + [p.height for p in lifted])
    out = (sizes >= _MIN_RIM_SAMPLES) & (params.min_raise < low) & (low < tops - params.pile_step)
    out[0] = False  # the belt
    return out


def _intrusion(
    compact: npt.NDArray[np.integer],
    lower: int,
    upper: int,
    box: tuple[int, int, int, int],
    stride: int,
    hulls: dict[int, tuple[np.ndarray, npt.NDArray[np.bool_]]],
) -> int:
    """Cells of `upper` inside the convex hull of `lower`'s visible cells.

    A parcel lying on another hides part of it, and its mask reaches into the hull of what
    is left; a neighbour standing beside it stays outside. Works inside the lower parcel's
    box (the hull cannot leave it).
    """
    x0, y0 = box[0] // stride, box[1] // stride
    x1, y1 = -(-box[2] // stride), -(-box[3] // stride)
    window = compact[y0:y1, x0:x1]
    if lower not in hulls:
        cells = cv2.findNonZero((window == lower).view(np.uint8))  # None when there are none
        canvas = np.zeros(window.shape, np.uint8)
        if cells is not None:
            cv2.fillConvexPoly(canvas, cv2.convexHull(cells), 1)
        hulls[lower] = (canvas, canvas > 0)
    _, inside = hulls[lower]
    return int(np.count_nonzero((window == upper) & inside))


def _overlap(
    lower: LiftedParcel,
    upper: LiftedParcel,
    basis: FloatArray,
    footprints: dict[int, FloatArray | None],
    margin: float = 0.01,
) -> int:
    """Top-surface points of `upper` over the footprint of `lower`, seen along the belt normal.

    A parcel lying on another stands over it; a tall neighbour that only hides part of it
    in the image (perspective) stands beside it. Footprint: the convex hull of the lower
    parcel's points in the belt plane, shrunk by `margin` metres.
    """
    if lower.label not in footprints:
        uv = (lower.points @ basis).astype(np.float32)
        hull = cv2.convexHull(uv)[:, 0, :].astype(np.float64)
        footprints[lower.label] = hull if len(hull) >= 3 else None
    hull = footprints[lower.label]
    if hull is None:
        return 0
    top = upper.points if upper.plane is None else upper.points[upper.plane.inliers]
    uv = top[:: max(1, len(top) // 200)] @ basis
    edge = np.roll(hull, -1, axis=0) - hull
    length = np.maximum(np.linalg.norm(edge, axis=1), 1e-9)
    rel = uv[:, None, :] - hull[None, :, :]
    side = (edge[None, :, 0] * rel[..., 1] - edge[None, :, 1] * rel[..., 0]) / length
    area2 = float(
        np.sum(hull[:, 0] * np.roll(hull[:, 1], -1) - hull[:, 1] * np.roll(hull[:, 0], -1))
    )
    if area2 < 0:
        side = -side  # clockwise hull: inside is to the right of each edge
    return int(np.count_nonzero((side >= margin).all(axis=1)))


# Pixel pairs compared across mask edges: (rows, columns) apart on the coarse grid.
_PAIR_OFFSETS = ((0, 1), (1, 0), (0, 2), (2, 0))
_BELT_BAND = 0.01  # metres: a sample this near the belt plane shows bare belt
_MIN_RIM_SAMPLES = 4
_COARSE_WIDTH = 128


def _coarse_heights(
    labels: npt.NDArray[np.uint16],
    depth: npt.NDArray[np.float32],
    camera: CameraModel,
    belt: BeltPlane,
) -> tuple[npt.NDArray[np.uint16], npt.NDArray[np.float32], int]:
    """Labels and heights above the belt on a coarse grid (cheap, per frame), and its step."""
    s = max(1, round(labels.shape[1] / _COARSE_WIDTH))
    dot = _ray_dot(camera, s, tuple(float(v) for v in belt.normal))
    heights = depth[::s, ::s] * dot + np.float32(belt.offset)
    return labels[::s, ::s], heights, s


def _plane_heights(
    normal: FloatArray,
    point: FloatArray,
    cells: npt.NDArray[np.intp],
    camera: CameraModel,
    stride: int,
    belt: BeltPlane,
) -> FloatArray:
    """Height above the belt of the plane through `point` where coarse cells' rays meet it.

    Non-finite where a ray runs parallel to the plane.
    """
    along = _coarse_rays(camera, stride)[cells] @ normal[:2] + normal[2]  # normal . (x, y, 1)
    dot = _ray_dot(camera, stride, tuple(float(v) for v in belt.normal)).ravel()[cells]
    with np.errstate(divide='ignore', invalid='ignore'):
        return float(normal @ point) / along * dot + belt.offset  # depth on the ray, height


@lru_cache(maxsize=4)
def _coarse_rays(camera: CameraModel, stride: int) -> FloatArray:
    """(cells, 2) normalized ray (x/z, y/z) per coarse pixel, row-major."""
    rays = np.ascontiguousarray(normalized_rays(camera)[::stride, ::stride], dtype=np.float64)
    rays = rays.reshape(-1, 2)
    rays.flags.writeable = False  # shared between calls
    return rays


@lru_cache(maxsize=4)
def _belt_basis(normal: tuple[float, ...]) -> FloatArray:
    """(3, 2) two unit vectors spanning the belt plane (columns); the belt rarely moves."""
    basis = np.stack(plane_basis(normal), axis=1)
    basis.flags.writeable = False  # shared between calls
    return basis


@lru_cache(maxsize=4)
def _ray_dot(camera: CameraModel, stride: int, normal: tuple[float, ...]) -> np.ndarray:
    """Per coarse pixel: the belt normal dotted with its ray (z = 1); height = z * dot + d."""
    rays = normalized_rays(camera)[::stride, ::stride]
    n = np.asarray(normal, dtype=np.float32)
    return np.ascontiguousarray(rays @ n[:2] + n[2])
