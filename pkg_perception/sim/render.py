# Copyright 2026 The pkg_perception Authors
# SPDX-License-Identifier: Apache-2.0
"""Ray-cast rendering of the belt scene with open3d's RaycastingScene (CPU, no display).

One primary ray per pixel gives exact depth, instance ids and surface normals; a second,
coarse batch of occlusion rays gives light shadows and the stereo camera's shadow
(points the depth sensor's second viewpoint cannot see, which a stereo camera cannot measure).

The belt, rails and floor are rendered once per camera mount (`background`); per frame only
the pixels that parcels can change (`regions`: the parcels' image, light shadows and stereo
shadows) are cast and shaded again, and the rest is the static render with the belt texture
moved along.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from pkg_perception.frames import CameraModel
from pkg_perception.sim.appearance import TEXELS_PER_METRE, BeltLook
from pkg_perception.sim.background import (
    FLOOR_DEPTH,
    LUMA_WEIGHTS,
    SHADOW_STRIDE,
    Background,
    Lighting,
    put_rows,
    take_rows,
)
from pkg_perception.sim.layout import PlacedParcel
from pkg_perception.sim.parcel_scene import ParcelScene, PrimaryHits
from pkg_perception.sim.regions import ParcelRegions, box_corners
from pkg_perception.transforms import Matrix4, make_transform


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


class BeltRenderer:
    """Renders parcels on a belt for one fixed camera mount.

    The camera, belt and lighting are fixed for a recording; parcels move per frame.
    `threads` is open3d's ray-casting thread count (0: one per core).
    """

    def __init__(
        self,
        camera: CameraModel,
        conveyor_from_camera: Matrix4,
        belt: BeltLook,
        lighting: Lighting,
        *,
        stereo_baseline: float = 0.05,
        threads: int = 0,
    ) -> None:
        self.camera = camera
        self.t_conv_cam = conveyor_from_camera
        self.belt = belt
        self.lighting = lighting
        self.threads = threads
        rot, origin = conveyor_from_camera[:3, :3], conveyor_from_camera[:3, 3]
        # The stereo pair's second viewpoint sits along the optical x axis.
        second_eye = origin + rot[:, 0] * stereo_baseline
        self._bg = Background(camera, conveyor_from_camera, belt, lighting, second_eye)
        self._regions = ParcelRegions(
            camera,
            conveyor_from_camera,
            lighting.direction,
            second_eye,
            belt_half_width=belt.width / 2.0,
            floor_depth=FLOOR_DEPTH,
            floor_pixels=self._bg.floor_mask(),
            stride=SHADOW_STRIDE,
        )
        self._scene = ParcelScene(self._bg, [])

    def render(self, parcels: list[PlacedParcel], belt_offset: float) -> RenderOutput:
        """Render parcels carried `belt_offset` metres along conveyor x by the belt.

        Args:
            parcels: poses in belt coordinates (PlacedParcel.pose): in the conveyor frame each
                lies at its pose moved by `belt_offset` along x.
            belt_offset: how far the belt (its texture and the parcels) has moved, metres.

        Returns:
            The frame; `parcel_pixels` follows the order of `parcels`.
        """
        bg = self._bg
        shift = make_transform(np.eye(3), [belt_offset, 0.0, 0.0])
        poses = [shift @ p.pose for p in parcels]
        roi, blocks = self._regions.find(
            [box_corners(p.shape, pose) for p, pose in zip(parcels, poses, strict=True)]
        )
        if not self._scene.holds(parcels):
            self._scene = ParcelScene(bg, parcels)
        roi_idx = np.flatnonzero(roi)  # the pixels that may show a parcel
        hits = self._scene.cast(roi_idx, belt_offset, self.threads)
        # ROI pixels grouped by parcel once (ascending pixel index within each parcel).
        order = np.argsort(hits.parcel, kind='stable')
        bounds = np.searchsorted(hits.parcel[order], np.arange(len(parcels) + 1))
        groups = [order[bounds[j] : bounds[j + 1]] for j in range(len(parcels))]
        shadow_blocks, eye_blocks = self._block_shadows(blocks.ravel(), roi_idx, hits, belt_offset)
        radiance, specular, luma = self._shade(
            belt_offset, shadow_blocks, roi_idx, hits, parcels, poses, groups
        )

        h, w = self.camera.height, self.camera.width
        stereo_shadow = bg.stereo_shadow.copy()
        moved = bg.pixels_of(np.flatnonzero(eye_blocks != bg.eye_blocks))
        stereo_shadow[moved] = eye_blocks.take(bg.block_of.take(moved)) & bg.valid.take(moved)
        stereo_shadow[roi_idx] = eye_blocks.take(bg.block_of.take(roi_idx)) & hits.hit
        depth = bg.t.copy()
        depth[roi_idx] = hits.t
        ids_lut = np.array([p.parcel_id for p in parcels] + [0], np.int64)
        parcel_ids = np.zeros(h * w, np.int64)
        parcel_ids[roi_idx] = ids_lut.take(hits.parcel)  # index -1 reads the trailing 0
        normals = bg.normals.copy()
        put_rows(normals, roi_idx, hits.normals)
        points = bg.points.copy()
        put_rows(points, roi_idx, hits.points)
        return RenderOutput(
            depth=depth.reshape(h, w),
            parcel_ids=parcel_ids.reshape(h, w),
            normals=normals.reshape(h, w, 3),
            radiance=radiance.reshape(h, w, 3),
            albedo_luma=luma.reshape(h, w),
            specular=specular.reshape(h, w),
            stereo_shadow=stereo_shadow.reshape(h, w),
            points=points.reshape(h, w, 3),
            parcel_pixels=[roi_idx.take(g) for g in groups],
        )

    def _block_shadows(
        self, blocks: np.ndarray, roi_idx: np.ndarray, hits: PrimaryHits, belt_offset: float
    ) -> tuple[np.ndarray, np.ndarray]:
        """Light and stereo shadow of every shadow block, (B,) bool each, this frame.

        Secondary rays start at the sample pixel of each block that parcels may change (its
        result covers the block); the other blocks keep the static scene's answers.
        """
        bg = self._bg
        changed = np.flatnonzero(blocks)
        sample = bg.block_sample.take(changed)
        points = take_rows(bg.points, sample)
        normals = take_rows(bg.normals, sample)
        ok = bg.valid.take(sample)
        if roi_idx.size:
            at = np.minimum(np.searchsorted(roi_idx, sample), roi_idx.size - 1)
            in_roi = roi_idx.take(at) == sample
            at = at[in_roi]
            points[in_roi] = take_rows(hits.points, at)
            normals[in_roi] = take_rows(hits.normals, at)
            ok[in_roi] = hits.hit.take(at)
        shadow = bg.shadow_blocks.copy()
        eye = bg.eye_blocks.copy()
        shadow[changed] = False
        eye[changed] = False
        shadow[changed[ok]], eye[changed[ok]] = self._scene.occluded(
            points[ok], normals[ok], belt_offset, self.threads
        )
        return shadow, eye

    def _shade(
        self,
        belt_offset: float,
        shadow_blocks: np.ndarray,
        roi_idx: np.ndarray,
        hits: PrimaryHits,
        parcels: list[PlacedParcel],
        poses: list[Matrix4],
        groups: list[np.ndarray],
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(N, 3) radiance, (N,) specular and (N,) albedo luma of every pixel.

        The static scene with this frame's belt texture, then the blocks whose light shadow
        parcels change (static normals, new shadow), then the ROI shaded from scratch.
        """
        bg = self._bg
        albedo, luma = bg.albedo(belt_offset)
        relit = bg.pixels_of(np.flatnonzero(shadow_blocks != bg.shadow_blocks))
        relit_albedo = take_rows(albedo, relit)
        roi_albedo = take_rows(albedo, roi_idx)
        gloss = bg.gloss.take(roi_idx)
        shine = bg.shininess.take(roi_idx)
        for placed, pose, g in zip(parcels, poses, groups, strict=True):
            if g.size:
                put_rows(
                    roi_albedo,
                    g,
                    _parcel_albedo(
                        placed, pose, take_rows(hits.points, g), take_rows(hits.normals, g)
                    ),
                )
                gloss[g] = placed.look.gloss
                shine[g] = placed.look.shininess
        radiance = bg.radiance(albedo)
        specular = bg.specular.copy()
        lit = ~shadow_blocks.take(bg.block_of.take(relit))
        relit_spec = bg.glare.take(relit) * lit
        relit_shade = bg.ambient + bg.direct.take(relit) * lit
        put_rows(radiance, relit, relit_albedo * relit_shade[:, None] + relit_spec[:, None])
        specular[relit] = relit_spec

        lit_roi = np.float32(self.lighting.intensity) * ~shadow_blocks.take(
            bg.block_of.take(roi_idx)
        )
        ndotl = np.clip(hits.normals @ bg.light, 0.0, None)
        roi_radiance = roi_albedo * (bg.ambient + ndotl * lit_roi)[:, None]
        # Blinn-Phong glare; matte surfaces (gloss 0) get exactly 0.
        half = take_rows(bg.half_vec, roi_idx)
        ndoth = np.clip(np.einsum('ij,ij->i', hits.normals, half), 0, 1)
        roi_spec = gloss * ndoth**shine * lit_roi
        roi_radiance += roi_spec[:, None]
        put_rows(radiance, roi_idx, roi_radiance)
        specular[roi_idx] = roi_spec
        luma[roi_idx] = roi_albedo @ LUMA_WEIGHTS
        return radiance, specular, luma


def _parcel_albedo(
    placed: PlacedParcel, pose: Matrix4, points: np.ndarray, normals: np.ndarray
) -> np.ndarray:
    """(K, 3) albedo of K hit points on a parcel: top texture facing up, side colour elsewhere."""
    look = placed.look
    rot = pose[:3, :3].astype(np.float32)
    albedo = np.empty((len(points), 3), np.float32)
    albedo[:] = look.side
    top = np.flatnonzero(normals @ rot[:, 2] > 0.6)
    if top.size:
        local = (take_rows(points, top) - pose[:3, 3].astype(np.float32)) @ rot
        trows, tcols = look.top.shape[:2]
        size = placed.shape.size
        ti = np.clip((local[:, 0] + size[0] / 2) * TEXELS_PER_METRE, 0, trows - 1)
        tj = np.clip((local[:, 1] + size[1] / 2) * TEXELS_PER_METRE, 0, tcols - 1)
        texel = ti.astype(np.int64) * tcols + tj.astype(np.int64)
        put_rows(albedo, top, take_rows(look.top.reshape(-1, 3), texel))
    return albedo
