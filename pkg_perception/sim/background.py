# Copyright 2026 The pkg_perception Authors
# SPDX-License-Identifier: Apache-2.0
"""The static belt scene (belt, rails, floor) as the fixed camera sees it, computed once.

The camera, the light and this geometry do not change during a recording, so every pixel
that sees them has its hit point, normal, light shadow, stereo shadow, shading and rail glare
worked out here, once. Per frame the renderer starts from these arrays and redoes only the
pixels that parcels, their light shadows and their stereo shadows can reach. Only the belt
texture moves: one `cv2.remap` a frame.

Arrays are flat over pixels, index v * W + u, float32 unless noted, conveyor frame.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import numpy.typing as npt
import open3d as o3d

from pkg_perception.frames import CameraModel
from pkg_perception.sim.appearance import BeltLook
from pkg_perception.transforms import Matrix4

RAIL_HEIGHT = 0.07
RAIL_WIDTH = 0.06
FLOOR_DEPTH = 0.75  # floor below the belt surface, metres
# Shadows are cast from every 3rd pixel in each direction: soft shadows and the stereo
# shadow band (several pixels wide at belt distances) lose little, and it saves 8 ms a frame.
# Each sample's result covers its SHADOW_STRIDE-square block (the sample is its top-left).
SHADOW_STRIDE = 3
RAIL_ALBEDO = (0.55, 0.56, 0.58)
RAIL_GLOSS, RAIL_SHININESS = 0.4, 30.0
FLOOR_ALBEDO = (0.25, 0.25, 0.27)
MATTE_SHININESS = 8.0
LUMA_WEIGHTS = np.array([0.299, 0.587, 0.114], np.float32)
SHADOW_RAY_LIFT = np.float32(0.002)  # start secondary rays this far off the surface, metres


@dataclass(frozen=True)
class Lighting:
    """One directional light plus ambient; direction points from the scene to the light."""

    direction: npt.NDArray[np.float64]  # (3,) unit, conveyor frame
    intensity: float
    ambient: float


def box_mesh(
    lo: tuple[float, float, float], hi: tuple[float, float, float]
) -> tuple[np.ndarray, np.ndarray]:
    """Axis-aligned box from corner `lo` to `hi`: (8, 3) vertices, (12, 3) outward triangles."""
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


def facing_camera(normals: np.ndarray, dirs: np.ndarray) -> np.ndarray:
    """Turn (N, 3) normals toward the viewer in place (double-sided surfaces, open flaps)."""
    away = np.einsum('ij,ij->i', normals, dirs) > 0
    normals[away] *= -1
    return normals


def take_rows(a: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """a[idx] for an (N, C) array: the same values, several times faster than fancy indexing."""
    return a.take(idx, axis=0)


def put_rows(a: np.ndarray, idx: np.ndarray, values: np.ndarray) -> None:
    """a[idx] = values for a C-contiguous (N, C) array, each row moved as one item."""
    row = np.dtype((np.void, a.shape[1] * a.itemsize))
    np.put(a.view(row).reshape(-1), idx, np.ascontiguousarray(values, a.dtype).view(row))


def occlusions(
    scene: o3d.t.geometry.RaycastingScene,
    points: np.ndarray,
    normals: np.ndarray,
    light: np.ndarray,
    eye: np.ndarray,
    threads: int,
    to_scene: float = 0.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Whether the light and the stereo second eye are hidden from (N, 3) surface points.

    Points, normals, light and eye are in the conveyor frame; the scene's x is conveyor
    x less `to_scene`.

    Returns:
        (N,) bool light shadow and (N,) bool stereo shadow.
    """
    m = len(points)
    rays = np.empty((2 * m, 6), np.float32)
    start = points + normals * SHADOW_RAY_LIFT
    rays[:m, :3] = start
    rays[m:, :3] = start
    rays[:m, 3:] = light
    rays[m:, 3:] = eye - start
    if to_scene:
        rays[:, 0] -= np.float32(to_scene)
    # Light rays have unit length: tfar 0.999 m is far enough above a belt scene.
    hidden = scene.test_occlusions(o3d.core.Tensor(rays), tfar=0.999, nthreads=threads).numpy()
    return hidden[:m], hidden[m:]


