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

from pkg_perception.frames import CameraModel
from pkg_perception.geometry import (
    PlaneFit,
    cross,
    frames_from_axes,
    normalized_rays,
    ransac_padded,
    ransac_plane,
)
from pkg_perception.results import OrientedBox
from pkg_perception.segmentation.belt import BeltPlane
from pkg_perception.segmentation.instances import Instance, Segmentation
from pkg_perception.transforms import make_transform

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class LiftParams:
    """How masks become surfaces (GraspConfig.lift)."""

    max_points: int = 1200
    min_points: int = 30
    plane_tolerance: float = 0.004
    depth_noise_at_1m: float = 0.0012
    max_plane_tilt_deg: float = 60.0
    pile_step: float = 0.008
    lean_tilt_deg: float = 10.0
    lean_rise: float = 0.01
    min_thickness: float = 0.003
    outline_depth: float = 0.02


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
    holes: npt.NDArray[np.bool_]  # grid cells in the mask without depth
    plane: PlaneFit | None  # top surface; inliers index `points`
    tolerance: float  # plane inlier distance used, metres
    top_center: FloatArray
    top_normal: FloatArray  # unit, towards the camera / up
    height: float  # top centre above the belt, metres
    long_axis: FloatArray  # (3,) unit, in the top plane
    footprint: FloatArray  # (2,) long and short side, metres
    footprint_centre: FloatArray  # (3,) rectangle centre in the plane through the origin
    over: set[int] = field(default_factory=set)  # labels of parcels lying on this one
    support_height: float = 0.0  # what this parcel rests on, metres above the belt
    box: OrientedBox | None = None

    @property
    def label(self) -> int:
        return self.instance.label

    def surface_grid(self) -> npt.NDArray[np.bool_]:
        """(rows, cols) bool: cells on the top plane, or in the mask without depth.

        A hole in depth (a dark label, glare) is no edge of the surface; whether a cup over
        it seals is judged from the depth around it.
        """
        grid = np.zeros(self.grid_shape[0] * self.grid_shape[1], dtype=bool)
        if self.plane is not None:
            grid[self.cell_index[self.plane.inliers]] = True
        return grid.reshape(self.grid_shape) | self.holes

    def pixels(self, rows: npt.ArrayLike, cols: npt.ArrayLike) -> tuple[np.ndarray, np.ndarray]:
        """Pixel (u, v) of grid cells."""
        x0, y0 = self.origin
        return x0 + np.asarray(cols) * self.stride, y0 + np.asarray(rows) * self.stride


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
    holes: npt.NDArray[np.bool_]  # grid: in the mask, without depth
    z: npt.NDArray[np.float32]
    xy: npt.NDArray[np.float32]  # normalized ray coordinates


def _sample(
    seg: Segmentation,
    inst: Instance,
    depth: npt.NDArray[np.float32],
    rays: npt.NDArray[np.float32],
    params: LiftParams,
) -> _Sample | None:
    """The instance's valid depth on a grid of at most ~`max_points` cells over its box."""
    x0, y0, x1, y1 = inst.box
    if inst.area <= 0 or x1 <= x0 or y1 <= y0:
        return None
    stride = max(1, math.ceil(math.sqrt(inst.area / params.max_points)))
    z_grid = depth[y0:y1:stride, x0:x1:stride]
    inside = seg.labels[y0:y1:stride, x0:x1:stride] == inst.label
    with np.errstate(invalid='ignore'):
        valid = inside & (z_grid > 0)
    cells = np.flatnonzero(valid)
    if len(cells) < params.min_points:
        return None
    xy = rays[y0:y1:stride, x0:x1:stride][valid]
    return _Sample(inst, stride, valid.shape, cells, inside ^ valid, z_grid[valid], xy)


