# Copyright 2026 The pkg_perception Authors
# SPDX-License-Identifier: Apache-2.0
"""Mask outlines redrawn at the frame's resolution, along the colour image's edges.

ParcelNet decides instances at 320x240, so at 640x480 a boundary between two parcels is a
staircase of 2-pixel steps, and an outline against the belt follows a probability
interpolated between output pixels. Both are off by a pixel or two, which costs little at
IoU 0.5 but much at 0.9 and 0.95, and most of all on small parcels. The printed edge of a
parcel is in the colour image at full resolution: a band around every outline is left
open, each instance and the belt keep the rest as markers, and a watershed on the colour
image (OpenCV's, which floods by colour difference) lets the markers meet at the edges.
"""

from __future__ import annotations

from dataclasses import replace

import cv2
import numpy as np
import numpy.typing as npt

from pkg_perception.segmentation.instances import Instance, Segmentation, group_extrema

_NONE = np.uint16(np.iinfo(np.uint16).max)
_BELT = 1 << 16


def _keep_slivers(
    markers: npt.NDArray[np.int32], labels: npt.NDArray[np.uint16], band: npt.NDArray[np.bool_]
) -> None:
    """Give back their pixels to instances the band covers whole (no marker to grow from)."""
    bins = int(labels.max()) + 1
    inside = labels.copy()
    inside[band] = 0
    present = cv2.calcHist([inside], [0], None, [bins], [0, bins]).ravel() > 0
    present[0] = True
    if present.all():
        return
    keep = band & ~present[labels]
    markers[keep] = labels[keep]
    band &= ~keep


def _settle_ridges(
    markers: npt.NDArray[np.int32], color: npt.NDArray[np.uint8], band: npt.NDArray[np.bool_]
) -> None:
    """Give each ridge pixel the watershed left (-1) the owner of its closest-coloured neighbour.

    Ridges run where two floods meet, i.e. on the edge itself; left at -1 they would keep
    their old owner and hold every outline a pixel short of the edge.
    """
    h, w = markers.shape
    flat = np.flatnonzero(band & (markers == -1))
    if len(flat) == 0:
        return
    ys, xs = np.divmod(flat, w)
    pixels = color.reshape(-1, 3)
    own = pixels[flat].astype(np.int16)
    owners = markers.ravel()
    best = np.full(len(flat), -1, dtype=np.int32)
    closest = np.full(len(flat), np.iinfo(np.int32).max)
    for dy, dx in ((-1, 0), (1, 0), (0, -1), (0, 1)):
        ny, nx = ys + dy, xs + dx
        inside = (ny >= 0) & (ny < h) & (nx >= 0) & (nx < w)
        near = np.where(inside, ny * w + nx, flat)
        owner = owners[near]
        diff = np.abs(pixels[near].astype(np.int16) - own).sum(axis=1)
        better = inside & (owner > 0) & (diff < closest)
        best[better], closest[better] = owner[better], diff[better]
    owners[flat] = best


def open_band(labels: npt.NDArray[np.uint16], between: int, belt: int) -> npt.NDArray[np.bool_]:
    """Pixels redrawn: within `between` px of another instance, within `belt` px of the belt."""
    fg = labels > 0
    band = np.zeros(labels.shape, dtype=bool)
    if between > 0:
        kernel = np.ones((2 * between + 1,) * 2, np.uint8)
        # Labels less one wrap the belt to _NONE, so an erosion finds the smallest instance
        # label nearby and a dilation of the labels the largest.
        below = labels - np.uint16(1)
        smaller = cv2.erode(below, kernel) != below
        larger = cv2.dilate(labels, kernel) != labels
        band |= fg & (larger | smaller)
    if belt > 0:
        kernel = np.ones((2 * belt + 1,) * 2, np.uint8)
        fg8 = fg.view(np.uint8)
        band |= (cv2.dilate(fg8, kernel) != cv2.erode(fg8, kernel)).view(bool)
    return band


def refine_outlines(
    seg: Segmentation, color: npt.NDArray[np.uint8], between: int, belt: int
) -> Segmentation:
    """`seg` with the band around its outlines redrawn along `color`'s edges.

    An instance thinner than the band everywhere keeps its pixels: a sliver has no marker
    left to grow from, and it is the one parcel the watershed must not lose. Boxes grow to
    what an instance gains; where it loses its outermost pixels they stay as they were, at
    most the band loose.
    """
    if not seg.instances or (between <= 0 and belt <= 0):
        return seg
    h, w = seg.labels.shape
    pad = max(between, belt) + 1
    x, y, bw, bh = cv2.boundingRect((seg.labels > 0).view(np.uint8))
    x0, y0 = max(0, x - pad), max(0, y - pad)
    x1, y1 = min(w, x + bw + pad), min(h, y + bh + pad)
    labels = seg.labels[y0:y1, x0:x1]
    band = open_band(labels, between, belt)
    markers = labels.astype(np.int32)
    # The belt's marker is 2^16, so casting the flooded markers back to uint16 turns the
    # belt into 0 and the watershed's boundary pixels (-1) into _NONE in one pass.
    markers[markers == 0] = _BELT
    markers[band] = 0
    _keep_slivers(markers, labels, band)
    # The watershed marks its image's outermost pixels as boundaries; there they are belt
    # (the window has a pixel of belt beyond the band) or the frame's edge, left as it is.
    window = np.ascontiguousarray(color[y0:y1, x0:x1])
    cv2.watershed(window, markers)
    _settle_ridges(markers, window, band)
    redrawn = markers.astype(np.uint16)
    changed = band & (redrawn != labels) & (redrawn != _NONE)
    flat = np.flatnonzero(changed)
    if len(flat) == 0:
        return seg
    ys, xs = np.divmod(flat, x1 - x0)
    new, old = redrawn.ravel()[flat], labels.ravel()[flat]
    out = seg.labels.copy()
    out[ys + y0, xs + x0] = new
    instances = _reboxed(seg.instances, new, old, xs + x0, ys + y0)
    return Segmentation(out, instances, seg.flags, seg.timings_ms)


def _reboxed(
    instances: list[Instance],
    new: npt.NDArray[np.uint16],
    old: npt.NDArray[np.uint16],
    xs: npt.NDArray[np.intp],
    ys: npt.NDArray[np.intp],
) -> list[Instance]:
    """Instances with their boxes grown to the pixels they gained and areas counted again."""
    size = max(int(new.max()), int(old.max()), max(i.label for i in instances)) + 1
    gained = np.bincount(new, minlength=size)
    area = gained - np.bincount(old, minlength=size)
    to_instance = new > 0  # pixels given to the belt grow no box
    ids = new[to_instance]
    lo_x, hi_x = group_extrema(ids, xs[to_instance], size - 1)
    lo_y, hi_y = group_extrema(ids, ys[to_instance], size - 1)
    out = []
    for inst in instances:
        k = inst.label
        x0, y0, x1, y1 = inst.box
        if gained[k]:
            x0, y0 = min(x0, int(lo_x[k - 1])), min(y0, int(lo_y[k - 1]))
            x1, y1 = max(x1, int(hi_x[k - 1]) + 1), max(y1, int(hi_y[k - 1]) + 1)
        out.append(replace(inst, box=(x0, y0, x1, y1), area=max(1, inst.area + int(area[k]))))
    return out
