# Copyright 2026 The pkg_perception Authors
# SPDX-License-Identifier: Apache-2.0
"""Randomized surface appearance: albedo textures for parcel tops, side colours, gloss, belts.

Textures are linear-light albedo in [0, 1], float32, sampled by the renderer in metres.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import numpy.typing as npt

from pkg_perception.classes import ParcelClass

Texture = npt.NDArray[np.float32]  # (H, W, 3) albedo, rows along local +x, cols along local +y

TEXELS_PER_METRE = 500.0

_CARDBOARD = ((0.55, 0.38, 0.22), (0.62, 0.45, 0.28), (0.48, 0.33, 0.20), (0.70, 0.55, 0.38))
_WHITE_BOX = ((0.85, 0.84, 0.80),)
_MAILER = (
    (0.92, 0.90, 0.86),
    (0.85, 0.72, 0.42),
    (0.55, 0.70, 0.85),
    (0.90, 0.55, 0.65),
    (0.80, 0.80, 0.78),
    (0.30, 0.30, 0.32),
)
_BAG = (
    (0.90, 0.90, 0.90),
    (0.12, 0.12, 0.13),
    (0.55, 0.56, 0.60),
    (0.20, 0.35, 0.65),
    (0.75, 0.20, 0.25),
    (0.85, 0.80, 0.30),
    (0.92, 0.92, 0.88),
)
_ENVELOPE = ((0.93, 0.92, 0.88), (0.82, 0.68, 0.45), (0.70, 0.55, 0.36))
_TAPE = ((0.70, 0.50, 0.25), (0.80, 0.65, 0.45), (0.92, 0.92, 0.90), (0.85, 0.25, 0.20))
_LOGO = (
    (0.80, 0.15, 0.15),
    (0.10, 0.35, 0.75),
    (0.10, 0.55, 0.25),
    (0.95, 0.65, 0.10),
    (0.15, 0.15, 0.15),
)


@dataclass(frozen=True)
class Appearance:
    """How one parcel looks: a top texture, a side colour, and how glossy it is."""

    top: Texture
    side: npt.NDArray[np.float32]  # (3,)
    gloss: float  # specular weight, 0 matte cardboard .. ~0.8 shiny plastic
    shininess: float  # Blinn-Phong exponent


def _pick(rng: np.random.Generator, palette: tuple[tuple[float, float, float], ...]) -> np.ndarray:
    base = np.asarray(palette[rng.integers(len(palette))], dtype=np.float32)
    return np.clip(base * rng.uniform(0.9, 1.1, 3).astype(np.float32), 0.0, 1.0)


def _noise(rng: np.random.Generator, shape: tuple[int, int], scale: int, amp: float) -> np.ndarray:
    """Smooth value noise: random grid at 1/scale resolution, bicubic upsampled."""
    small = rng.normal(0.0, amp, (max(2, shape[0] // scale), max(2, shape[1] // scale)))
    return cv2.resize(
        small.astype(np.float32), (shape[1], shape[0]), interpolation=cv2.INTER_CUBIC
    )


def _draw_label(img: np.ndarray, rng: np.random.Generator) -> None:
    """A white shipping label with a barcode and text lines, at a random spot."""
    h, w = img.shape[:2]
    lh = int(min(h * 0.6, rng.uniform(0.08, 0.15) * TEXELS_PER_METRE))
    lw = int(min(w * 0.6, rng.uniform(0.06, 0.10) * TEXELS_PER_METRE))
    if lh < 8 or lw < 8:
        return
    r0 = int(rng.integers(0, h - lh + 1))
    c0 = int(rng.integers(0, w - lw + 1))
    img[r0 : r0 + lh, c0 : c0 + lw] = (0.95, 0.95, 0.93)
    # Barcode: vertical bars across the label's lower third.
    bar_top = r0 + int(lh * 0.62)
    c = c0 + 3
    while c < c0 + lw - 3:
        bw = int(rng.integers(1, 4))
        if rng.random() < 0.55:
            img[bar_top : r0 + lh - 3, c : c + bw] = 0.05
        c += bw
    for k in range(int(rng.integers(2, 5))):  # text lines
        rr = r0 + 4 + k * max(3, lh // 8)
        if rr + 2 < bar_top:
            img[rr : rr + 2, c0 + 4 : c0 + 4 + int(lw * rng.uniform(0.4, 0.9)) - 8] = 0.15


def _draw_tape(img: np.ndarray, rng: np.random.Generator) -> None:
    """Tape strip along the parcel's long axis (rows), full length."""
    h, w = img.shape[:2]
    tw = max(2, int(rng.uniform(0.045, 0.075) * TEXELS_PER_METRE))
    c0 = int(np.clip(w / 2 - tw / 2 + rng.normal(0, 2), 0, max(0, w - tw)))
    colour = _pick(rng, _TAPE)
    img[:, c0 : c0 + tw] = img[:, c0 : c0 + tw] * 0.3 + colour * 0.7
    if rng.random() < 0.3:  # printed tape: repeated marks
        for r in range(0, h, max(4, tw)):
            img[r : r + max(1, tw // 4), c0 + tw // 4 : c0 + 3 * tw // 4] = (0.8, 0.1, 0.1)


def _draw_logo(img: np.ndarray, rng: np.random.Generator) -> None:
    h, w = img.shape[:2]
    colour = tuple(float(c) for c in _pick(rng, _LOGO))
    size = int(rng.uniform(0.03, 0.08) * TEXELS_PER_METRE)
    if size < 6 or size * 2 >= min(h, w):
        return
    centre = (int(rng.integers(size, w - size)), int(rng.integers(size, h - size)))
    mask = np.zeros((h, w), dtype=np.uint8)  # OpenCV draws text on 8-bit images only
    if rng.random() < 0.5:
        cv2.circle(mask, centre, size // 2, 255, -1)
    else:
        text = ''.join(chr(int(c)) for c in rng.integers(65, 91, int(rng.integers(2, 6))))
        cv2.putText(mask, text, centre, cv2.FONT_HERSHEY_SIMPLEX, size / 30.0, 255, 2)
    img[mask > 0] = colour


def sample_appearance(
    parcel_class: ParcelClass, size_xy: tuple[float, float], rng: np.random.Generator
) -> Appearance:
    """Randomize one parcel's look; the top texture covers its full footprint."""
    rows = max(8, int(size_xy[0] * TEXELS_PER_METRE))
    cols = max(8, int(size_xy[1] * TEXELS_PER_METRE))
    if parcel_class is ParcelClass.BOX:
        base = _pick(rng, _WHITE_BOX if rng.random() < 0.12 else _CARDBOARD)
        gloss, shininess, grain = rng.uniform(0.0, 0.08), 8.0, 0.05
    elif parcel_class is ParcelClass.POLYBAG:
        base = _pick(rng, _BAG)
        gloss, shininess, grain = rng.uniform(0.25, 0.8), rng.uniform(20, 60), 0.02
    elif parcel_class is ParcelClass.MAILER:
        base = _pick(rng, _MAILER)
        gloss, shininess, grain = rng.uniform(0.05, 0.35), rng.uniform(10, 30), 0.03
    else:
        base = _pick(rng, _ENVELOPE)
        gloss, shininess, grain = rng.uniform(0.0, 0.1), 10.0, 0.02
    top = np.empty((rows, cols, 3), dtype=np.float32)
    top[:] = base
    shade = _noise(rng, (rows, cols), 16, grain) + rng.normal(0, grain / 3, (rows, cols))
    top *= 1.0 + shade[..., None].astype(np.float32)
    if parcel_class is ParcelClass.BOX and rng.random() < 0.75:
        _draw_tape(top, rng)
    if rng.random() < 0.35:
        _draw_logo(top, rng)
    if rng.random() < 0.8:
        _draw_label(top, rng)
    return Appearance(
        top=np.clip(top, 0.0, 1.0),
        side=(base * rng.uniform(0.85, 1.0)).astype(np.float32),
        gloss=float(gloss),
        shininess=float(shininess),
    )


@dataclass(frozen=True)
class BeltLook:
    """Belt surface texture, tiled along travel; period and width in metres."""

    texture: Texture  # rows along belt x (travel), cols along belt y
    period: float
    width: float


def sample_belt(width: float, rng: np.random.Generator) -> BeltLook:
    """Rubber or modular-plastic belt: a base colour, grain, seams or slats."""
    period = 1.2
    rows, cols = int(period * 250), int(width * 250)
    palette = (
        (0.10, 0.10, 0.11),
        (0.20, 0.22, 0.22),
        (0.12, 0.22, 0.15),
        (0.15, 0.20, 0.32),
        (0.40, 0.40, 0.40),
    )
    base = _pick(rng, palette)
    tex = np.empty((rows, cols, 3), dtype=np.float32)
    tex[:] = base
    tex *= (
        1.0
        + _noise(rng, (rows, cols), 12, 0.08)[..., None]
        + rng.normal(0, 0.03, (rows, cols, 1)).astype(np.float32)
    )
    if rng.random() < 0.5:  # modular belt slats
        pitch = int(rng.uniform(0.025, 0.05) * 250)
        tex[::pitch] *= 0.6
    else:  # a splice seam per period
        tex[: int(0.01 * 250)] *= 1.4
    return BeltLook(np.clip(tex, 0, 1).astype(np.float32), period, width)
