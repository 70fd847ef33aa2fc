# Copyright 2026 The pkg_perception Authors
# SPDX-License-Identifier: Apache-2.0
"""Parcel shapes: meshes in the parcel's own frame, with the top face that can be picked.

Parcel frame: origin at the centre of the axis-aligned bounding box of the mesh, x along the
long side, z up through the top face. All lengths in metres.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from pkg_perception.classes import ParcelClass

FloatArray = npt.NDArray[np.float64]

# (min, max) of length, width, height per class, metres: typical e-commerce parcels.
SIZE_RANGES: dict[
    ParcelClass, tuple[tuple[float, float], tuple[float, float], tuple[float, float]]
] = {
    ParcelClass.BOX: ((0.12, 0.60), (0.08, 0.45), (0.06, 0.40)),
    ParcelClass.POLYBAG: ((0.18, 0.55), (0.14, 0.40), (0.04, 0.14)),
    ParcelClass.MAILER: ((0.18, 0.42), (0.14, 0.30), (0.015, 0.05)),
    ParcelClass.ENVELOPE: ((0.16, 0.38), (0.11, 0.27), (0.003, 0.012)),
}


@dataclass(frozen=True)
class TopFace:
    """The flat-enough top region a suction cup can use, in the parcel frame.

    Attributes:
        center: (3,) centre of the region, metres.
        half_extents: (2,) half length along parcel x and half width along parcel y.
        flatness: largest deviation of the real surface from the plane z = center z, metres.
    """

    center: FloatArray
    half_extents: FloatArray
    flatness: float


@dataclass(frozen=True)
class ParcelShape:
    """A triangle mesh with smooth per-vertex normals and its pickable top face."""

    parcel_class: ParcelClass
    vertices: npt.NDArray[np.float32]  # (V, 3)
    triangles: npt.NDArray[np.uint32]  # (T, 3)
    vertex_normals: npt.NDArray[np.float32]  # (V, 3)
    size: FloatArray  # (3,) bounding-box extents
    top_face: TopFace

    def height_at(self, xy: FloatArray) -> FloatArray:
        """Top-surface height above the parcel's bottom at (N, 2) local xy (for settling)."""
        return _height_profile(self, xy)


def _grid_quad(nu: int, nv: int) -> npt.NDArray[np.uint32]:
    """Triangles of an nu x nv vertex grid, row-major."""
    i, j = np.meshgrid(np.arange(nu - 1), np.arange(nv - 1), indexing='ij')
    a = (i * nv + j).ravel()
    b, c, d = a + nv, a + 1, a + nv + 1
    return np.concatenate([np.stack([a, b, d], 1), np.stack([a, d, c], 1)]).astype(np.uint32)


def _box_faces(size: FloatArray, n: int) -> tuple[FloatArray, FloatArray, list[int]]:
    """Six n x n gridded faces of a box centred at 0; separate vertices keep edges sharp."""
    half = size / 2.0
    t = np.linspace(-1.0, 1.0, n)
    gu, gv = np.meshgrid(t, t, indexing='ij')
    verts, norms, starts = [], [], []
    for axis in range(3):
        for sign in (1.0, -1.0):
            a1, a2 = [k for k in range(3) if k != axis]
            if sign < 0:
                a1, a2 = a2, a1  # keep winding outward
            p = np.zeros((n * n, 3))
            p[:, axis] = sign * half[axis]
            p[:, a1] = gu.ravel() * half[a1]
            p[:, a2] = gv.ravel() * half[a2]
            nrm = np.zeros_like(p)
            nrm[:, axis] = sign
            starts.append(sum(len(v) for v in verts))
            verts.append(p)
            norms.append(nrm)
    return np.concatenate(verts), np.concatenate(norms), starts


def _assemble(
    parts: list[tuple[FloatArray, FloatArray, npt.NDArray[np.uint32]]],
) -> tuple[FloatArray, FloatArray, npt.NDArray[np.uint32]]:
    verts, norms, tris, offset = [], [], [], 0
    for v, n, t in parts:
        verts.append(v)
        norms.append(n)
        tris.append(t + offset)
        offset += len(v)
    return np.concatenate(verts), np.concatenate(norms), np.concatenate(tris)


