# Copyright 2026 The pkg_perception Authors
# SPDX-License-Identifier: Apache-2.0
"""What the post-process knows about each decoded instance, as one feature row per mask.

The per-pixel network sees a parcel through a window; whether a mask is a whole envelope, a
flat box or a fragment of a bag is clearer from the mask as a whole: its size in metres, its
thickness (the step from its surface down to what surrounds it), how flat it is, how sure
the network was inside it. The instance head (`instance_head.py`) reads these rows to
re-class and re-score the masks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np
import numpy.typing as npt

from pkg_perception.frames import CameraModel
from pkg_perception.segmentation.belt import BeltPlane
from pkg_perception.segmentation.inputs import InputSpec
from pkg_perception.segmentation.instances import boxes_and_areas, group_extrema

FEATURE_NAMES: tuple[str, ...] = (
    'p_belt',
    'p_box',
    'p_polybag',
    'p_mailer',
    'p_envelope',
    'edge_mean',
    'seed_share',
    'log_area_m2',
    'length_m',
    'width_m',
    'fill',
    'height_mean_m',
    'height_std_m',
    'step_m',
    'drop_low_m',
    'drop_high_m',
    'height_max_m',
    'valid_share',
    'touches_border',
    'rgb_r',
    'rgb_g',
    'rgb_b',
    'rgb_std',
)
RING_PIXELS = 3  # output pixels around a mask whose height is "what it rests beside"


@dataclass(frozen=True)
class FeatureContext:
    """Frame facts the features need beyond the network's outputs."""

    height: npt.NDArray[np.float32]  # (h, w) metres above the belt, at the output grid
    valid: npt.NDArray[np.float32]  # (h, w) 1 where depth was usable
    color: npt.NDArray[np.float32]  # (3, h, w) normalized model input colour
    camera_height: float  # metres from the camera to the belt along its normal
    focal: float  # focal length in output pixels (geometric mean of fx and fy)


def feature_context(
    spec: InputSpec,
    tensor: npt.NDArray[np.float32],
    camera: CameraModel,
    belt: BeltPlane,
    grid: tuple[int, ...],
) -> FeatureContext:
    """The context from the (5, H, W) model input, resampled to the (h, w) output grid."""
    h, w = grid
    planes = tensor if tensor.shape[1:] == (h, w) else _resized(tensor, w, h)
    return FeatureContext(
        height=planes[3] * np.float32(spec.height_scale),
        valid=planes[4],
        color=planes[:3],
        camera_height=float(belt.offset),
        focal=math.sqrt(camera.fx * camera.fy) * w / camera.width,
    )


def _resized(tensor: npt.NDArray[np.float32], w: int, h: int) -> npt.NDArray[np.float32]:
    return np.stack([cv2.resize(c, (w, h), interpolation=cv2.INTER_AREA) for c in tensor])


