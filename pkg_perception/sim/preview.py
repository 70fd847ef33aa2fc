# Copyright 2026 The pkg_perception Authors
# SPDX-License-Identifier: Apache-2.0
"""Contact sheet of a recording: colour, colourised depth and instance overlay per frame."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt

from pkg_perception.classes import ParcelClass
from pkg_perception.frames import RGBDFrame

CLASS_COLORS_BGR = {  # stable colours per class for the overlay outlines and legend
    ParcelClass.BOX: (40, 120, 230),
    ParcelClass.POLYBAG: (220, 180, 40),
    ParcelClass.MAILER: (90, 200, 90),
    ParcelClass.ENVELOPE: (200, 90, 200),
}


def colorize_depth(depth_m: npt.NDArray[np.float32]) -> npt.NDArray[np.uint8]:
    """Depth in metres -> BGR (turbo, near = red), invalid pixels black; range per image."""
    valid = np.isfinite(depth_m)
    out = np.zeros((*depth_m.shape, 3), np.uint8)
    if not valid.any():
        return out
    lo, hi = np.percentile(depth_m[valid], [1, 99])
    scaled = np.clip((hi - np.nan_to_num(depth_m, nan=hi)) / max(hi - lo, 1e-3), 0, 1)
    out = cv2.applyColorMap((scaled * 255).astype(np.uint8), cv2.COLORMAP_TURBO)
    out[~valid] = 0
    return out


def instance_overlay(frame: RGBDFrame) -> npt.NDArray[np.uint8]:
    """BGR colour image with each ground-truth parcel tinted, outlined and labelled."""
    bgr = cv2.cvtColor(frame.color, cv2.COLOR_RGB2BGR)
    gt = frame.ground_truth
    if gt is None:
        return bgr
    ids = gt.instance_ids
    classes = {p.parcel_id % 65535 or 65535: p for p in gt.truth.parcels}
    tint = bgr.copy()
    for pid in classes:
        mask = ids == pid
        if not mask.any():
            continue
        rng = np.random.default_rng(pid)
        tint[mask] = rng.integers(60, 255, 3)
    out = cv2.addWeighted(bgr, 0.5, tint, 0.5, 0)
    for pid, parcel in classes.items():
        mask = (ids == pid).astype(np.uint8)
        if not mask.any():
            continue
        colour = CLASS_COLORS_BGR[parcel.parcel_class]
        contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(out, contours, -1, colour, 2)
        ys, xs = np.nonzero(mask)
        text = f'{parcel.parcel_id} {parcel.parcel_class.label}' + (
            ' *' if parcel.graspable else ''
        )
        org = (int(xs.mean()) - 30, int(ys.mean()))
        cv2.putText(out, text, org, cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 3, cv2.LINE_AA)
        cv2.putText(
            out, text, org, cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1, cv2.LINE_AA
        )
    return out


def _caption(img: npt.NDArray[np.uint8], text: str) -> npt.NDArray[np.uint8]:
    bar = np.full((24, img.shape[1], 3), 32, np.uint8)
    cv2.putText(bar, text, (6, 17), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (235, 235, 235), 1, cv2.LINE_AA)
    return np.vstack([bar, img])


def contact_sheet(frames: list[RGBDFrame], title: str) -> npt.NDArray[np.uint8]:
    """One row per frame: colour | depth | ground-truth instances; BGR uint8."""
    rows = []
    t0 = frames[0].stamp_ns if frames else 0
    for f in frames:
        holes = float(np.mean(~np.isfinite(f.depth)))
        n = len(f.ground_truth.truth.parcels) if f.ground_truth else 0
        t = f't = {(f.stamp_ns - t0) / 1e9:.2f} s'
        rows.append(
            np.hstack(
                [
                    _caption(cv2.cvtColor(f.color, cv2.COLOR_RGB2BGR), f'colour  {t}'),
                    _caption(colorize_depth(f.depth), f'depth (no depth: {holes:.1%}, black)'),
                    _caption(
                        instance_overlay(f), f'ground truth: {n} parcels (* = graspable top)'
                    ),
                ]
            )
        )
    sheet = np.vstack(rows)
    legend = np.full((30, sheet.shape[1], 3), 20, np.uint8)
    cv2.putText(
        legend, title, (8, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (255, 255, 255), 1, cv2.LINE_AA
    )
    x = sheet.shape[1] - 360
    for cls, colour in CLASS_COLORS_BGR.items():
        cv2.rectangle(legend, (x, 9), (x + 12, 21), colour, -1)
        cv2.putText(
            legend, cls.label, (x + 16, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (230, 230, 230), 1
        )
        x += 90
    return np.vstack([legend, sheet])


def write_contact_sheet(frames: list[RGBDFrame], path: Path, title: str) -> None:
    """Write the sheet as PNG (folders created as needed)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), contact_sheet(frames, title)):
        raise OSError(f'could not write {path}')