def make_box(
    size: FloatArray, rng: np.random.Generator, *, crush: float, flap: float
) -> tuple[FloatArray, FloatArray, npt.NDArray[np.uint32], TopFace]:
    """Cardboard box; `crush` (m) dents the top, `flap` (rad) lifts one top flap."""
    n = 7
    verts, norms, starts = _box_faces(size, n)
    quad = _grid_quad(n, n)
    tris = np.concatenate([quad + s for s in starts]).astype(np.uint32)
    half = size / 2.0
    top = slice(starts[4], starts[4] + n * n)  # faces run +x, -x, +y, -y, +z, -z
    flatness = 0.0
    top_half = half[:2].copy()
    top_center = np.array([0.0, 0.0, half[2]])
    if crush > 0:
        # A soft dent somewhere on the top face; it pulls the neighbouring side rows with it.
        c = rng.uniform(-0.5, 0.5, 2) * half[:2]
        r = rng.uniform(0.3, 0.6) * min(half[:2])
        upper = verts[:, 2] > half[2] - 1e-9
        d = np.linalg.norm(verts[upper, :2] - c, axis=1)
        verts[upper, 2] -= crush * np.exp(-((d / r) ** 2))
        flatness = crush
    parts = [(verts, norms, tris)]
    if flap > 0:
        # One of the two top flaps (the +y half) opens about its outer hinge edge.
        # Flap hinged at y = +half_y: rotate the half plate about the x-axis through the hinge.
        hinge = np.array([0.0, half[1], half[2]])
        c, s = np.cos(flap), np.sin(flap)
        rot = np.array([[1, 0, 0], [0, c, -s], [0, s, c]])
        plate, plate_n = _plate(half[0], half[1] / 2, n)
        plate[:, 1] -= half[1] / 2  # plate spans y in [-half_y, 0] relative to the hinge
        moved = plate @ rot.T + hinge
        moved_n = plate_n @ rot.T
        parts.append((moved, moved_n, _grid_quad(n, n)))
        # The open half shows the inside: a dark plane a few centimetres down.
        inner, inner_n = _plate(half[0] * 0.98, half[1] / 2 * 0.98, 3)
        inner[:, 1] += half[1] / 2
        inner[:, 2] = half[2] - min(0.03, 0.5 * size[2])
        parts.append((inner, inner_n, _grid_quad(3, 3)))
        # Remove the +y half of the original top face by dropping it onto the inner plane.
        lid = np.zeros(len(verts), bool)
        lid[top] = True
        lid &= verts[:, 1] > 1e-6
        verts[lid, 2] = half[2] - min(0.03, 0.5 * size[2]) - 1e-3
        top_half = np.array([half[0], half[1] / 2])
        top_center = np.array([0.0, -half[1] / 2, half[2]])
    v, nrm, t = _assemble(parts)
    return v, nrm, t, TopFace(top_center, top_half, flatness)


def _plate(hx: float, hy: float, n: int) -> tuple[FloatArray, FloatArray]:
    t = np.linspace(-1.0, 1.0, n)
    gu, gv = np.meshgrid(t, t, indexing='ij')
    v = np.stack([gu.ravel() * hx, gv.ravel() * hy, np.zeros(n * n)], 1)
    nrm = np.tile([0.0, 0.0, 1.0], (n * n, 1))
    return v, nrm


def _pillow_profile(u: FloatArray, v: FloatArray, power: float) -> FloatArray:
    """Height factor in [0, 1] over normalised coordinates u, v in [-1, 1]."""
    su = np.clip(1.0 - np.abs(u) ** power, 0.0, 1.0) ** (1.0 / 2.5)
    sv = np.clip(1.0 - np.abs(v) ** power, 0.0, 1.0) ** (1.0 / 2.5)
    return su * sv