def instance_features(
    labels: npt.NDArray[np.integer],
    count: int,
    class_means: npt.NDArray[np.float64],
    edge: npt.NDArray[np.float32],
    seed_threshold: float,
    ctx: FeatureContext,
) -> npt.NDArray[np.float32]:
    """(count, len(FEATURE_NAMES)) rows for labels 1..count of `labels` (output grid).

    `class_means` (count + 1, 4) are the masks' mean parcel-class probabilities, which the
    decoder has already computed (`label_means`); the belt's is what they leave of 1.
    """
    h, w = labels.shape
    if count == 0:
        return np.zeros((0, len(FEATURE_NAMES)), dtype=np.float32)
    # Everything is a per-mask mean of some pixel quantity: gather the mask pixels once.
    flat = labels.ravel()
    at = np.flatnonzero(flat)
    ids = flat[at]
    ys, xs = np.divmod(at, w)
    xs, ys = xs.astype(np.float64), ys.astype(np.float64)
    height = ctx.height.ravel()[at].astype(np.float64)
    color = ctx.color.reshape(len(ctx.color), -1)[:, at].astype(np.float64)
    e = edge.ravel()[at]
    columns = [
        e,
        e > seed_threshold,
        height,
        height * height,
        ctx.valid.ravel()[at],
        *color,
        (color * color).sum(axis=0),
        xs,
        ys,
        xs * xs,
        ys * ys,
        xs * ys,
    ]
    counts = np.bincount(ids, minlength=count + 1).astype(np.float64)
    sums = np.stack([np.bincount(ids, weights=c, minlength=count + 1) for c in columns], axis=1)
    m = sums / np.maximum(counts, 1)[:, None]
    counts, m = counts[1:], m[1:]
    parcel_p = class_means[1:]
    p = np.column_stack([1.0 - parcel_p.sum(axis=1), parcel_p])
    edge_mean, seed_share, hm, h2, valid = (m[:, k] for k in range(5))
    rgb = m[:, 5:8]
    rgb2 = m[:, 8]
    mx, my, mxx, myy, mxy = (m[:, 9 + k] for k in range(5))
    # Principal extents of the mask in pixels (a uniform rectangle of side L has var L^2/12).
    cxx, cyy, cxy = mxx - mx * mx, myy - my * my, mxy - mx * my
    tr, det = cxx + cyy, cxx * cyy - cxy * cxy
    disc = np.sqrt(np.maximum(tr * tr / 4 - det, 0.0))
    major = np.sqrt(np.maximum(12.0 * (tr / 2 + disc), 0.0))
    minor = np.sqrt(np.maximum(12.0 * (tr / 2 - disc), 0.0))
    metres_per_px = np.maximum(ctx.camera_height - hm, 0.05) / ctx.focal
    boxes = boxes_and_areas(labels, count)[0][1:]
    box_area = np.maximum((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]), 1)
    border = (boxes[:, 0] == 0) | (boxes[:, 1] == 0) | (boxes[:, 2] == w) | (boxes[:, 3] == h)
    ring_height, ring_low, ring_high = _ring_heights(labels, count, ctx.height, hm)
    _, top = group_extrema(ids, height, count)
    rgb_var = np.maximum(rgb2 - (rgb * rgb).sum(axis=1), 0.0) / 3.0
    return np.column_stack(
        [
            p,
            edge_mean,
            seed_share,
            np.log(np.maximum(counts * metres_per_px**2, 1e-6)),
            major * metres_per_px,
            minor * metres_per_px,
            counts / box_area,
            hm,
            np.sqrt(np.maximum(h2 - hm * hm, 0.0)),
            hm - ring_height,
            hm - ring_low,
            hm - ring_high,
            top,
            valid,
            border.astype(np.float64),
            rgb,
            np.sqrt(rgb_var),
        ]
    ).astype(np.float32)


def _ring_heights(
    labels: npt.NDArray[np.integer],
    count: int,
    values: npt.NDArray[np.float32],
    own: npt.NDArray[np.float64],
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Mean, lowest and highest of `values` in a band just outside each mask.

    A mask with no band (it fills the frame) gets `own`, its own mean, for all three.

    The band of a label is where a max-filter of the label image reaches beyond the mask;
    where two bands overlap the higher label takes the pixel, which only thins one band.
    """
    size = 2 * RING_PIXELS + 1
    kernel = cv2.getStructuringElement(cv2.MORPH_RECT, (size, size))
    grown = cv2.dilate(labels.astype(np.uint16), kernel)
    band = (grown != labels) & (grown > 0)
    ids = grown[band].astype(np.int64)
    sums = np.bincount(ids, weights=values[band], minlength=count + 1)[1:]
    n = np.bincount(ids, minlength=count + 1)[1:]
    has = n > 0
    low, high = group_extrema(ids, values[band], count)
    return (
        np.where(has, sums / np.maximum(n, 1), own),
        np.where(has, low, own),
        np.where(has, high, own),
    )