class Background:
    """Pixel rays and the static belt scene, ray-cast and shaded once for a camera mount.

    Attributes (N = H * W pixels, index v * W + u):
        rays: (N, 6) float32 primary rays (origin, direction with optical z = 1).
        t: (N,) float32 depth of the static scene, inf where nothing was hit.
        geometry: (N,) int64 static geometry id (0 belt, 1 and 2 rails, 3 floor), -1 none.
        normals, points: (N, 3) float32 unit normals (toward the camera) and hit points.
        valid: (N,) bool, the static scene was hit.
        ambient: float32; direct: (N,) float32 direct light were the pixel not shadowed.
        shade: (N,) float32 ambient plus direct light where not shadowed.
        gloss, shininess: (N,) float32 Blinn-Phong weight and exponent (rails glossy).
        glare: (N,) float32 specular highlight were the pixel not shadowed.
        specular: (N,) float32 the static scene's highlight; stereo_shadow: (N,) bool.
        block_of: (N,) int64 the shadow block (SHADOW_STRIDE square) of every pixel.
        block_sample: (B,) int64 the pixel whose secondary rays stand for each block.
        shadow_blocks, eye_blocks: (B,) bool light / second eye hidden at each block's sample.
    """

    def __init__(
        self,
        camera: CameraModel,
        conveyor_from_camera: Matrix4,
        belt: BeltLook,
        lighting: Lighting,
        second_eye: np.ndarray,
    ) -> None:
        h, w = camera.height, camera.width
        self.shape = (h, w)
        # Pixel (u, v)'s centre is at image coordinates (u, v), as in CameraInfo and OpenCV.
        u, v = np.meshgrid(np.arange(w, dtype=float), np.arange(h, dtype=float))
        # Directions with optical z = 1, so the hit distance t is the depth itself.
        dirs_cam = np.stack(
            [(u - camera.cx) / camera.fx, (v - camera.cy) / camera.fy, np.ones_like(u)], -1
        ).reshape(-1, 3)
        rot, origin = conveyor_from_camera[:3, :3], conveyor_from_camera[:3, 3]
        dirs = dirs_cam @ rot.T
        self.rays = np.concatenate([np.broadcast_to(origin, dirs.shape), dirs], 1).astype(
            np.float32
        )
        self.origin = origin.astype(np.float32)
        self.dirs = dirs.astype(np.float32)
        # The camera and the light are fixed, so the Blinn-Phong half vectors are too.
        view = -dirs / np.linalg.norm(dirs, axis=1, keepdims=True)
        half = view + lighting.direction
        self.half_vec = (half / np.linalg.norm(half, axis=1, keepdims=True)).astype(np.float32)
        self.light = np.asarray(lighting.direction, np.float32)
        self.second_eye = np.asarray(second_eye, np.float32)
        w2 = belt.width / 2.0
        # Belt surface (top at z = 0), two rails, the floor: geometry ids 0..3 in every scene.
        self.meshes = [
            (o3d.core.Tensor(v.astype(np.float32)), o3d.core.Tensor(t.astype(np.uint32)))
            for v, t in (
                box_mesh((-50.0, -w2, -0.02), (50.0, w2, 0.0)),
                box_mesh((-50.0, -w2 - RAIL_WIDTH, -0.02), (50.0, -w2, RAIL_HEIGHT)),
                box_mesh((-50.0, w2, -0.02), (50.0, w2 + RAIL_WIDTH, RAIL_HEIGHT)),
                box_mesh((-50.0, -50.0, -FLOOR_DEPTH - 0.01), (50.0, 50.0, -FLOOR_DEPTH)),
            )
        ]
        scene = self.scene()
        hit = scene.cast_rays(o3d.core.Tensor(self.rays))
        self.t = hit['t_hit'].numpy()
        valid = np.isfinite(self.t)
        self.geometry = np.where(valid, hit['geometry_ids'].numpy(), -1).astype(np.int64)
        self.normals = facing_camera(hit['primitive_normals'].numpy(), self.dirs)
        self.points = self.origin + self.dirs * np.where(valid, self.t, 0.0)[:, None]
        self._blocks(h, w)
        self._shading(scene, lighting, valid)
        self._belt_maps(belt, origin + dirs * np.where(valid, self.t, 0.0)[:, None])

    def scene(self) -> o3d.t.geometry.RaycastingScene:
        """A new ray-casting scene holding the belt, the rails and the floor (ids 0..3)."""
        scene = o3d.t.geometry.RaycastingScene()
        for v, t in self.meshes:
            scene.add_triangles(v, t)
        return scene

    def _blocks(self, h: int, w: int) -> None:
        s = SHADOW_STRIDE
        self.block_shape = (-(-h // s), -(-w // s))
        hb, wb = self.block_shape
        rows, cols = np.divmod(np.arange(h * w), w)
        self.block_of = (rows // s) * wb + cols // s
        br, bc = np.divmod(np.arange(hb * wb), wb)
        self.block_sample = br * s * w + bc * s
        # Every block's pixels, -1 past the image's right and bottom edges.
        dr, dc = np.divmod(np.arange(s * s), s)
        r = br[:, None] * s + dr
        c = bc[:, None] * s + dc
        self._block_pixels = np.where((r < h) & (c < w), r * w + c, -1)

    def pixels_of(self, blocks: np.ndarray) -> np.ndarray:
        """Flat indices of the pixels in the given blocks (block indices, no repeats)."""
        pixels = self._block_pixels[blocks].ravel()
        return pixels[pixels >= 0]

    def _shading(
        self, scene: o3d.t.geometry.RaycastingScene, lighting: Lighting, valid: np.ndarray
    ) -> None:
        """Light shadow, stereo shadow, shade and rail glare of the static scene."""
        self.valid = valid
        sample = self.block_sample
        ok = valid[sample]
        self.shadow_blocks = np.zeros(len(sample), bool)
        self.eye_blocks = np.zeros(len(sample), bool)
        shadow, eye = occlusions(
            scene,
            self.points[sample[ok]],
            self.normals[sample[ok]],
            self.light,
            self.second_eye,
            0,
        )
        self.shadow_blocks[ok] = shadow
        self.eye_blocks[ok] = eye
        self.stereo_shadow = self.eye_blocks[self.block_of] & valid
        lit = ~self.shadow_blocks[self.block_of]
        # Shade = ambient + direct where lit; direct light and glare as if nothing shadowed.
        self.ambient = np.float32(lighting.ambient)
        self.direct = np.clip(self.normals @ self.light, 0.0, None) * np.float32(
            lighting.intensity
        )
        self.shade = self.ambient + self.direct * lit
        rails = np.flatnonzero((self.geometry == 1) | (self.geometry == 2))
        self.gloss = np.zeros(len(valid), np.float32)
        self.shininess = np.full(len(valid), MATTE_SHININESS, np.float32)
        self.gloss[rails] = RAIL_GLOSS
        self.shininess[rails] = RAIL_SHININESS
        ndoth = np.clip(np.einsum('ij,ij->i', self.normals[rails], self.half_vec[rails]), 0, 1)
        self.glare = np.zeros(len(valid), np.float32)
        self.glare[rails] = (
            self.gloss[rails] * ndoth ** self.shininess[rails] * np.float32(lighting.intensity)
        )
        self.specular = self.glare * lit
        self._rails = rails
        self._shade3 = np.repeat(self.shade[:, None], 3, axis=1)
        rail_albedo = np.asarray(RAIL_ALBEDO, np.float32)
        self._rail_radiance = rail_albedo * self._shade3[rails] + self.specular[rails, None]

    def _belt_maps(self, belt: BeltLook, points: np.ndarray) -> None:
        """Texture coordinates for one remap a frame that gives every static pixel's albedo.

        Three constant columns follow the belt texture: rail, floor, and black for pixels
        that see nothing. Scrolling moves rows only, so those columns stay what they are.
        """
        tex = belt.texture
        rows, cols = tex.shape[:2]
        extra = np.empty((rows, 3, 3), np.float32)
        extra[:, 0], extra[:, 1], extra[:, 2] = RAIL_ALBEDO, FLOOR_ALBEDO, 0.0
        self._texture = np.ascontiguousarray(np.concatenate([tex, extra], 1), np.float32)
        self._luma_texture = self._texture @ LUMA_WEIGHTS
        self._period, self._period_rows = belt.period, rows
        h, w = self.shape
        map_rows = points[:, 0] / belt.period * rows
        map_cols = np.clip((points[:, 1] / belt.width + 0.5) * cols, 0, cols - 1)
        column = {1: cols, 2: cols, 3: cols + 1, -1: cols + 2}
        for g, c in column.items():
            map_rows[self.geometry == g] = 0.0
            map_cols[self.geometry == g] = c
        self._map_rows = map_rows.reshape(h, w).astype(np.float32)
        self._map_cols = map_cols.reshape(h, w).astype(np.float32)

    def albedo(self, belt_offset: float) -> tuple[np.ndarray, np.ndarray]:
        """(N, 3) albedo and (N,) luma of the static scene with the belt moved `belt_offset` m."""
        rows = self._map_rows - np.float32(belt_offset / self._period * self._period_rows)
        out = []
        for tex in (self._texture, self._luma_texture):
            img = cv2.remap(
                tex, self._map_cols, rows, cv2.INTER_NEAREST, borderMode=cv2.BORDER_WRAP
            )
            out.append(img.reshape(len(self.t), -1))
        return out[0], out[1][:, 0]

    def radiance(self, albedo: np.ndarray) -> np.ndarray:
        """(N, 3) radiance of the static scene from its (N, 3) albedo (overwritten)."""
        np.multiply(albedo, self._shade3, out=albedo)  # (N, 3) by (N, 3): no broadcasting
        put_rows(albedo, self._rails, self._rail_radiance)  # rails: nothing there moves
        return albedo

    def floor_mask(self) -> np.ndarray:
        """(H, W) uint8, 1 where the camera sees the floor."""
        return (self.geometry == 3).astype(np.uint8).reshape(self.shape)
