# Copyright 2026 The pkg_perception Authors
# SPDX-License-Identifier: Apache-2.0
"""Overlay pictures of what the ranking chose: masks tinted, grasps marked and numbered.

Suction grasps are a circle of the cup's size with a tick along the approach; parallel-jaw
grasps a bar along the closing direction as wide as the opening. Rank 1 is drawn last, with
a yellow halo and tag; with evaluation verdicts, markers are green (success) or red
(failure).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt

from pkg_perception.checks import check_array
from pkg_perception.frames import CameraModel
from pkg_perception.geometry import project_points
from pkg_perception.results import GraspCandidate, GraspKind, PerceptionResult
from pkg_perception.transforms import Matrix4

# Distinct tints per track id (RGB), cycled.
_PALETTE = np.array(
    [
        (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48),
        (145, 30, 180), (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212),
        (0, 128, 128), (220, 190, 255), (170, 110, 40), (128, 0, 0), (170, 255, 195),
    ],
    dtype=np.uint8,
)  # fmt: skip
_OK = (40, 220, 60)
_BAD = (235, 40, 40)
_NEUTRAL = (255, 255, 255)
_BEST = (255, 230, 0)
_CAPTION = 24  # pixels


def draw_overlay(
    color: npt.NDArray[np.uint8],
    result: PerceptionResult,
    camera: CameraModel,
    t_camera_result: Matrix4,
    *,
    verdicts: Sequence[bool] | None = None,
    max_grasps: int = 10,
    caption: str | None = None,
) -> npt.NDArray[np.uint8]:
    """The colour image with masks, grasp markers and rank numbers.

    Args:
        color: (H, W, 3) uint8 RGB, the frame the result came from.
        result: the pipeline's output for it.
        camera: intrinsics of `color`.
        t_camera_result: T_<camera optical frame>_<result.frame_id>.
        verdicts: per grasp (best first), success or not; colours the markers.
        max_grasps: markers drawn for the best this many grasps.
        caption: a line of text in a strip above the image.

    Returns:
        (H, W, 3) uint8 RGB; `_CAPTION` pixels taller with a caption.
    """
    check_array('color', color, shape=(None, None, 3), dtypes=(np.uint8,))
    out = color.copy()
    labels = result.segmentation.labels
    if labels.shape == out.shape[:2]:
        track_of = {p.label: p.track_id for p in result.parcels}
        lut = np.zeros(int(labels.max()) + 1, dtype=np.int64) - 1
        for label, tid in track_of.items():
            if label < len(lut):
                lut[label] = tid
        tid = lut[labels]
        tinted = tid >= 0
        tint = _PALETTE[tid[tinted] % len(_PALETTE)]
        out[tinted] = ((out[tinted].astype(np.uint16) + tint) // 2).astype(np.uint8)
        edges = cv2.morphologyEx(labels, cv2.MORPH_GRADIENT, np.ones((3, 3), np.uint8)) > 0
        out[edges & (labels > 0)] = (20, 20, 20)
    shown = list(enumerate(result.grasps[:max_grasps]))
    for rank, g in reversed(shown):
        ok = None if verdicts is None or rank >= len(verdicts) else verdicts[rank]
        colour = _NEUTRAL if ok is None else (_OK if ok else _BAD)
        _draw_grasp(out, g, camera, t_camera_result, colour, rank + 1)
    if caption:
        strip = np.full((_CAPTION, out.shape[1], 3), 30, dtype=np.uint8)
        cv2.putText(
            strip, caption, (6, 17), cv2.FONT_HERSHEY_SIMPLEX, 0.45, _NEUTRAL, 1, cv2.LINE_AA
        )
        out = np.concatenate([strip, out])
    return out


def _draw_grasp(
    img: npt.NDArray[np.uint8],
    g: GraspCandidate,
    camera: CameraModel,
    t_cam: Matrix4,
    colour: tuple[int, int, int],
    rank: int,
) -> None:
    pose = t_cam @ g.pose
    centre, x, y, z = pose[:3, 3], pose[:3, 0], pose[:3, 1], pose[:3, 2]
    thick = 3 if rank == 1 else 2
    if g.kind is GraspKind.SUCTION:
        r = g.width / 2.0
        ring = np.linspace(0.0, 2.0 * np.pi, 25)
        circle = centre + r * (np.cos(ring)[:, None] * x + np.sin(ring)[:, None] * y)
        pts = _pixels(camera, circle)
        if pts is None:
            return
        if rank == 1:  # the chosen grasp: a yellow halo
            halo = _pixels(camera, centre + 1.4 * (circle - centre))
            if halo is not None:
                cv2.polylines(img, [halo], True, _BEST, 2, cv2.LINE_AA)
        cv2.polylines(img, [pts], True, (0, 0, 0), thick + 2, cv2.LINE_AA)
        cv2.polylines(img, [pts], True, colour, thick, cv2.LINE_AA)
        tick = _pixels(camera, np.stack([centre - 0.05 * z, centre]))
    else:
        half = g.width / 2.0
        bar = np.stack([centre - half * y, centre + half * y])
        tick = _pixels(camera, bar)
        if tick is None:
            return
        halo = _BEST if rank == 1 else (0, 0, 0)
        cv2.line(img, tuple(tick[0]), tuple(tick[1]), halo, thick + 4, cv2.LINE_AA)
        cv2.line(img, tuple(tick[0]), tuple(tick[1]), colour, thick + 2, cv2.LINE_AA)
        tick = _pixels(camera, np.stack([centre - 0.05 * z, centre]))
    if tick is not None:
        cv2.arrowedLine(img, tuple(tick[0]), tuple(tick[1]), colour, 1, cv2.LINE_AA)
    anchor = _pixels(camera, centre[None])
    if anchor is not None:
        _label(img, str(rank), (int(anchor[0, 0]) + 8, int(anchor[0, 1]) - 8), rank == 1)


def _label(img: npt.NDArray[np.uint8], text: str, org: tuple[int, int], first: bool) -> None:
    """Rank number on a white tag (yellow for the best), readable on any parcel."""
    scale = 0.55 if first else 0.42
    (w, h), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
    x, y = org
    cv2.rectangle(img, (x - 2, y - h - 3), (x + w + 2, y + base), (0, 0, 0), -1)
    tag = _BEST if first else (255, 255, 255)
    cv2.rectangle(img, (x - 1, y - h - 2), (x + w + 1, y + base - 1), tag, -1)
    cv2.putText(img, text, (x, y), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 1, cv2.LINE_AA)


def _pixels(camera: CameraModel, points: npt.NDArray[np.float64]) -> np.ndarray | None:
    uv = project_points(camera, points)
    if not np.isfinite(uv).all():
        return None
    return np.rint(uv).astype(np.int32)


def write_png(path: Path | str, image: npt.NDArray[np.uint8], *, scale: float = 1.0) -> Path:
    """Write an RGB image as PNG (creating the folder), optionally scaled down."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if scale != 1.0:
        size = (round(image.shape[1] * scale), round(image.shape[0] * scale))
        image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    bgr = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    if not cv2.imwrite(str(path), bgr, [cv2.IMWRITE_PNG_COMPRESSION, 9]):
        raise OSError(f'could not write {path}')
    return path
