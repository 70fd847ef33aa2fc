# Copyright 2026 The pkg_perception Authors
# SPDX-License-Identifier: Apache-2.0
"""Ray-cast rendering of the belt scene with open3d's RaycastingScene (CPU, no display).

One primary ray per pixel gives exact depth, instance ids and surface normals; a second,
coarse batch of occlusion rays gives light shadows and the stereo camera's shadow
(points the depth sensor's second viewpoint cannot see, which a stereo camera cannot measure).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import numpy.typing as npt
import open3d as o3d

from pkg_perception.frames import CameraModel
from pkg_perception.sim.appearance import TEXELS_PER_METRE, BeltLook
from pkg_perception.sim.layout import PlacedParcel
from pkg_perception.transforms import Matrix4

RAIL_HEIGHT = 0.07
FLOOR_DEPTH = 0.75  # floor below the belt surface, metres
# Shadows are cast from every 3rd pixel in each direction: soft shadows and the stereo
# shadow band (several pixels wide at belt distances) lose little, and it saves 8 ms a frame.
SHADOW_STRIDE = 3


@dataclass(frozen=True)
class Lighting:
    """One directional light plus ambient; direction points from the scene to the light."""

    direction: npt.NDArray[np.float64]  # (3,) unit, conveyor frame
    intensity: float
    ambient: float


@dataclass
class RenderOutput:
    """Noise-free render of one frame, (H, W) arrays unless noted.

    Attributes:
        depth: float32 metres along the optical axis, inf where nothing was hit.
        parcel_ids: int64, 0 belt or background, else the PlacedParcel id.
        normals: (H, W, 3) float32 unit normals in the conveyor frame.
        radiance: (H, W, 3) float32 linear colour before sensor effects.
        albedo_luma: float32 surface brightness (dark surfaces lose depth).
        specular: float32 specular highlight strength (glossy glare loses depth).
        stereo_shadow: bool, surface not visible from the stereo camera's second viewpoint.
        points: (H, W, 3) float32 hit points in the conveyor frame (0 where nothing was hit).
        parcel_pixels: flat pixel indices showing each rendered parcel, in input order.
    """

    depth: npt.NDArray[np.float32]
    parcel_ids: npt.NDArray[np.int64]
    normals: npt.NDArray[np.float32]
    radiance: npt.NDArray[np.float32]
    albedo_luma: npt.NDArray[np.float32]
    specular: npt.NDArray[np.float32]
    stereo_shadow: npt.NDArray[np.bool_]
    points: npt.NDArray[np.float32]
    parcel_pixels: list[npt.NDArray[np.int64]]


def _box_mesh(
    lo: tuple[float, float, float], hi: tuple[float, float, float]
) -> tuple[np.ndarray, np.ndarray]:
    lo_a, hi_a = np.asarray(lo), np.asarray(hi)
    corners = np.array([[x, y, z] for x in (0, 1) for y in (0, 1) for z in (0, 1)], float)
    v = lo_a + corners * (hi_a - lo_a)
    t = np.array(
        [
            [0, 2, 6],
            [0, 6, 4],
            [1, 5, 7],
            [1, 7, 3],
            [0, 4, 5],
            [0, 5, 1],
            [2, 3, 7],
            [2, 7, 6],
            [0, 1, 3],
            [0, 3, 2],
            [4, 6, 7],
            [4, 7, 5],
        ]
    )
    return v, t


class BeltRenderer:
    """Renders parcels on a belt for one fixed camera mount.

    The camera, belt and lighting are fixed for a recording; parcels move per frame.
    """

    def __init__(
        self,
        camera: CameraModel,
        conveyor_from_camera: Matrix4,
        belt: BeltLook,
        lighting: Lighting,
        *,
        stereo_baseline: float = 0.05,
    ) -> None:
        self.camera = camera
        self.t_conv_cam = conveyor_from_camera
        self.belt = belt
        self.lighting = lighting
        h, w = camera.height, camera.width
        u, v = np.meshgrid(np.arange(w) + 0.5, np.arange(h) + 0.5)
        # Directions with optical z = 1, so the hit distance t is the depth itself.
        dirs_cam = np.stack(
            [(u - camera.cx) / camera.fx, (v - camera.cy) / camera.fy, np.ones_like(u)], -1
        ).reshape(-1, 3)
        rot = conveyor_from_camera[:3, :3]
        origin = conveyor_from_camera[:3, 3]
        dirs = dirs_cam @ rot.T
        rays = np.concatenate([np.broadcast_to(origin, dirs.shape), dirs], 1)
        self._rays_np = rays.astype(np.float32)
        self._rays = o3d.core.Tensor(self._rays_np)
        self._origin32 = origin.astype(np.float32)
        self._dirs32 = dirs.astype(np.float32)
        # The camera and the light are fixed, so the Blinn-Phong half vectors are too.
        view = -dirs / np.linalg.norm(dirs, axis=1, keepdims=True)
        half = view + lighting.direction
        self._half_vec = (half / np.linalg.norm(half, axis=1, keepdims=True)).astype(np.float32)
        self._light32 = np.asarray(lighting.direction, np.float32)
        coarse = np.zeros((h, w), bool)
        coarse[::SHADOW_STRIDE, ::SHADOW_STRIDE] = True
        self._coarse = coarse.ravel()
        # The stereo pair's second viewpoint sits along the optical x axis.
        self._second_eye = (origin + rot[:, 0] * stereo_baseline).astype(np.float32)
        w2 = belt.width / 2.0
        # Belt surface (top at z = 0), two rails, the floor: geometry ids 0..3 in every scene.
        self._static = [
            (o3d.core.Tensor(v.astype(np.float32)), o3d.core.Tensor(t.astype(np.uint32)))
            for v, t in (
                _box_mesh((-50.0, -w2, -0.02), (50.0, w2, 0.0)),
                _box_mesh((-50.0, -w2 - 0.06, -0.02), (50.0, -w2, RAIL_HEIGHT)),
                _box_mesh((-50.0, w2, -0.02), (50.0, w2 + 0.06, RAIL_HEIGHT)),
                _box_mesh((-50.0, -50.0, -FLOOR_DEPTH - 0.01), (50.0, 50.0, -FLOOR_DEPTH)),
            )
        ]
        # Belt, rails and floor never move: ray-cast them once. Per frame only the pixels
        # that parcels may cover are cast again.
        static = o3d.t.geometry.RaycastingScene()
        for v, t in self._static:
            static.add_triangles(v, t)
        bg = static.cast_rays(self._rays)
        self._bg_t = bg['t_hit'].numpy()
        self._bg_geom = np.where(np.isfinite(self._bg_t), bg['geometry_ids'].numpy(), -1)
        self._bg_normals = _facing_camera(bg['primitive_normals'].numpy(), dirs)
        # Belt texture coordinates of every pixel that sees the belt, for one cv2.remap a frame.
        bg_pts = origin + dirs * np.where(np.isfinite(self._bg_t), self._bg_t, 0.0)[:, None]
        rows, cols = belt.texture.shape[:2]
        self._belt_rows = (bg_pts[:, 0] / belt.period * rows).reshape(h, w).astype(np.float32)
        self._belt_cols = np.clip((bg_pts[:, 1] / belt.width + 0.5) * cols, 0, cols - 1)
        self._belt_cols = self._belt_cols.reshape(h, w).astype(np.float32)

    def render(
        self, parcels: list[tuple[PlacedParcel, Matrix4]], belt_offset: float
    ) -> RenderOutput:
        """Render parcels at their conveyor-frame poses; `belt_offset` moves the belt texture."""
        scene = o3d.t.geometry.RaycastingScene()
        for v, t in self._static:
            scene.add_triangles(v, t)
        n_static = len(self._static)
        verts, vnorms, tris, tri_offsets = [], [], [], [0]
        vert_offset = 0
        for placed, pose in parcels:
            shape = placed.shape
            rot = pose[:3, :3].T.astype(np.float32)
            v = shape.vertices @ rot + pose[:3, 3].astype(np.float32)
            scene.add_triangles(o3d.core.Tensor(v), o3d.core.Tensor(shape.triangles))
            verts.append(v)
            vnorms.append(shape.vertex_normals @ rot)
            tris.append(shape.triangles.astype(np.int64) + vert_offset)
            tri_offsets.append(tri_offsets[-1] + len(shape.triangles))
            vert_offset += len(v)
        h, w = self.camera.height, self.camera.width
        roi = _project_boxes_roi(verts, self.t_conv_cam, self.camera)
        roi_idx = np.flatnonzero(roi)
        hit = scene.cast_rays(o3d.core.Tensor(self._rays_np[roi_idx]))
        roi_t = hit['t_hit'].numpy()
        roi_hit = np.isfinite(roi_t)
        roi_geom = np.where(roi_hit, hit['geometry_ids'].numpy(), -1).astype(np.int64)
        t_hit = self._bg_t.copy()
        t_hit[roi_idx] = roi_t
        valid = np.isfinite(t_hit)
        geom = self._bg_geom.astype(np.int64)
        geom[roi_idx] = roi_geom
        ids_lut = np.array([0] * n_static + [p.parcel_id for p, _ in parcels] + [0], np.int64)
        parcel_ids = ids_lut[geom]  # index -1 (no hit) reads the trailing 0

        points = self._origin32 + self._dirs32 * np.where(valid, t_hit, 0.0)[:, None]
        normals = self._bg_normals.copy()
        roi_normals = hit['primitive_normals'].numpy()
        on_parcel = roi_geom >= n_static
        if on_parcel.any():
            # Smooth shading: interpolate vertex normals with the hit's barycentric coordinates.
            k = np.flatnonzero(on_parcel)
            vn = np.concatenate(vnorms)
            tri = np.concatenate(tris)[
                np.asarray(tri_offsets)[roi_geom[k] - n_static]
                + hit['primitive_ids'].numpy()[k].astype(np.int64)
            ]
            bary = hit['primitive_uvs'].numpy()[k]
            bu, bv = bary[:, 0:1], bary[:, 1:2]
            smooth = (1 - bu - bv) * vn[tri[:, 0]] + bu * vn[tri[:, 1]] + bv * vn[tri[:, 2]]
            smooth /= np.sqrt(np.maximum(np.einsum('ij,ij->i', smooth, smooth), 1e-12))[:, None]
            roi_normals[k] = smooth
        normals[roi_idx] = _facing_camera(roi_normals, self._dirs32[roi_idx])
        # Pixels grouped by geometry once; every per-parcel step below reuses the groups.
        order = np.argsort(geom, kind='stable')
        bounds = np.searchsorted(geom[order], np.arange(n_static + len(parcels) + 1))

        albedo, gloss, shine = self._albedo(points, order, bounds, parcels, belt_offset, normals)

        # Secondary rays on a coarse grid: to the light, and to the stereo second eye.
        sub = self._coarse & valid
        p_sub = points[sub] + normals[sub] * np.float32(0.002)
        to_eye = self._second_eye - p_sub
        light = np.broadcast_to(self._light32, p_sub.shape)
        rays2 = np.concatenate([np.c_[p_sub, light], np.c_[p_sub, to_eye]], 0)
        # Light rays have unit length: tfar 0.999 m is far enough above a belt scene.
        occluded = scene.test_occlusions(o3d.core.Tensor(rays2), tfar=0.999).numpy()
        m = len(p_sub)
        shadow_full = np.zeros(h * w, bool)
        eye_full = np.zeros(h * w, bool)
        shadow_full[sub] = occluded[:m]
        eye_full[sub] = occluded[m:]
        shadow = _spread(shadow_full.reshape(h, w)).ravel()
        stereo_shadow = _spread(eye_full.reshape(h, w)) & valid.reshape(h, w)

        lit = np.float32(self.lighting.intensity) * (~shadow)
        ndotl = np.clip(normals @ self._light32, 0.0, None)
        shade = np.float32(self.lighting.ambient) + ndotl * lit
        radiance = albedo * shade[:, None]
        spec = np.zeros(h * w, np.float32)
        shiny = np.where(gloss > 0)[0]
        if shiny.size:
            ndoth = np.clip(np.einsum('ij,ij->i', normals[shiny], self._half_vec[shiny]), 0, 1)
            spec[shiny] = gloss[shiny] * ndoth ** shine[shiny] * lit[shiny]
            radiance[shiny] += spec[shiny, None]

        depth = np.where(valid, t_hit, np.inf).astype(np.float32)
        luma = albedo @ np.array([0.299, 0.587, 0.114], np.float32)
        return RenderOutput(
            depth=depth.reshape(h, w),
            parcel_ids=parcel_ids.reshape(h, w),
            normals=normals.reshape(h, w, 3),
            radiance=radiance.reshape(h, w, 3),
            albedo_luma=luma.reshape(h, w),
            specular=spec.reshape(h, w),
            stereo_shadow=stereo_shadow,
            points=points.reshape(h, w, 3),
            parcel_pixels=[
                order[bounds[n_static + k] : bounds[n_static + k + 1]] for k in range(len(parcels))
            ],
        )

    def _albedo(
        self,
        points: np.ndarray,
        order: np.ndarray,
        bounds: np.ndarray,
        parcels: list[tuple[PlacedParcel, Matrix4]],
        belt_offset: float,
        normals: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per-pixel albedo (N, 3), specular weight (N,) and Blinn-Phong exponent (N,).

        `order`/`bounds` group pixel indices by geometry: order[bounds[g]:bounds[g + 1]].
        """
        n = len(points)
        albedo = np.zeros((n, 3), np.float32)
        gloss = np.zeros(n, np.float32)
        shine = np.full(n, 8.0, np.float32)

        def group(g: int) -> np.ndarray:
            return order[bounds[g] : bounds[g + 1]]

        belt = group(0)
        tex = self.belt.texture
        shift = np.float32(belt_offset / self.belt.period * tex.shape[0])
        belt_img = cv2.remap(
            tex,
            self._belt_cols,
            self._belt_rows - shift,
            cv2.INTER_NEAREST,
            borderMode=cv2.BORDER_WRAP,
        )
        albedo[belt] = belt_img.reshape(-1, 3)[belt]
        rails = np.concatenate([group(1), group(2)])
        albedo[rails] = (0.55, 0.56, 0.58)
        gloss[rails] = 0.4
        shine[rails] = 30.0
        albedo[group(3)] = (0.25, 0.25, 0.27)
        for k, (placed, pose) in enumerate(parcels):
            sel = group(k + len(self._static))
            if sel.size == 0:
                continue
            look = placed.look
            rot = pose[:3, :3].astype(np.float32)
            local = (points[sel] - pose[:3, 3].astype(np.float32)) @ rot
            top = normals[sel] @ rot[:, 2] > 0.6
            trows, tcols = look.top.shape[:2]
            ti = np.clip((local[:, 0] + placed.shape.size[0] / 2) * TEXELS_PER_METRE, 0, trows - 1)
            tj = np.clip((local[:, 1] + placed.shape.size[1] / 2) * TEXELS_PER_METRE, 0, tcols - 1)
            albedo[sel] = np.where(
                top[:, None], look.top[ti.astype(np.int64), tj.astype(np.int64)], look.side
            )
            gloss[sel] = look.gloss
            shine[sel] = look.shininess
        return albedo, gloss, shine


