# Copyright 2026 The pkg_perception Authors
# SPDX-License-Identifier: Apache-2.0
"""Image and camera_info conversions against the official message classes (rosbags typestore)."""

from __future__ import annotations

import numpy as np
import pytest

from pkg_perception.bag.types import typestore
from pkg_perception.errors import InputError
from pkg_perception.frames import CameraModel, RGBDFrame
from pkg_perception.ros.conversions import (
    camera_info_to_model,
    image_to_depth_m,
    image_to_numpy,
    image_to_rgb,
    model_to_camera_info,
    numpy_to_image,
)


@pytest.fixture(params=['humble', 'jazzy'])
def types(request: pytest.FixtureRequest):
    return typestore(request.param).types


def _header(types):
    return types['std_msgs/msg/Header'](
        stamp=types['builtin_interfaces/msg/Time'](sec=12, nanosec=34), frame_id='cam'
    )


def test_rgb_round_trips_through_cdr(types) -> None:
    ts = typestore()
    rgb = np.random.default_rng(0).integers(0, 255, (5, 7, 3), dtype=np.uint8)
    msg = numpy_to_image(types['sensor_msgs/msg/Image'], _header(types), rgb, 'rgb8')
    raw = ts.serialize_cdr(msg, 'sensor_msgs/msg/Image')
    back = ts.deserialize_cdr(raw, 'sensor_msgs/msg/Image')
    np.testing.assert_array_equal(image_to_rgb(back), rgb)
    bgr = numpy_to_image(
        types['sensor_msgs/msg/Image'], _header(types), rgb[..., ::-1].copy(), 'bgr8'
    )
    np.testing.assert_array_equal(image_to_rgb(bgr), rgb)


def test_row_padding_and_big_endian_are_honoured(types) -> None:
    image = types['sensor_msgs/msg/Image']
    depth = np.array([[1000, 0, 65535], [1, 2, 3]], dtype=np.uint16)
    padded = np.zeros((2, 8), np.uint8)  # 6 bytes of pixels + 2 bytes padding per row
    padded[:, :6] = depth.astype('>u2').view(np.uint8).reshape(2, 6)
    msg = image(
        header=_header(types),
        height=2,
        width=3,
        encoding='16UC1',
        is_bigendian=1,
        step=8,
        data=padded.reshape(-1),
    )
    np.testing.assert_array_equal(image_to_numpy(msg), depth)
    metres = image_to_depth_m(msg)
    assert metres[0, 0] == pytest.approx(1.0) and np.isnan(metres[0, 1])


def test_float_depth_marks_invalid_as_nan(types) -> None:
    d = np.array([[0.5, 0.0, np.inf, -1.0, np.nan]], np.float32)
    msg = numpy_to_image(types['sensor_msgs/msg/Image'], _header(types), d, '32FC1')
    out = image_to_depth_m(msg)
    assert out[0, 0] == pytest.approx(0.5) and np.isnan(out[0, 1:]).all()


def test_unsupported_encoding_and_short_buffer_are_clear(types) -> None:
    image = types['sensor_msgs/msg/Image']
    msg = image(
        header=_header(types),
        height=2,
        width=2,
        encoding='yuv422',
        is_bigendian=0,
        step=4,
        data=np.zeros(8, np.uint8),
    )
    with pytest.raises(InputError, match="unsupported image encoding 'yuv422'"):
        image_to_numpy(msg)
    short = image(
        header=_header(types),
        height=4,
        width=4,
        encoding='rgb8',
        is_bigendian=0,
        step=12,
        data=np.zeros(10, np.uint8),
    )
    with pytest.raises(InputError, match='too small'):
        image_to_numpy(short)


def test_camera_info_round_trip(types) -> None:
    cam = CameraModel(
        width=640,
        height=480,
        fx=600.0,
        fy=601.0,
        cx=320.5,
        cy=239.5,
        distortion=(0.1, -0.01, 0.0, 0.0, 0.001),
        frame_id='cam',
    )
    msg = model_to_camera_info(
        types['sensor_msgs/msg/CameraInfo'],
        types['sensor_msgs/msg/RegionOfInterest'],
        _header(types),
        cam,
    )
    assert camera_info_to_model(msg) == cam


def test_frame_checks_sizes_and_intrinsics() -> None:
    cam = CameraModel(width=4, height=3, fx=1.0, fy=1.0, cx=2.0, cy=1.5)
    with pytest.raises(InputError, match='color is 4x3 but depth is 5x3'):
        RGBDFrame(np.zeros((3, 4, 3), np.uint8), np.zeros((3, 5), np.float32), cam, 0)
    with pytest.raises(InputError, match='expected dtype float32'):
        RGBDFrame(np.zeros((3, 4, 3), np.uint8), np.zeros((3, 4), np.float64), cam, 0)
    with pytest.raises(InputError, match='must be finite'):
        CameraModel(width=4, height=3, fx=float('nan'), fy=1.0, cx=2.0, cy=1.5)
    with pytest.raises(InputError, match='positive focal'):
        CameraModel(width=4, height=3, fx=0.0, fy=1.0, cx=2.0, cy=1.5)