def lift_all(
    seg: Segmentation,
    depth: npt.NDArray[np.float32],
    camera: CameraModel,
    belt: BeltPlane,
    params: LiftParams,
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

    Returns:
        One LiftedParcel per instance with at least `min_points` valid points after outlier
        removal, in the order of `seg.instances`.
    """
    rays = normalized_rays(camera)
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
        pad[i, :n, :2] = s.xy * s.z[:, None]
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
    _prefer_upper(pad, valid, tol, normal, d, inliers, rms, good, belt, max_tilt, params)
    n_in = inliers.sum(axis=1)
    top_center = (inliers[:, None, :] @ pad)[:, 0, :] / np.maximum(n_in, 1)[:, None]
    for i in np.nonzero(~good & (kept_counts >= params.min_points))[0]:
        pts = pad[i][valid[i]]  # no plane faces up: the highest fifth stands in
        h = pts @ belt.normal
        top_center[i] = pts[h >= np.percentile(h, 80)].mean(axis=0)
        normal[i] = belt.normal
    # The outline from points near the top: flying pixels along mask edges hang between the
    # top and what lies below, and would stretch the rectangle.
    widths = np.array([sm.shape[1] for sm in samples])
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
                holes=s.holes,
                plane=plane,
                tolerance=float(tol[i]),
                top_center=top_center[i],
                top_normal=normal[i],
                height=float(heights[i]),
                long_axis=long_axes[i],
                footprint=sizes[i],
                footprint_centre=centres[i],
            )
        )
    pile_order(lifted, seg, depth, camera, belt, params)
    _set_boxes(lifted, params)
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
    for i in np.nonzero(good & (n_above >= np.maximum(params.min_points, n_in // 4)))[0]:
        upper = ransac_plane(pad[i][above[i]], tolerance=tol[i], up=belt.normal, max_tilt=max_tilt)
        if upper is None or int(np.count_nonzero(upper.inliers)) < 0.3 * n_in[i]:
            continue
        normal[i], d[i], rms[i] = upper.normal, upper.d, upper.rms
        inliers[i] = valid[i] & (np.abs(pad[i] @ upper.normal + upper.d) < tol[i])


def _row_ends(
    cells: npt.NDArray[np.intp], selected: npt.NDArray[np.bool_], widths: npt.NDArray[np.intp]
) -> npt.NDArray[np.bool_]:
    """(P, N) the first and last selected point of every grid row: they hold the outline.

    Points are in row-major grid order; running maxima and minima of the row index find the
    ends without a loop. The outline is all a minimum-area rectangle needs.
    """
    row = cells // widths[:, None]
    big = np.iinfo(np.intp).max
    seen = np.maximum.accumulate(np.where(selected, row, -1), axis=1)
    before = np.full_like(seen, -1)
    before[:, 1:] = seen[:, :-1]
    ahead = np.minimum.accumulate(np.where(selected, row, big)[:, ::-1], axis=1)[:, ::-1]
    after = np.full_like(ahead, big)
    after[:, :-1] = ahead[:, 1:]
    return selected & ((before < row) | (after > row))


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


def pile_order(
    lifted: list[LiftedParcel],
    seg: Segmentation,
    depth: npt.NDArray[np.float32],
    camera: CameraModel,
    belt: BeltPlane,
    params: LiftParams,
) -> None:
    """Mark which parcels lie on which: `over` and `support_height`, in place.

    Heights are compared pixel against pixel across every edge between two masks (a few
    pixels apart, to step over the band without depth that stereo leaves along edges).
    Two signs that B rests on A:
    - B stands higher along their shared edge (by more than `pile_step`, for most samples):
      seen from above, a parcel lying on another covers part of it. Neighbours that merely
      stand taller side by side look the same and are ordered too; that only ranks the
      lower one later, the safe side, since picking a parcel something rests on is the
      failure.
    - B is tilted (more than `lean_tilt_deg`), its shared edge with A is its high end, and
      A is no lower there: B leans on A's edge.
    """
    if len(lifted) < 2:
        return
    labels, heights = _coarse_heights(seg.labels, depth, camera, belt)
    lut = np.zeros(int(max(p.label for p in lifted)) + 1, dtype=np.intp)
    lut[[p.label for p in lifted]] = np.arange(1, len(lifted) + 1)
    compact = lut[np.minimum(labels, len(lut) - 1)] * (labels < len(lut))
    ia, ib, ha, hb = [], [], [], []
    rows, cols = compact.shape
    for dy, dx in _PAIR_OFFSETS:
        a = compact[: rows - dy, : cols - dx]
        b = compact[dy:, dx:]
        pair = (a != b) & (a > 0) & (b > 0)
        ha_ = heights[: rows - dy, : cols - dx][pair]
        hb_ = heights[dy:, dx:][pair]
        ok = np.isfinite(ha_) & np.isfinite(hb_)
        ia.append(a[pair][ok])
        ib.append(b[pair][ok])
        ha.append(ha_[ok])
        hb.append(hb_[ok])
    a, b = np.concatenate(ia), np.concatenate(ib)
    if not len(a):
        return
    h_a, h_b = np.concatenate(ha), np.concatenate(hb)
    n = len(lifted) + 1
    # Both orientations of every sample: key (first, second), heights on each side.
    key = np.concatenate([a * n + b, b * n + a])
    first_h, second_h = np.concatenate([h_a, h_b]), np.concatenate([h_b, h_a])
    size = n * n
    count = np.bincount(key, minlength=size)
    up = np.bincount(key, weights=second_h - first_h > params.pile_step, minlength=size)
    mean_first = np.bincount(key, weights=first_h, minlength=size) / np.maximum(count, 1)
    mean_second = np.bincount(key, weights=second_h, minlength=size) / np.maximum(count, 1)
    cos_lean = math.cos(math.radians(params.lean_tilt_deg))
    for k in np.nonzero(count >= 3)[0]:
        lower, upper = lifted[k // n - 1], lifted[k % n - 1]
        on_top = up[k] > count[k] / 2
        leans = (
            float(upper.top_normal @ belt.normal) < cos_lean
            and mean_second[k] > upper.height + params.lean_rise
            and mean_first[k] > mean_second[k] - params.pile_step
        )
        if on_top or leans:
            lower.over.add(upper.label)
            upper.support_height = max(upper.support_height, float(mean_first[k]))


# Pixel pairs compared across mask edges: (rows, columns) apart on the coarse grid.
_PAIR_OFFSETS = ((0, 1), (1, 0), (0, 2), (2, 0), (0, 3), (3, 0))
_COARSE_WIDTH = 160


def _coarse_heights(
    labels: npt.NDArray[np.uint16],
    depth: npt.NDArray[np.float32],
    camera: CameraModel,
    belt: BeltPlane,
) -> tuple[npt.NDArray[np.uint16], npt.NDArray[np.float32]]:
    """Labels and heights above the belt on a grid about 160 cells wide (cheap, per frame)."""
    s = max(1, round(labels.shape[1] / _COARSE_WIDTH))
    dot = _ray_dot(camera, s, tuple(float(v) for v in belt.normal))
    heights = depth[::s, ::s] * dot + np.float32(belt.offset)
    return labels[::s, ::s], heights


@lru_cache(maxsize=4)
def _ray_dot(camera: CameraModel, stride: int, normal: tuple[float, ...]) -> np.ndarray:
    """Per coarse pixel: the belt normal dotted with its ray (z = 1); height = z * dot + d."""
    rays = normalized_rays(camera)[::stride, ::stride]
    n = np.asarray(normal, dtype=np.float32)
    return np.ascontiguousarray(rays @ n[:2] + n[2])


def _set_boxes(lifted: list[LiftedParcel], params: LiftParams) -> None:
    """Boxes with z along the top normal and x along the long side, all at once.

    Each reaches from the top down to what the parcel rests on (the belt, or the parcel
    below it): the camera sees no bottom, so that is the best bound on its thickness.
    """
    normals = np.array([p.top_normal for p in lifted])
    rots = frames_from_axes(normals, cross(normals, np.array([p.long_axis for p in lifted])))
    for p, rot in zip(lifted, rots, strict=True):
        thickness = max(p.height - p.support_height, params.min_thickness)
        along = float(p.top_center @ p.top_normal)
        centre = p.footprint_centre + p.top_normal * (along - thickness / 2.0)
        size = np.array([p.footprint[0], p.footprint[1], thickness])
        p.box = OrientedBox(pose=make_transform(rot, centre), size=size)
