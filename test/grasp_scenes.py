# Copyright 2026 The pkg_perception Authors
# SPDX-License-Identifier: Apache-2.0
"""Hand-made depth scenes: flat-topped parcels under a camera looking straight down.

Exact geometry (no noise unless asked), so tests can check numbers worked out by hand.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pkg_perception.classes import ParcelClass
from pkg_perception.frames import CameraModel, RGBDFrame
from pkg_perception.segmentation.belt import BeltPlane
from pkg_perception.segmentation.instances import Instance, Segmentation, boxes_and_areas
from pkg_perception.transforms import TransformTree, make_transform

CAMERA = CameraModel(width=200, height=150, fx=160.0, fy=160.0, cx=99.5, cy=74.5)
CAMERA_HEIGHT = 1.0
# Camera 1 m above the belt, optical axis down, image x along conveyor x.
T_CONVEYOR_CAMERA = make_transform(np.diag([1.0, -1.0, -1.0]), [0.0, 0.0, CAMERA_HEIGHT])
T_BASE_CONVEYOR = make_transform(np.eye(3), [0.5, 0.0, 0.2])
BELT = BeltPlane.from_extrinsics(T_CONVEYOR_CAMERA)


@dataclass(frozen=True)
class Block:
    """A parcel top: centre (x, y) on the belt, size, top height, slope of the top along x."""

    x: float
    y: float
    length: float
    width: float
    height: float
    slope: float = 0.0  # dz/dx of the top surface
    curvature: float = 0.0  # the top falls by this times dx^2 (a poly bag's crown), 1/m
    parcel_class: ParcelClass = ParcelClass.BOX


def render(
    blocks: list[Block], *, noise: float = 0.0, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """(depth float32 metres, labels uint16) of the blocks' tops over the belt (label i+1)."""
    v, u = np.mgrid[0 : CAMERA.height, 0 : CAMERA.width].astype(np.float64)
    x = (u - CAMERA.cx) / CAMERA.fx
    y = (v - CAMERA.cy) / CAMERA.fy
    # Conveyor coordinates of the ray: origin (0, 0, H), direction (x, -y, -1).
    depth = np.full(u.shape, CAMERA_HEIGHT)
    labels = np.zeros(u.shape, dtype=np.uint16)
    best = np.zeros(u.shape)  # height hit so far (belt = 0)
    for i, b in enumerate(blocks):
        # The ray meets the top where H - t = height + slope dx - curvature dx^2, with
        # dx = x t - b.x: a quadratic in t whose nearer root is taken (stable form).
        qa = b.curvature * x * x
        qb = -2.0 * b.curvature * x * b.x - b.slope * x - 1.0
        qc = b.curvature * b.x**2 + b.slope * b.x + CAMERA_HEIGHT - b.height
        t = 2.0 * qc / (-qb + np.sqrt(np.maximum(qb * qb - 4.0 * qa * qc, 0.0)))
        px, py = x * t, -y * t
        z = CAMERA_HEIGHT - t
        inside = (np.abs(px - b.x) <= b.length / 2) & (np.abs(py - b.y) <= b.width / 2)
        hit = inside & (z > best)
        depth[hit], labels[hit], best[hit] = t[hit], i + 1, z[hit]
    if noise:
        depth += np.random.default_rng(seed).normal(0.0, noise, depth.shape)
    return depth.astype(np.float32), labels


def segmentation(labels: np.ndarray, blocks: list[Block], score: float = 1.0) -> Segmentation:
    """Ground-truth style segmentation of a rendered scene."""
    count = len(blocks)
    boxes, areas = boxes_and_areas(labels, count)
    instances = [
        Instance(
            i + 1, b.parcel_class, score, tuple(int(c) for c in boxes[i + 1]), int(areas[i + 1])
        )
        for i, b in enumerate(blocks)
        if areas[i + 1] > 0
    ]
    return Segmentation(labels, instances)


def transforms() -> TransformTree:
    tree = TransformTree()
    tree.add('base_link', 'conveyor', T_BASE_CONVEYOR)
    tree.add('conveyor', CAMERA.frame_id, T_CONVEYOR_CAMERA)
    return tree


def frame(
    blocks: list[Block], *, stamp_ns: int = 0, with_tf: bool = True, noise: float = 0.0
) -> RGBDFrame:
    depth, _ = render(blocks, noise=noise)
    color = np.full((CAMERA.height, CAMERA.width, 3), 128, dtype=np.uint8)
    return RGBDFrame(color, depth, CAMERA, stamp_ns, transforms() if with_tf else None)


class SceneSegmenter:
    """Masks straight from the scene description (a stand-in for a perfect segmenter)."""

    name = 'scene'
    provider = 'test'

    def __init__(self, blocks: list[Block]) -> None:
        self.blocks = blocks

    def segment(
        self, frame: RGBDFrame, belt: BeltPlane, belt_velocity: object = None
    ) -> Segmentation:
        _, labels = render(self.blocks)
        return segmentation(labels, self.blocks)


def tilted_pillow(
    tilt_deg: float, *, wrinkle: float = 0.004, size: tuple[float, float, float] = (0.3, 0.2, 0.08)
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(depth, labels, crown axis in the optical frame) of a poly bag tilted about y.

    A flat-topped pillow (the simulator's profile, power 3) with four seeded wrinkles,
    sampled densely and splatted nearest-first into the image; its middle 10 cm over the belt.
    """
    u, v = np.meshgrid(np.linspace(-1, 1, 500), np.linspace(-1, 1, 400), indexing='ij')
    prof = (np.clip(1 - np.abs(u) ** 3, 0, 1) * np.clip(1 - np.abs(v) ** 3, 0, 1)) ** 0.4
    rng = np.random.default_rng(0)
    waves = sum(
        np.sin(rng.uniform(3, 9) * (np.cos(a) * u + np.sin(a) * v) + rng.uniform(0, 6.3))
        for a in rng.uniform(0, np.pi, 4)
    )
    z = size[2] * prof + wrinkle * 0.5 * waves * prof
    local = np.stack([u * size[0] / 2, v * size[1] / 2, z], -1).reshape(-1, 3)
    t = np.radians(tilt_deg)
    rot = np.array([[np.cos(t), 0, np.sin(t)], [0, 1, 0], [-np.sin(t), 0, np.cos(t)]])
    cam = (local @ rot.T + [0.0, 0.0, 0.10] - T_CONVEYOR_CAMERA[:3, 3]) @ T_CONVEYOR_CAMERA[:3, :3]
    us = np.round(cam[:, 0] / cam[:, 2] * CAMERA.fx + CAMERA.cx).astype(int)
    vs = np.round(cam[:, 1] / cam[:, 2] * CAMERA.fy + CAMERA.cy).astype(int)
    depth = np.full((CAMERA.height, CAMERA.width), CAMERA_HEIGHT, dtype=np.float32)
    seen = np.argsort(-cam[:, 2])  # far first: the nearest sample of a pixel is written last
    depth[vs[seen], us[seen]] = cam[seen, 2]
    labels = (depth < CAMERA_HEIGHT - 0.005).astype(np.uint16)
    return depth, labels, T_CONVEYOR_CAMERA[:3, :3].T @ rot[:, 2]
