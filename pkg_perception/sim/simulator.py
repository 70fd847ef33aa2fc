# Copyright 2026 The pkg_perception Authors
# SPDX-License-Identifier: Apache-2.0
"""The simulated conveyor camera: a seeded stream of RGB-D frames with ground truth."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
from scipy.spatial.transform import Rotation

from pkg_perception.errors import ConfigError
from pkg_perception.frames import (
    DEFAULT_OPTICAL_FRAME,
    CameraModel,
    RGBDFrame,
    depth_from_millimetres,
)
from pkg_perception.sim.appearance import sample_belt
from pkg_perception.sim.ground_truth import FrameTruth, GroundTruth, ParcelTruth, TopFaceTruth
from pkg_perception.sim.layout import SCENE_KINDS, BeltLayout, PlacedParcel, max_pile_top
from pkg_perception.sim.render import BeltRenderer, Lighting, RenderOutput
from pkg_perception.sim.sensor import DepthNoise, apply_color_noise, apply_depth_noise
from pkg_perception.transforms import (
    Matrix4,
    TransformTree,
    make_transform,
    rotation_z,
)

BASE_FRAME = 'base_link'
CONVEYOR_FRAME = 'conveyor'

# Horizontal field of view (degrees) of common RGB-D colour streams at 4:3.
CAMERA_PRESETS: dict[str, float] = {
    'realsense_d435': 55.0,
    'realsense_d415': 56.0,
    'realsense_d455': 78.0,
    'orbbec_femto': 64.0,
    'zed_mini': 70.0,
}


@dataclass(frozen=True)
class SimConfig:
    """Settings of one simulated recording; the seed draws everything else."""

    width: int = 640
    height: int = 480
    fps: float = 15.0
    belt_speed: float = 0.3  # m/s along the conveyor frame's +x
    scene: str = 'mixed'
    belt_width: tuple[float, float] = (0.7, 1.0)  # metres, drawn per recording
    camera_height: tuple[float, float] = (0.8, 1.6)  # metres above the belt
    max_tilt_deg: float = 4.0
    camera_presets: tuple[str, ...] = tuple(CAMERA_PRESETS)
    frame_id: str = DEFAULT_OPTICAL_FRAME
    start_time_ns: int = 1_767_225_600_000_000_000  # 2026-01-01T00:00:00Z
    base_from_conveyor: tuple[float, ...] = (0.70, -0.40, 0.0, np.pi / 2)  # x, y, z, yaw
    depth_noise: DepthNoise = field(default_factory=DepthNoise)

    def __post_init__(self) -> None:
        if self.scene not in SCENE_KINDS:
            raise ConfigError(f'scene {self.scene!r}: choose one of {", ".join(SCENE_KINDS)}')
        if not (16 <= self.width <= 4096 and 16 <= self.height <= 4096):
            raise ConfigError(f'image size {self.width}x{self.height} is outside 16..4096 px')
        if not 0 < self.fps <= 120:
            raise ConfigError(f'fps {self.fps} must be in (0, 120]')
        if not 0 <= self.belt_speed <= 3:
            raise ConfigError(f'belt_speed {self.belt_speed} m/s must be in [0, 3]')
        lo, hi = self.camera_height
        if not 0.3 <= lo <= hi <= 3.0:
            raise ConfigError(
                f'camera_height {self.camera_height} must satisfy 0.3 <= lo <= hi <= 3'
            )
        unknown = [p for p in self.camera_presets if p not in CAMERA_PRESETS]
        if unknown or not self.camera_presets:
            raise ConfigError(
                f'camera_presets {unknown or "(empty)"}: choose from {", ".join(CAMERA_PRESETS)}'
            )


@dataclass(frozen=True)
class SimFrame:
    """One simulated frame as the camera driver would publish it, plus ground truth."""

    index: int
    stamp_ns: int
    color: npt.NDArray[np.uint8]  # (H, W, 3) RGB
    depth_mm: npt.NDArray[np.uint16]  # (H, W) aligned to colour, 0 = no depth
    instance_ids: npt.NDArray[np.uint16]  # (H, W) parcel id per pixel, 0 = belt / background
    truth: FrameTruth


class ConveyorSimulator:
    """A fixed camera above a moving belt; iterate it for frames.

    The same seed and config give the same frames, byte for byte.
    """

    def __init__(self, config: SimConfig, seed: int) -> None:
        self.config = config
        self.seed = seed
        # Independent streams: the rig, the parcel layout, and one per frame for sensor noise,
        # so any frame can be rendered on its own (in any worker) and come out the same.
        rng = np.random.default_rng([seed, 0])
        layout_rng = np.random.default_rng([seed, 1])
        belt_width = float(rng.uniform(*config.belt_width))
        self.camera, t_conv_cam = _sample_rig(config, rng)
        az = rng.uniform(-np.pi, np.pi)
        el = np.radians(rng.uniform(40.0, 85.0))
        light_dir = np.array([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)])
        self.lighting = Lighting(
            light_dir, float(rng.uniform(0.6, 1.0)), float(rng.uniform(0.25, 0.45))
        )
        self.exposure = float(rng.uniform(0.9, 1.2))
        self.conveyor_from_camera = t_conv_cam
        self.belt_width = belt_width
        x, y, z, yaw = config.base_from_conveyor
        self.base_from_conveyor = make_transform(rotation_z(yaw), [x, y, z])
        self.renderer = BeltRenderer(
            self.camera, t_conv_cam, sample_belt(belt_width, rng), self.lighting
        )
        self._view_half = self._view_half_length()
        self._layout = BeltLayout(
            layout_rng,
            scene=config.scene,
            belt_width=belt_width,
            start_x=self._view_half + 0.3,
            max_top=max_pile_top(float(t_conv_cam[2, 3])),
        )

    @property
    def transforms(self) -> TransformTree:
        """The static frames of the cell: base_link -> conveyor -> camera optical frame."""
        tree = TransformTree()
        tree.add(BASE_FRAME, CONVEYOR_FRAME, self.base_from_conveyor)
        tree.add(CONVEYOR_FRAME, self.config.frame_id, self.conveyor_from_camera)
        return tree

    def _view_half_length(self) -> float:
        """Half the belt length the camera sees, plus the largest parcel, metres."""
        cam = self.camera
        z = self.conveyor_from_camera[2, 3]
        return float(z * max(cam.width / cam.fx, cam.height / cam.fy) / 2.0 + 0.5)

    def frames(self, count: int) -> Iterator[SimFrame]:
        """Yield `count` consecutive frames at the configured rate."""
        for k in range(count):
            yield self.frame(k)

    def frame(self, index: int) -> SimFrame:
        """Render frame `index`; any order works, increasing order is cheapest."""
        cfg = self.config
        t = index / cfg.fps
        offset = cfg.belt_speed * t
        cam_x = self.conveyor_from_camera[0, 3] - offset  # camera position in belt coordinates
        placed = self._layout.parcels_between(cam_x - self._view_half, cam_x + self._view_half)
        shift = make_transform(np.eye(3), [offset, 0.0, 0.0])
        posed = [(p, shift @ p.pose) for p in placed]
        render = self.renderer.render(placed, offset)
        noise_rng = np.random.default_rng([self.seed, 2, index])
        depth_mm = apply_depth_noise(render, cfg.depth_noise, noise_rng)
        color = apply_color_noise(render, noise_rng, self.exposure)
        stamp = cfg.start_time_ns + round(t * 1e9)
        truth = self._truth(render, posed, stamp)
        ids = (render.parcel_ids % 65535).astype(np.uint16)  # ids wrap after 65535 parcels
        ids[(render.parcel_ids > 0) & (ids == 0)] = 65535
        return SimFrame(index, stamp, color, depth_mm, ids, truth)

    def rgbd_frame(self, index: int) -> RGBDFrame:
        """Frame `index` as a bag reader delivers it: metres, static transforms, ground truth."""
        f = self.frame(index)
        return RGBDFrame(
            color=f.color,
            depth=depth_from_millimetres(f.depth_mm),
            camera=self.camera,
            stamp_ns=f.stamp_ns,
            transforms=self.transforms,
            ground_truth=GroundTruth(f.truth, f.instance_ids),
        )

    def _truth(
        self, render: RenderOutput, posed: list[tuple[PlacedParcel, Matrix4]], stamp: int
    ) -> FrameTruth:
        supports: dict[int, list[int]] = {}
        for p, _ in posed:
            for below in p.rests_on:
                supports.setdefault(below, []).append(p.parcel_id)
        points = render.points.reshape(-1, 3)
        normals = render.normals.reshape(-1, 3)
        cam = self.camera
        cam_pos = self.conveyor_from_camera[:3, 3]
        parcels = []
        for (placed, pose), pix in zip(posed, render.parcel_pixels, strict=True):
            if pix.size == 0:
                continue
            shape = placed.shape
            face = shape.top_face
            rot = pose[:3, :3]
            centre = pose[:3, :3] @ face.center + pose[:3, 3]
            normal = rot[:, 2]
            local = (points.take(pix, axis=0) - pose[:3, 3]) @ rot
            on_face = (
                (normals.take(pix, axis=0) @ normal > np.cos(np.radians(25)))
                & (np.abs(local[:, 0] - face.center[0]) <= face.half_extents[0])
                & (np.abs(local[:, 1] - face.center[1]) <= face.half_extents[1])
                & (local[:, 2] > face.center[2] - 0.02)
            )
            view = centre - cam_pos
            dist = np.linalg.norm(view)
            cos_view = abs(float(view @ normal)) / max(dist, 1e-9)
            depth = float(view @ self.conveyor_from_camera[:3, 2])
            area = 4.0 * face.half_extents[0] * face.half_extents[1]
            expected = area * cam.fx * cam.fy * cos_view / max(depth, 1e-3) ** 2
            fraction = float(min(1.0, on_face.sum() / max(expected, 1.0)))
            on_top = supports.get(placed.parcel_id, [])
            graspable = fraction >= 0.5 and not on_top and normal[2] > np.cos(np.radians(35))
            parcels.append(
                ParcelTruth(
                    parcel_id=placed.parcel_id,
                    parcel_class=shape.parcel_class,
                    pose=pose,
                    size=shape.size.astype(np.float64),
                    visible_pixels=int(pix.size),
                    top_face=TopFaceTruth(
                        center=centre,
                        normal=normal,
                        x_axis=rot[:, 0],
                        half_extents=face.half_extents.astype(np.float64),
                        flatness=float(face.flatness),
                        visible_fraction=fraction,
                    ),
                    rests_on=placed.rests_on,
                    supports=tuple(sorted(on_top)),
                    graspable=bool(graspable),
                )
            )
        return FrameTruth(
            stamp_ns=stamp,
            frame_id=CONVEYOR_FRAME,
            belt_velocity=np.array([self.config.belt_speed, 0.0, 0.0]),
            parcels=tuple(parcels),
        )


def _sample_rig(config: SimConfig, rng: np.random.Generator) -> tuple[CameraModel, Matrix4]:
    """Intrinsics of a common camera (with unit-to-unit spread) and a downward mount."""
    preset = config.camera_presets[int(rng.integers(len(config.camera_presets)))]
    hfov = np.radians(CAMERA_PRESETS[preset])
    fx = config.width / 2.0 / np.tan(hfov / 2.0) * rng.uniform(0.98, 1.02)
    fy = fx * rng.uniform(0.995, 1.005)
    cx = config.width / 2.0 + rng.uniform(-6, 6)
    cy = config.height / 2.0 + rng.uniform(-6, 6)
    camera = CameraModel(
        width=config.width,
        height=config.height,
        fx=float(fx),
        fy=float(fy),
        cx=float(cx),
        cy=float(cy),
        frame_id=config.frame_id,
    )
    # Optical axes in the conveyor frame: image x along travel, looking straight down.
    down = np.array([[1.0, 0.0, 0.0], [0.0, -1.0, 0.0], [0.0, 0.0, -1.0]])
    tilt = np.radians(config.max_tilt_deg)
    wobble = Rotation.from_euler('xyz', rng.uniform(-tilt, tilt, 3) * [1, 1, 0.5]).as_matrix()
    height = float(rng.uniform(*config.camera_height))
    t = make_transform(down @ wobble, [rng.uniform(-0.05, 0.05), rng.uniform(-0.05, 0.05), height])
    return camera, t
