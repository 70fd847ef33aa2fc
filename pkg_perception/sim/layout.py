# Copyright 2026 The pkg_perception Authors
# SPDX-License-Identifier: Apache-2.0
"""Where parcels lie on the belt: sparse singles, touching rows and settled piles.

Poses are in belt coordinates: the conveyor frame at time 0 (x along travel, z up on the belt
surface). The belt carries them along +x at the belt speed; nothing slides.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy.optimize import linprog
from scipy.spatial import cKDTree

from pkg_perception.classes import ParcelClass
from pkg_perception.sim.appearance import Appearance, sample_appearance
from pkg_perception.sim.parcels import ParcelShape, sample_shape
from pkg_perception.transforms import Matrix4, make_transform, rotation_between, rotation_z

SCENE_KINDS = ('sparse', 'rows', 'piles', 'mixed')
CLASS_MIX = {
    ParcelClass.BOX: 0.4,
    ParcelClass.POLYBAG: 0.25,
    ParcelClass.MAILER: 0.2,
    ParcelClass.ENVELOPE: 0.15,
}
MAX_TILT = np.radians(28.0)
CELL = 0.005  # heightmap resolution, metres
# Infeeds level piles under a bar: no parcel's top stands higher than MAX_PILE_TOP, nor
# nearer the camera than CAMERA_CLEARANCE (stereo sees nothing within ~0.3 m).
MAX_PILE_TOP = 0.55
CAMERA_CLEARANCE = 0.4
_DROP_TRIES = 4  # drops of a parcel that keeps sliding off before it is left out
# Rows of the rest LP bounding the slope (b, c) by an octagon of radius tan(60 deg): room
# to find the true rest before MAX_TILT judges it.
_SLOPE_ROWS = np.c_[
    np.zeros(8), np.cos(np.arange(8) * np.pi / 4), np.sin(np.arange(8) * np.pi / 4)
]
_SLOPE_BOUND = np.full(8, np.tan(np.radians(60.0)))


def max_pile_top(camera_height: float) -> float:
    """The leveling bar of a cell whose camera is `camera_height` metres above the belt."""
    return min(MAX_PILE_TOP, camera_height - CAMERA_CLEARANCE)


@dataclass(frozen=True)
class PlacedParcel:
    """A parcel on the belt, with what it rests on (the pile order)."""

    parcel_id: int
    shape: ParcelShape
    look: Appearance
    pose: Matrix4  # T_belt_parcel
    rests_on: tuple[int, ...]

    @property
    def x_extent(self) -> tuple[float, float]:
        """Min and max belt x of the footprint (conservative), for view culling."""
        r = float(np.linalg.norm(self.shape.size[:2])) / 2.0
        x = float(self.pose[0, 3])
        return x - r, x + r


class _Heightmap:
    """Top surface heights and which parcel made them, over one belt segment."""

    def __init__(self, x_lo: float, x_hi: float, width: float) -> None:
        self.x_lo, self.y_lo = x_lo, -width / 2.0
        nx = int(np.ceil((x_hi - x_lo) / CELL)) + 1
        ny = int(np.ceil(width / CELL)) + 1
        self.height = np.zeros((nx, ny))
        self.owner = np.zeros((nx, ny), dtype=np.int64)

    def cells(self, xy: npt.NDArray[np.float64]) -> tuple[np.ndarray, np.ndarray]:
        i = np.clip(((xy[:, 0] - self.x_lo) / CELL).astype(int), 0, self.height.shape[0] - 1)
        j = np.clip(((xy[:, 1] - self.y_lo) / CELL).astype(int), 0, self.height.shape[1] - 1)
        return i, j


def _footprint_grid(size_xy: npt.NDArray[np.float64], step: float) -> npt.NDArray[np.float64]:
    nx = max(3, int(size_xy[0] / step) + 1)
    ny = max(3, int(size_xy[1] / step) + 1)
    gx, gy = np.meshgrid(
        np.linspace(-size_xy[0] / 2, size_xy[0] / 2, nx),
        np.linspace(-size_xy[1] / 2, size_xy[1] / 2, ny),
        indexing='ij',
    )
    return np.stack([gx.ravel(), gy.ravel()], 1)


def _rest_plane(
    uv: npt.NDArray[np.float64], h: npt.NDArray[np.float64]
) -> tuple[float, float, float] | None:
    """The plane z = a + b u + c v a rigid parcel comes to rest on, or None if it slides off.

    A parcel at rest has its centre as low as the surface under it allows: minimizing the
    height `a` at the footprint's centre (u, v = 0) with the plane above every sample is a
    small linear program, and at its optimum the centre lies over the convex hull of the
    samples the plane touches (the LP's optimality condition), which is what static balance
    asks. Nothing rests balanced on one corner or hovers over a neighbour. A rest steeper
    than MAX_TILT would slide or tip further: None, so the caller drops the parcel elsewhere.
    """
    a_ub = np.vstack([np.c_[-np.ones(len(h)), -uv[:, 0], -uv[:, 1]], _SLOPE_ROWS])  # plane >= h
    b_ub = np.r_[-h, _SLOPE_BOUND]
    res = linprog([1.0, 0.0, 0.0], A_ub=a_ub, b_ub=b_ub, bounds=[(None, None)] * 3, method='highs')
    if res.status != 0:
        return None
    a, b, c = (float(v) for v in res.x)
    if np.hypot(b, c) > np.tan(MAX_TILT):
        return None
    return a, b, c


def _settle(
    hm: _Heightmap, shape: ParcelShape, x: float, y: float, yaw: float, max_top: float
) -> tuple[Matrix4, tuple[int, ...], npt.NDArray[np.float64], npt.NDArray[np.float64]] | None:
    """Rest a parcel on the heightmap under its footprint: pose, supports, raster of its top.

    None when it would not stay there (see `_rest_plane`) or would stand over `max_top`.
    """
    local = _footprint_grid(shape.size[:2] * 0.96, 0.02)
    rz = rotation_z(yaw)[:2, :2]
    world = local @ rz.T + [x, y]
    i, j = hm.cells(world)
    h, owner = hm.height[i, j], hm.owner[i, j]
    rest = _rest_plane(world - [x, y], h)
    if rest is None:
        return None
    a, b, c = rest
    plane = a + b * (world[:, 0] - x) + c * (world[:, 1] - y)
    touching = (plane - h < 0.006) & (owner > 0)
    rests_on = tuple(sorted({int(o) for o in owner[touching]}))
    normal = np.array([-b, -c, 1.0]) / np.linalg.norm([-b, -c, 1.0])
    rot = rotation_between([0.0, 0.0, 1.0], normal) @ rotation_z(yaw)
    centre = np.array([x, y, a]) + normal * shape.size[2] / 2.0
    pose = make_transform(rot, centre)
    # Raster of the new top surface, for the parcels that land on this one.
    fine = _footprint_grid(shape.size[:2], CELL)
    tree = cKDTree(shape.vertices[shape.vertex_normals[:, 2] > 0.3, :2])
    tops = shape.vertices[shape.vertex_normals[:, 2] > 0.3, 2]
    _, nearest = tree.query(fine)
    z_local = tops[nearest].astype(np.float64)
    pts3 = np.c_[fine, z_local] @ rot.T + centre
    if pts3[:, 2].max() > max_top:
        return None
    return pose, rests_on, pts3[:, :2], pts3[:, 2]


class BeltLayout:
    """Parcels laid out upstream of the camera, generated lazily as the belt moves.

    Generation is deterministic for a seed: segments are drawn in belt order. `max_top` is
    the height no parcel's top may exceed (the cell's leveling bar).
    """

    def __init__(
        self,
        rng: np.random.Generator,
        *,
        scene: str,
        belt_width: float,
        start_x: float,
        max_top: float = MAX_PILE_TOP,
    ) -> None:
        if scene not in SCENE_KINDS:
            raise ValueError(f'scene {scene!r} is not one of {", ".join(SCENE_KINDS)}')
        self._rng = rng
        self._scene = scene
        self._width = belt_width
        self._frontier = start_x  # everything downstream of this belt x is laid out
        self._parcels: list[PlacedParcel] = []
        self._next_id = 1
        self._max_top = max_top

    def parcels_between(self, x_lo: float, x_hi: float) -> list[PlacedParcel]:
        """Parcels whose footprint may overlap belt x in [x_lo, x_hi]; lays out more if needed."""
        while self._frontier > x_lo:
            self._add_segment()
        # Forget parcels that have left for good (the belt only moves downstream).
        self._parcels = [p for p in self._parcels if p.x_extent[0] < x_hi + 2.0]
        return [p for p in self._parcels if p.x_extent[1] >= x_lo and p.x_extent[0] <= x_hi]

    def _new_parcel_kind(self) -> tuple[ParcelShape, Appearance]:
        classes = list(CLASS_MIX)
        probs = np.array([CLASS_MIX[c] for c in classes])
        cls = classes[int(self._rng.choice(len(classes), p=probs / probs.sum()))]
        shape = sample_shape(cls, self._rng)
        look = sample_appearance(cls, (float(shape.size[0]), float(shape.size[1])), self._rng)
        return shape, look

    def _add_segment(self) -> None:
        kind = self._scene
        if kind == 'mixed':
            kind = str(self._rng.choice(['sparse', 'rows', 'piles'], p=[0.3, 0.3, 0.4]))
        gap = float(self._rng.uniform(0.05, 0.35))
        length = {'sparse': 0.6, 'rows': 0.7, 'piles': 0.9}[kind]
        x_hi = self._frontier - gap
        x_lo = x_hi - length
        hm = _Heightmap(x_lo - 0.1, x_hi + 0.1, self._width)
        {'sparse': self._sparse, 'rows': self._rows, 'piles': self._piles}[kind](hm, x_lo, x_hi)
        self._frontier = x_lo

    def _place(
        self, hm: _Heightmap, shape: ParcelShape, look: Appearance, x: float, y: float, yaw: float
    ) -> bool:
        """Put a parcel down where it comes to rest; False if it would not stay there."""
        settled = _settle(hm, shape, x, y, yaw, self._max_top)
        if settled is None:
            return False
        pose, rests_on, xy, z = settled
        i, j = hm.cells(xy)
        higher = z > hm.height[i, j]
        hm.height[i[higher], j[higher]] = z[higher]
        hm.owner[i[higher], j[higher]] = self._next_id
        self._parcels.append(PlacedParcel(self._next_id, shape, look, pose, rests_on))
        self._next_id += 1
        return True

    def _y_for(self, shape: ParcelShape, yaw: float) -> float | None:
        c, s = abs(np.cos(yaw)), abs(np.sin(yaw))
        half_y = (shape.size[0] * s + shape.size[1] * c) / 2.0
        room = self._width / 2.0 - 0.01 - half_y
        return None if room < 0 else float(self._rng.uniform(-room, room))

    def _sparse(self, hm: _Heightmap, x_lo: float, x_hi: float) -> None:
        for k in range(int(self._rng.integers(1, 3))):
            shape, look = self._new_parcel_kind()
            yaw = float(self._rng.uniform(-np.pi, np.pi))
            y = self._y_for(shape, yaw)
            if y is None:
                continue
            x = x_hi - (k + 0.5) * (x_hi - x_lo) / 2.0
            self._place(hm, shape, look, x, y, yaw)

    def _rows(self, hm: _Heightmap, x_lo: float, x_hi: float) -> None:
        """Parcels side by side across the belt, touching or nearly (0-3 mm gaps)."""
        x = (x_lo + x_hi) / 2.0
        y = -self._width / 2.0 + 0.02
        base_yaw = float(self._rng.choice([0.0, np.pi / 2]))
        while True:
            shape, look = self._new_parcel_kind()
            yaw = base_yaw + float(self._rng.normal(0, 0.03))
            c, s = abs(np.cos(yaw)), abs(np.sin(yaw))
            half_y = (shape.size[0] * s + shape.size[1] * c) / 2.0
            half_x = (shape.size[0] * c + shape.size[1] * s) / 2.0
            yc = y + half_y
            if yc + half_y > self._width / 2.0 - 0.01 or half_x * 2 > x_hi - x_lo:
                break
            self._place(hm, shape, look, x + float(self._rng.normal(0, 0.01)), yc, yaw)
            y = yc + half_y + float(self._rng.uniform(0.0, 0.003))

    def _piles(self, hm: _Heightmap, x_lo: float, x_hi: float) -> None:
        """Parcels dropped one after another into a small area: they overlap and lean.

        A parcel that would slide off where it was dropped is dropped again nearby (a few
        tries, then it is left out).
        """
        cx = (x_lo + x_hi) / 2.0
        spread_x = (x_hi - x_lo) * 0.25
        for _ in range(int(self._rng.integers(3, 8))):
            shape, look = self._new_parcel_kind()
            for _try in range(_DROP_TRIES):
                yaw = float(self._rng.uniform(-np.pi, np.pi))
                y = self._y_for(shape, yaw)
                if y is None:
                    continue
                x = cx + float(self._rng.uniform(-spread_x, spread_x))
                if self._place(hm, shape, look, x, y * 0.6, yaw):
                    break
