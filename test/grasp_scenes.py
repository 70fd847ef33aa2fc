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

    def segment(self, frame: RGBDFrame, belt: BeltPlane) -> Segmentation:
        _, labels = render(self.blocks)
        return segmentation(labels, self.blocks)
