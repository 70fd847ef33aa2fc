# Copyright 2026 The pkg_perception Authors
# SPDX-License-Identifier: Apache-2.0
"""Stereo RGB-D sensor effects on a noise-free render.

Depth: axial noise with sigma = k * z^2 (stereo disparity error), a little spatially
correlated error, holes where the second viewpoint is shadowed, on dark or glare surfaces and
along depth edges, flying pixels mixing foreground and background at edges, 1 mm
quantization in 16UC1. Colour: gamma, shot and read noise, 8-bit.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import numpy.typing as npt

from pkg_perception.sim.render import RenderOutput


@dataclass(frozen=True)
class DepthNoise:
    """Parameters of the depth model (defaults resemble a RealSense D4xx at 640x480)."""

    sigma_at_1m: float = 0.0012  # metres of noise at 1 m; grows with depth squared
    correlated_fraction: float = 0.4  # share of the noise that is smooth over ~16 px
    min_range: float = 0.2
    max_range: float = 4.0
    edge_jump: float = 0.015  # a neighbour this much farther marks a depth edge, metres
    edge_dropout: float = 0.5  # chance an edge pixel has no depth
    flying_pixel: float = 0.25  # chance an edge pixel that keeps depth lands between surfaces
    dark_luma: float = 0.08  # albedo below this tends to lose depth
    glare: float = 0.6  # specular strength above this loses depth


def _edge_map(depth: npt.NDArray[np.float32], jump: float) -> tuple[np.ndarray, np.ndarray]:
    """Pixels next to a depth jump, and the far-side depth there (for flying pixels)."""
    finite = np.where(np.isfinite(depth), depth, 10.0).astype(np.float32)
    far = cv2.dilate(finite, np.ones((3, 3), np.uint8))
    near = cv2.erode(finite, np.ones((3, 3), np.uint8))
    edge = (far - near) > jump
    return edge, far


def apply_depth_noise(
    render: RenderOutput, noise: DepthNoise, rng: np.random.Generator
) -> npt.NDArray[np.uint16]:
    """Sensor depth as 16UC1 millimetres, 0 where the sensor gives no measurement."""
    z = render.depth.astype(np.float32, copy=False)
    h, w = z.shape
    valid = np.isfinite(z) & (z > noise.min_range) & (z < noise.max_range)
    sigma = noise.sigma_at_1m * np.where(valid, z, 0.0) ** 2
    white = _noise_slice(rng, (h, w))
    small = rng.standard_normal((max(2, h // 16), max(2, w // 16)), dtype=np.float32)
    smooth = cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)
    c = noise.correlated_fraction
    noisy = z + sigma * (np.sqrt(1 - c * c) * white + c * smooth)

    edge, far = _edge_map(z, noise.edge_jump)
    draw = rng.random((h, w), dtype=np.float32)
    flying = edge & (draw >= noise.edge_dropout) & (draw < noise.edge_dropout + noise.flying_pixel)
    mix = rng.random((h, w), dtype=np.float32)
    fly = np.flatnonzero(flying)  # few pixels: blend only those
    m = mix.take(fly)
    noisy.flat[fly] = noisy.take(fly) * (1 - m) + np.minimum(far.take(fly), noise.max_range) * m

    drop = edge & (draw < noise.edge_dropout)
    drop |= render.stereo_shadow
    # Dark regions, not thin dark print, starve the stereo matcher: judge brightness blurred.
    luma = cv2.blur(render.albedo_luma, (9, 9))
    drop |= (luma < noise.dark_luma) & (draw > 0.3)
    drop |= render.specular > noise.glare
    # Holes come in blobs, not single pixels: grow a sparse seed a little.
    speckle = (rng.random((h // 4 + 1, w // 4 + 1)) < 0.004).astype(np.uint8)
    speckle = cv2.resize(
        speckle, (w // 4 * 4 + 4, h // 4 * 4 + 4), interpolation=cv2.INTER_NEAREST
    )[:h, :w].astype(bool)
    drop |= speckle
    keep = valid & ~drop
    out = np.zeros((h, w), dtype=np.uint16)
    out[keep] = np.clip(np.rint(noisy[keep] * 1000.0), 1, 65535).astype(np.uint16)
    return out


_BANK: dict[int, np.ndarray] = {}


def _noise_slice(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Unit normal noise of `shape`, cut at a random offset from a fixed bank twice its size.

    Drawing a fresh image of normals per frame costs more than the rest of the sensor model;
    a random window into a seeded bank keeps frames uncorrelated to the eye and deterministic.
    """
    size = int(np.prod(shape))
    bank = _BANK.get(size)
    if bank is None:
        bank = np.random.default_rng(0x5EED).standard_normal(2 * size, dtype=np.float32)
        _BANK[size] = bank
    start = int(rng.integers(0, size))
    return bank[start : start + size].reshape(shape)


def apply_color_noise(
    render: RenderOutput, rng: np.random.Generator, exposure: float
) -> npt.NDArray[np.uint8]:
    """8-bit sRGB-ish colour image from linear radiance: exposure, gamma, sensor noise."""
    # Gamma through a 4096-entry table: exact enough for 8 bits and far cheaper than pow.
    code = np.clip(render.radiance * np.float32(exposure * 4095.0), 0, 4095).astype(np.uint16)
    img = _GAMMA_LUT.take(code)  # take: a faster gather than fancy indexing
    noise = _noise_slice(rng, img.shape) * _NOISE_LUT.take(code)
    return np.clip(img + noise, 0, 255).astype(np.uint8)


_GAMMA_LUT = (np.linspace(0.0, 1.0, 4096) ** (1.0 / 2.2) * 255.0 + 0.5).astype(np.float32)
# Shot plus read noise in 8-bit code values, growing with brightness.
_NOISE_LUT = (3.0 * np.sqrt(_GAMMA_LUT / 255.0 + 0.02)).astype(np.float32)