def make_pillow(
    size: FloatArray, rng: np.random.Generator, *, power: float, wrinkle: float
) -> tuple[FloatArray, FloatArray, npt.NDArray[np.uint32], TopFace, dict[str, float]]:
    """Soft parcel (poly bag, padded mailer): a rounded heightfield over a flat bottom.

    Larger `power` gives a flatter crown (mailers); `wrinkle` is the wrinkle amplitude (m).
    """
    nu, nv = 33, 25
    u, v = np.meshgrid(np.linspace(-1, 1, nu), np.linspace(-1, 1, nv), indexing='ij')
    prof = _pillow_profile(u, v, power)
    waves = np.zeros_like(u)
    for _ in range(4):
        k = rng.uniform(3.0, 9.0)
        ang = rng.uniform(0, np.pi)
        phase = rng.uniform(0, 2 * np.pi)
        waves += np.sin(
            k * (np.cos(ang) * u * size[0] / 0.3 + np.sin(ang) * v * size[1] / 0.3) + phase
        )
    height = size[2] * prof + wrinkle * 0.5 * waves * prof
    height = np.maximum(height, 0.0)
    x, y = u * size[0] / 2, v * size[1] / 2
    top = np.stack([x.ravel(), y.ravel(), height.ravel()], 1)
    gx, gy = np.gradient(height, x[:, 0], y[0, :])
    tn = np.stack([-gx.ravel(), -gy.ravel(), np.ones(nu * nv)], 1)
    tn /= np.linalg.norm(tn, axis=1, keepdims=True)
    bottom, bottom_n = _plate(size[0] / 2, size[1] / 2, 2)
    bottom_n = -bottom_n
    bottom_t = _grid_quad(2, 2)[:, ::-1].copy()
    verts, norms, tris = _assemble([(top, tn, _grid_quad(nu, nv)), (bottom, bottom_n, bottom_t)])
    # Pickable crown: where the smooth profile stays within 15 degrees of flat.
    tilt_ok = (np.abs(gx) < np.tan(np.radians(15))) & (np.abs(gy) < np.tan(np.radians(15)))
    core = tilt_ok & (prof > 0.8)
    iu = np.where(core.any(axis=1))[0]
    iv = np.where(core.any(axis=0))[0]
    hx = float(np.max(np.abs(x[iu, 0]))) if iu.size else 0.02
    hy = float(np.max(np.abs(y[0, iv]))) if iv.size else 0.02
    crown = height[core] if core.any() else height.ravel()
    zc = float(np.median(crown))
    flat = float(np.max(np.abs(crown - zc)))
    top_face = TopFace(np.array([0.0, 0.0, zc]), np.array([hx, hy]) * 0.9, flat)
    return verts, norms, tris, top_face, {'power': power, 'wrinkle': wrinkle}


def make_envelope(
    size: FloatArray, rng: np.random.Generator
) -> tuple[FloatArray, FloatArray, npt.NDArray[np.uint32], TopFace]:
    """Thin flat envelope with a slight bow along its length."""
    verts, norms, tris, top = make_box(size, rng, crush=0.0, flap=0.0)
    bow = rng.uniform(0.0, 0.006)
    verts[:, 2] += bow * (1.0 - (2.0 * verts[:, 0] / size[0]) ** 2)
    return (
        verts,
        norms,
        tris,
        TopFace(top.center + np.array([0.0, 0.0, bow * 0.5]), top.half_extents * 0.95, bow),
    )


def sample_shape(parcel_class: ParcelClass, rng: np.random.Generator) -> ParcelShape:
    """Draw a parcel of a class with realistic, randomized size and deformation."""
    lo_hi = SIZE_RANGES[parcel_class]
    length = rng.uniform(*lo_hi[0])
    width = rng.uniform(lo_hi[1][0], min(lo_hi[1][1], length))
    height = rng.uniform(*lo_hi[2])
    size = np.array([length, width, height])
    if parcel_class is ParcelClass.BOX:
        crush = rng.uniform(0.004, min(0.02, 0.3 * height)) if rng.random() < 0.25 else 0.0
        flap = rng.uniform(0.3, 1.2) if rng.random() < 0.12 else 0.0
        verts, norms, tris, top = make_box(size, rng, crush=crush, flap=flap)
    elif parcel_class is ParcelClass.ENVELOPE:
        verts, norms, tris, top = make_envelope(size, rng)
    else:
        is_bag = parcel_class is ParcelClass.POLYBAG
        power = rng.uniform(2.5, 4.0) if is_bag else rng.uniform(6.0, 10.0)
        wrinkle = rng.uniform(0.002, 0.006) if is_bag else rng.uniform(0.0005, 0.002)
        verts, norms, tris, top, _ = make_pillow(size, rng, power=power, wrinkle=wrinkle)
    # Centre the mesh on its bounding box so the pose is the box centre.
    lo, hi = verts.min(axis=0), verts.max(axis=0)
    mid = (lo + hi) / 2.0
    verts = verts - mid
    top = TopFace(top.center - mid, top.half_extents, top.flatness)
    return ParcelShape(
        parcel_class=parcel_class,
        vertices=verts.astype(np.float32),
        triangles=tris.astype(np.uint32),
        vertex_normals=norms.astype(np.float32),
        size=hi - lo,
        top_face=top,
    )


def _height_profile(shape: ParcelShape, xy: FloatArray) -> FloatArray:
    """Top height above the bottom at local xy, read off the mesh by nearest top vertex."""
    verts = shape.vertices.astype(np.float64)
    up = shape.vertex_normals[:, 2] > 0.3
    pts = verts[up]
    # Nearest top vertex in xy; meshes are small (<1k vertices) and this runs at placement only.
    d2 = ((xy[:, None, :] - pts[None, :, :2]) ** 2).sum(-1)
    z = pts[np.argmin(d2, axis=1), 2]
    return z - verts[:, 2].min()
