# Copyright 2026 The pkg_perception Authors
# SPDX-License-Identifier: Apache-2.0
"""The parcels in view in one ray-casting scene, kept for as long as the same parcels are in view.

Parcels do not move on the belt, so the scene holds them in belt coordinates (less an anchor
near them along x, to keep float32 coordinates small) and each frame moves the rays instead by
the belt's offset. Building the scene (its BVH) costs as much as casting a frame's rays;
piles change the parcels in view about every fifth frame. The scene depends on the parcels
alone, never on the frame that built it, so every frame renders the same in any order and in
any worker process.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import open3d as o3d

from pkg_perception.sim.background import Background, facing_camera, occlusions, take_rows
from pkg_perception.sim.layout import PlacedParcel


@dataclass(frozen=True)
class PrimaryHits:
    """What the primary rays of K pixels hit.

    Attributes:
        t: (K,) float32 depth, metres; inf where nothing was hit.
        hit: (K,) bool, something was hit.
        parcel: (K,) int64 index into the scene's parcels; -1 belt, rail, floor or nothing.
        points: (K, 3) float32 hit points, conveyor frame (0 where nothing was hit).
        normals: (K, 3) float32 unit normals toward the camera, conveyor frame; smooth on
            parcels (vertex normals interpolated).
    """

    t: np.ndarray
    hit: np.ndarray
    parcel: np.ndarray
    points: np.ndarray
    normals: np.ndarray


class ParcelScene:
    """Parcels and the static belt scene (geometry ids 0..3, then the parcels in order)."""

    def __init__(self, background: Background, parcels: list[PlacedParcel]) -> None:
        self._bg = background
        self.parcels = list(parcels)
        self.anchor = float(np.round(parcels[0].pose[0, 3])) if parcels else 0.0
        self.scene = background.scene()
        vnorms, tris, offsets = [np.zeros((0, 3), np.float32)], [np.zeros((0, 3), np.int64)], [0]
        n_verts = 0
        for placed in parcels:
            shape = placed.shape
            rot = placed.pose[:3, :3].T.astype(np.float32)
            at = (placed.pose[:3, 3] - [self.anchor, 0.0, 0.0]).astype(np.float32)
            self.scene.add_triangles(
                o3d.core.Tensor(shape.vertices @ rot + at), o3d.core.Tensor(shape.triangles)
            )
            vnorms.append(shape.vertex_normals @ rot)
            tris.append(shape.triangles.astype(np.int64) + n_verts)
            offsets.append(offsets[-1] + len(shape.triangles))
            n_verts += len(shape.vertices)
        self._vertex_normals = np.concatenate(vnorms)
        self._triangles = np.concatenate(tris)
        self._triangle_offsets = np.asarray(offsets)

    def holds(self, parcels: list[PlacedParcel]) -> bool:
        """Whether this scene was built from exactly these parcels, in this order."""
        return len(parcels) == len(self.parcels) and all(
            a is b for a, b in zip(parcels, self.parcels, strict=True)
        )

    def cast(self, pixels: np.ndarray, belt_offset: float, threads: int) -> PrimaryHits:
        """Primary rays of the given flat pixel indices with the belt moved `belt_offset` m."""
        bg = self._bg
        rays = take_rows(bg.rays, pixels)
        rays[:, 0] = np.float32(float(bg.origin[0]) - belt_offset - self.anchor)
        hit = self.scene.cast_rays(o3d.core.Tensor(rays), nthreads=threads)
        t = hit['t_hit'].numpy()
        found = np.isfinite(t)
        n_static = len(bg.meshes)
        parcel = np.where(found, hit['geometry_ids'].numpy().astype(np.int64) - n_static, -1)
        parcel[parcel < 0] = -1
        dirs = take_rows(bg.dirs, pixels)
        points = bg.origin + dirs * np.where(found, t, 0.0)[:, None]
        normals = hit['primitive_normals'].numpy()
        k = np.flatnonzero(parcel >= 0)
        if k.size:
            # Smooth shading: interpolate vertex normals with the hit's barycentric coordinates.
            tri = take_rows(
                self._triangles,
                self._triangle_offsets[parcel[k]] + hit['primitive_ids'].numpy()[k],
            )
            bary = take_rows(hit['primitive_uvs'].numpy(), k)
            bu, bv = bary[:, 0:1], bary[:, 1:2]
            vn = self._vertex_normals
            smooth = (
                (1 - bu - bv) * take_rows(vn, tri[:, 0])
                + bu * take_rows(vn, tri[:, 1])
                + bv * take_rows(vn, tri[:, 2])
            )
            smooth /= np.sqrt(np.maximum(np.einsum('ij,ij->i', smooth, smooth), 1e-12))[:, None]
            normals[k] = smooth
        return PrimaryHits(t, found, parcel, points, facing_camera(normals, dirs))

    def occluded(
        self, points: np.ndarray, normals: np.ndarray, belt_offset: float, threads: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """Light shadow and stereo shadow, (N,) bool each, of (N, 3) conveyor-frame points."""
        bg = self._bg
        return occlusions(
            self.scene,
            points,
            normals,
            bg.light,
            bg.second_eye,
            threads,
            belt_offset + self.anchor,
        )
