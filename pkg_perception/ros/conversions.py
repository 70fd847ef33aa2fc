# Copyright 2026 The pkg_perception Authors
# SPDX-License-Identifier: Apache-2.0
"""sensor_msgs <-> numpy, without importing ROS.

Works on rclpy messages and on the `rosbags` typestore classes alike: both expose the same
field names. Functions that build messages take the message classes as arguments.
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np
import numpy.typing as npt

from pkg_perception.errors import InputError
from pkg_perception.frames import CameraModel

# encoding -> (dtype, channels)
IMAGE_ENCODINGS: dict[str, tuple[np.dtype, int]] = {
    'rgb8': (np.dtype(np.uint8), 3),
    'bgr8': (np.dtype(np.uint8), 3),
    'rgba8': (np.dtype(np.uint8), 4),
    'bgra8': (np.dtype(np.uint8), 4),
    'mono8': (np.dtype(np.uint8), 1),
    '8UC1': (np.dtype(np.uint8), 1),
    'mono16': (np.dtype(np.uint16), 1),
    '16UC1': (np.dtype(np.uint16), 1),
    '32FC1': (np.dtype(np.float32), 1),
}


def stamp_to_ns(stamp: Any) -> int:
    """builtin_interfaces/Time -> integer nanoseconds."""
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def ns_to_sec_nanosec(ns: int) -> tuple[int, int]:
    """Integer nanoseconds -> (sec, nanosec) for builtin_interfaces/Time."""
    return ns // 1_000_000_000, ns % 1_000_000_000


def image_to_numpy(msg: Any) -> npt.NDArray[Any]:
    """sensor_msgs/Image -> (H, W) or (H, W, C) array in the message's own channel order.

    Honours `step` (row padding) and `is_bigendian`. Raises InputError on an unknown
    encoding or a buffer that is too small for height x step.
    """
    enc = str(msg.encoding)
    if enc not in IMAGE_ENCODINGS:
        raise InputError(
            f'unsupported image encoding {enc!r}; supported: {", ".join(IMAGE_ENCODINGS)}. '
            'Set the camera driver to publish one of these.'
        )
    dtype, channels = IMAGE_ENCODINGS[enc]
    h, w, step = int(msg.height), int(msg.width), int(msg.step)
    row_bytes = w * channels * dtype.itemsize
    buf = np.frombuffer(
        memoryview(msg.data).cast('B')
        if not isinstance(msg.data, np.ndarray)
        else msg.data.view(np.uint8),
        dtype=np.uint8,
    )
    if step < row_bytes or buf.size < h * step:
        raise InputError(
            f'{enc} image {w}x{h}: step {step} and data size {buf.size} bytes are too small '
            f'(need step >= {row_bytes} and {h * max(step, row_bytes)} bytes); '
            'the message is corrupt'
        )
    rows = buf[: h * step].reshape(h, step)[:, :row_bytes]
    big = bool(msg.is_bigendian)
    order = '>' if big else '<'
    arr = np.ascontiguousarray(rows).view(
        dtype.newbyteorder(order) if dtype.itemsize > 1 else dtype
    )
    if dtype.itemsize > 1 and big != (sys.byteorder == 'big'):
        arr = arr.astype(dtype)
    arr = arr.reshape(h, w, channels) if channels > 1 else arr.reshape(h, w)
    return arr


def image_to_rgb(msg: Any) -> npt.NDArray[np.uint8]:
    """Colour image message -> (H, W, 3) uint8 RGB, whatever its 8-bit encoding."""
    arr = image_to_numpy(msg)
    enc = str(msg.encoding)
    if enc == 'rgb8':
        return arr
    if enc == 'bgr8':
        return np.ascontiguousarray(arr[..., ::-1])
    if enc == 'rgba8':
        return np.ascontiguousarray(arr[..., :3])
    if enc == 'bgra8':
        return np.ascontiguousarray(arr[..., 2::-1])
    if enc in ('mono8', '8UC1'):
        return np.repeat(arr[..., None], 3, axis=2)
    raise InputError(
        f'colour image has encoding {enc!r}; expected rgb8, bgr8, rgba8, bgra8 or mono8'
    )


def image_to_depth_m(msg: Any) -> npt.NDArray[np.float32]:
    """Depth image (16UC1 mm or 32FC1 m, 0/NaN invalid) -> float32 metres, NaN invalid."""
    arr = image_to_numpy(msg)
    enc = str(msg.encoding)
    if enc in ('16UC1', 'mono16'):
        depth = arr.astype(np.float32) * np.float32(0.001)
        depth[arr == 0] = np.nan
        return depth
    if enc == '32FC1':
        depth = arr.astype(np.float32, copy=True)
        depth[~np.isfinite(depth) | (depth <= 0)] = np.nan
        return depth
    raise InputError(f'depth image has encoding {enc!r}; expected 16UC1 (mm) or 32FC1 (m)')


def numpy_to_image(image_cls: type, header: Any, array: npt.NDArray[Any], encoding: str) -> Any:
    """(H, W[, C]) array -> sensor_msgs/Image of `image_cls` (rosbags or rclpy class)."""
    if encoding not in IMAGE_ENCODINGS:
        raise InputError(f'unsupported image encoding {encoding!r}')
    dtype, channels = IMAGE_ENCODINGS[encoding]
    if (
        array.dtype != dtype
        or (array.ndim == 3 and array.shape[2] != channels)
        or (array.ndim == 2 and channels != 1)
    ):
        raise InputError(
            f'{encoding} needs a {dtype.name} array with {channels} channel(s), '
            f'got {array.dtype.name} {array.shape}'
        )
    h, w = array.shape[:2]
    data = np.ascontiguousarray(array).astype(dtype.newbyteorder('<'), copy=False)
    return image_cls(
        header=header,
        height=h,
        width=w,
        encoding=encoding,
        is_bigendian=0,
        step=w * channels * dtype.itemsize,
        data=data.reshape(-1).view(np.uint8),
    )


def camera_info_to_model(msg: Any) -> CameraModel:
    """sensor_msgs/CameraInfo -> CameraModel (K and D; rectified P is not used)."""
    k = np.asarray(msg.k if hasattr(msg, 'k') else msg.K, dtype=np.float64).reshape(-1)
    d = tuple(float(x) for x in np.asarray(msg.d if hasattr(msg, 'd') else msg.D).reshape(-1))
    if k.size != 9:
        raise InputError(f'camera_info K has {k.size} values, expected 9')
    model = str(msg.distortion_model) or 'plumb_bob'
    if model not in ('plumb_bob', 'rational_polynomial', 'none', '') and any(d):
        raise InputError(
            f'distortion model {model!r} is not supported; use plumb_bob or rectified images'
        )
    return CameraModel(
        width=int(msg.width),
        height=int(msg.height),
        fx=float(k[0]),
        fy=float(k[4]),
        cx=float(k[2]),
        cy=float(k[5]),
        distortion_model=model,
        distortion=d,
        frame_id=str(msg.header.frame_id),
    )


def model_to_camera_info(info_cls: type, roi_cls: type, header: Any, camera: CameraModel) -> Any:
    """CameraModel -> sensor_msgs/CameraInfo of `info_cls` (rosbags or rclpy class)."""
    k = camera.k
    p = np.zeros((3, 4))
    p[:, :3] = k
    return info_cls(
        header=header,
        height=camera.height,
        width=camera.width,
        distortion_model=camera.distortion_model,
        d=np.asarray(camera.distortion, dtype=np.float64),
        k=k.reshape(-1),
        r=np.eye(3).reshape(-1),
        p=p.reshape(-1),
        binning_x=0,
        binning_y=0,
        roi=roi_cls(x_offset=0, y_offset=0, height=0, width=0, do_rectify=False),
    )