def _project_boxes_roi(
    vertex_sets: list[np.ndarray], t_conv_cam: Matrix4, camera: CameraModel
) -> np.ndarray:
    """(H*W,) bool: pixels inside the image rectangles that bound each vertex set."""
    h, w = camera.height, camera.width
    roi = np.zeros((h, w), bool)
    rot, pos = t_conv_cam[:3, :3], t_conv_cam[:3, 3]
    for v in vertex_sets:
        lo, hi = v.min(axis=0), v.max(axis=0)
        corners = np.array(
            [[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])]
        )
        cam = (corners - pos) @ rot
        if np.all(cam[:, 2] <= 0.01):
            continue
        z = np.maximum(cam[:, 2], 0.01)
        u = camera.fx * cam[:, 0] / z + camera.cx
        v_ = camera.fy * cam[:, 1] / z + camera.cy
        c0, c1 = (
            int(np.clip(np.floor(u.min()) - 1, 0, w)),
            int(np.clip(np.ceil(u.max()) + 1, 0, w)),
        )
        r0, r1 = (
            int(np.clip(np.floor(v_.min()) - 1, 0, h)),
            int(np.clip(np.ceil(v_.max()) + 1, 0, h)),
        )
        roi[r0:r1, c0:c1] = True
    return roi.ravel()


def _facing_camera(normals: np.ndarray, dirs: np.ndarray) -> np.ndarray:
    """Turn (N, 3) normals toward the viewer (double-sided surfaces such as open flaps)."""
    away = np.einsum('ij,ij->i', normals, dirs) > 0
    normals[away] *= -1
    return normals


def _spread(mask: np.ndarray) -> np.ndarray:
    """Spread the values on the coarse grid to their SHADOW_STRIDE-square blocks."""
    s = SHADOW_STRIDE
    h, w = mask.shape
    return np.repeat(np.repeat(mask[::s, ::s], s, axis=0), s, axis=1)[:h, :w]
