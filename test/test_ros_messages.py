# Copyright 2026 The pkg_perception Authors
# SPDX-License-Identifier: Apache-2.0
"""Output messages built with the Humble and Jazzy message classes, CDR round trips."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from pkg_perception.bag.types import typestore
from pkg_perception.classes import ParcelClass
from pkg_perception.frames import CameraModel, RGBDFrame
from pkg_perception.results import GraspCandidate, GraspKind, OrientedBox, Parcel, PerceptionResult
from pkg_perception.ros import messages
from pkg_perception.ros.messages import DiagnosticReport, MarkerState, MessageTypes
from pkg_perception.segmentation.instances import Instance, Segmentation
from pkg_perception.transforms import make_transform, matrix_from_quaternion, rotation_z

STAMP = 1_700_000_123_456_789_012
CAMERA = CameraModel(width=10, height=8, fx=10.0, fy=10.0, cx=4.5, cy=3.5, frame_id='cam')


@pytest.fixture(params=['humble', 'jazzy'])
def store(request: pytest.FixtureRequest) -> Any:
    return typestore(request.param)


@pytest.fixture
def types(store: Any) -> MessageTypes:
    return MessageTypes.from_typestore(store)


def round_trip(store: Any, msg: Any) -> Any:
    """Serialize to CDR and back: what a subscriber would receive."""
    raw = store.serialize_cdr(msg, msg.__msgtype__)
    back = store.deserialize_cdr(raw, msg.__msgtype__)
    assert bytes(store.serialize_cdr(back, msg.__msgtype__)) == bytes(raw)
    return back


def _parcel(track_id: int, label: int, cls: ParcelClass, x: float) -> Parcel:
    box = OrientedBox(make_transform(rotation_z(0.3), [x, 0.1, 0.05]), np.array([0.3, 0.2, 0.1]))
    return Parcel(
        track_id=track_id,
        label=label,
        parcel_class=cls,
        score=0.875,
        box=box,
        top_center=np.array([x, 0.1, 0.1]),
        top_normal=np.array([0.0, 0.0, 1.0]),
        height=0.1,
        supports=(),
        velocity=np.array([0.3, 0.0, 0.0]),
        point_count=100,
    )


def _grasp(track_id: int, score: float, x: float) -> GraspCandidate:
    # +z (approach) points down into the parcel: rotate pi about x.
    pose = make_transform(np.diag([1.0, -1.0, -1.0]), [x, 0.1, 0.1])
    return GraspCandidate(
        pose=pose,
        score=score,
        kind=GraspKind.SUCTION,
        width=0.04,
        parcel_id=track_id,
        parcel_class=ParcelClass.BOX,
        parcel_box=OrientedBox(np.eye(4), np.ones(3)),
        frame_id='base_link',
        stamp_ns=STAMP,
    )


def make_result(*, with_second: bool = True) -> tuple[RGBDFrame, PerceptionResult]:
    labels = np.zeros((8, 10), np.uint16)
    labels[1:4, 1:5] = 1
    labels[5:8, 6:10] = 2
    instances = [
        Instance(1, ParcelClass.BOX, 0.9, (1, 1, 5, 4), 12),
        Instance(
            2,
            ParcelClass.POLYBAG,
            0.6,
            (6, 5, 10, 8),
            12,
            ((ParcelClass.MAILER, 0.25), (ParcelClass.BOX, 0.1)),
        ),
    ]
    parcels = [_parcel(7, 1, ParcelClass.BOX, 1.0)]
    grasps = [_grasp(7, 0.8, 1.0), _grasp(7, 0.5, 1.02)]
    if with_second:
        parcels.append(_parcel(9, 2, ParcelClass.POLYBAG, 2.0))
    else:
        labels[labels == 2] = 0
        instances = instances[:1]
    depth = np.full((8, 10), 1.0, np.float32)
    depth[0, :] = np.nan
    color = np.zeros((8, 10, 3), np.uint8)
    color[..., 0] = 200
    frame = RGBDFrame(color=color, depth=depth, camera=CAMERA, stamp_ns=STAMP)
    result = PerceptionResult(
        stamp_ns=STAMP,
        frame_id='base_link',
        camera_frame_id='cam',
        segmentation=Segmentation(labels, instances),
        parcels=parcels,
        grasps=grasps,
        timings_ms={'total': 12.0},
    )
    return frame, result


def _matrix(pose: Any) -> np.ndarray:
    q = pose.orientation
    t = np.eye(4)
    t[:3, :3] = matrix_from_quaternion([q.x, q.y, q.z, q.w])
    t[:3, 3] = [pose.position.x, pose.position.y, pose.position.z]
    return t


def test_detections_carry_class_score_id_box_and_best_grasp(store, types) -> None:
    _, result = make_result()
    msg = round_trip(store, messages.detections(types, result))
    assert msg.header.frame_id == 'base_link'
    assert (msg.header.stamp.sec, msg.header.stamp.nanosec) == (1_700_000_123, 456_789_012)
    assert [d.id for d in msg.detections] == ['7', '9']  # parcel with the best grasp first
    first, second = msg.detections
    assert first.header.stamp == msg.header.stamp
    hyp = first.results[0]
    assert hyp.hypothesis.class_id == 'box' and hyp.hypothesis.score == pytest.approx(0.875)
    np.testing.assert_allclose(_matrix(hyp.pose.pose), result.grasps[0].pose, atol=1e-12)
    assert hyp.pose.covariance[0] == 0.0
    np.testing.assert_allclose(_matrix(first.bbox.center), result.parcels[0].box.pose, atol=1e-12)
    assert (first.bbox.size.x, first.bbox.size.y, first.bbox.size.z) == (0.3, 0.2, 0.1)
    # No grasp: the box centre stands in and covariance[0] = -1 says so.
    assert second.results[0].hypothesis.class_id == 'polybag'
    assert second.results[0].pose.covariance[0] == -1.0
    np.testing.assert_allclose(
        _matrix(second.results[0].pose.pose), result.parcels[1].box.pose, atol=1e-12
    )
    # The other classes the segmenter offers follow, most likely first, on the same pose.
    assert len(first.results) == 1
    assert [(r.hypothesis.class_id, round(r.hypothesis.score, 6)) for r in second.results] == [
        ('polybag', 0.875),
        ('mailer', 0.25),
        ('box', 0.1),
    ]
    assert all(r.pose.covariance[0] == -1.0 for r in second.results)


def test_grasp_pose_array_is_best_first_with_z_into_the_parcel(store, types) -> None:
    _, result = make_result()
    msg = round_trip(store, messages.grasp_poses(types, result))
    assert len(msg.poses) == 2 and msg.header.frame_id == 'base_link'
    assert msg.poses[0].position.x == pytest.approx(1.0)
    assert msg.poses[1].position.x == pytest.approx(1.02)
    approach = _matrix(msg.poses[0])[:3, 2]
    np.testing.assert_allclose(approach, [0.0, 0.0, -1.0], atol=1e-12)
    q = msg.poses[0].orientation
    assert q.w >= 0 and (q.x, q.y, q.z, q.w) == pytest.approx((1.0, 0.0, 0.0, 0.0))


def test_markers_add_then_delete_parcels_that_left(store, types) -> None:
    state = MarkerState()
    _, result = make_result()
    first = round_trip(store, state.build(types, result))
    adds = {(m.ns, m.id): m for m in first.markers}
    assert set(adds) == {
        ('parcels', 7),
        ('grasps', 7),
        ('labels', 7),
        ('parcels', 9),
        ('labels', 9),
    }
    cube = adds[('parcels', 7)]
    assert cube.type == types.Marker.CUBE and cube.action == types.Marker.ADD
    assert (cube.scale.x, cube.scale.y, cube.scale.z) == (0.3, 0.2, 0.1)
    arrow = adds[('grasps', 7)]
    assert arrow.type == types.Marker.ARROW and len(arrow.points) == 2
    tail, tip = arrow.points
    assert (tip.x, tip.y, tip.z) == pytest.approx((1.0, 0.1, 0.1))
    assert tail.z == pytest.approx(0.1 + messages.ARROW_LENGTH_M)  # arrow points down
    label = adds[('labels', 7)]
    assert label.text == '#7 box 0.88\nsuction 0.80'
    assert label.pose.position.z == pytest.approx(0.16)
    _, later = make_result(with_second=False)
    second = round_trip(store, state.build(types, later))
    deletes = {(m.ns, m.id) for m in second.markers if m.action == types.Marker.DELETE}
    assert deletes == {('parcels', 9), ('labels', 9)}
    state.reset()
    third = round_trip(store, state.build(types, later))
    assert third.markers[0].action == types.Marker.DELETEALL
    cleared = round_trip(store, state.clear(types, STAMP, 'base_link'))
    assert [m.action for m in cleared.markers] == [types.Marker.DELETEALL]


def test_overlay_is_rgb8_tinted_inside_masks_and_outlined(store, types) -> None:
    frame, result = make_result()
    msg = round_trip(store, messages.overlay(types, frame, result))
    assert (msg.encoding, msg.width, msg.height, msg.step) == ('rgb8', 10, 8, 30)
    assert msg.header.frame_id == 'cam' and msg.header.stamp.nanosec == 456_789_012
    img = np.asarray(msg.data).reshape(8, 10, 3)
    np.testing.assert_array_equal(img[0, 0], [200, 0, 0])  # outside every mask: unchanged
    rgb = [round(c * 255) for c in messages.class_rgb(ParcelClass.POLYBAG)]
    np.testing.assert_array_equal(img[7, 9], rgb)  # the outline has the class colour
    # A mask large enough to have an interior away from outline and label text.
    labels = np.zeros((64, 80), np.uint16)
    labels[10:60, 10:70] = 1
    big = RGBDFrame(
        color=np.full((64, 80, 3), 100, np.uint8),
        depth=np.ones((64, 80), np.float32),
        camera=CameraModel(width=80, height=64, fx=50.0, fy=50.0, cx=40.0, cy=32.0),
        stamp_ns=STAMP,
    )
    result.segmentation = Segmentation(
        labels, [Instance(1, ParcelClass.POLYBAG, 0.9, (10, 10, 70, 60), 3000)]
    )
    tinted = messages.overlay_rgb(big, result)
    np.testing.assert_array_equal(tinted[45, 40], [(100 + c) // 2 for c in rgb])
    np.testing.assert_array_equal(tinted[5, 5], [100, 100, 100])


def test_points_are_parcel_pixels_in_the_camera_frame(store, types) -> None:
    frame, result = make_result()
    msg = round_trip(store, messages.points(types, frame, result, stride=1))
    assert msg.header.frame_id == 'cam'
    assert [(f.name, f.offset, f.datatype) for f in msg.fields] == [
        ('x', 0, 7),
        ('y', 4, 7),
        ('z', 8, 7),
        ('rgb', 12, 7),
        ('track_id', 16, 6),
    ]
    assert msg.point_step == 20 and msg.row_step == 20 * msg.width and msg.height == 1
    pts = messages.cloud_to_numpy(msg)
    # Label 1 covers rows 1..3, columns 1..4 (12 pixels, all valid); label 2 rows 5..7,
    # columns 6..9 (12 pixels).
    assert len(pts) == 24
    assert set(pts['track_id'].tolist()) == {7, 9}
    one = pts[(pts['track_id'] == 7)]
    # Pixel (u=1, v=1) at 1 m: x = (1 - 4.5) / 10, y = (1 - 3.5) / 10.
    assert (one['x'][0], one['y'][0], one['z'][0]) == pytest.approx((-0.35, -0.25, 1.0))
    assert one['rgb'][0] == 200 << 16
    # Rows without depth give no points.
    frame.depth[1:4, :] = np.nan
    assert set(messages.parcel_points(frame, result, 1)['track_id'].tolist()) == {9}


def test_diagnostics_levels_and_values(store, types) -> None:
    report = DiagnosticReport(
        name='perception_node: pipeline',
        hardware_id='/camera',
        level='WARN',
        message='1 fault',
        values=(('rate_hz', '14.90'), ('provider', 'CPUExecutionProvider')),
    )
    msg = round_trip(store, messages.diagnostics(types, STAMP, [report]))
    (status,) = msg.status
    assert status.level == types.DiagnosticStatus.WARN == 1
    assert status.name == 'perception_node: pipeline' and status.hardware_id == '/camera'
    assert [(kv.key, kv.value) for kv in status.values] == [
        ('rate_hz', '14.90'),
        ('provider', 'CPUExecutionProvider'),
    ]


def test_empty_result_gives_empty_but_valid_messages(store, types) -> None:
    frame, result = make_result()
    result.parcels, result.grasps = [], []
    result.segmentation = Segmentation.empty(8, 10)
    assert round_trip(store, messages.detections(types, result)).detections == []
    assert round_trip(store, messages.grasp_poses(types, result)).poses == []
    assert round_trip(store, messages.points(types, frame, result)).width == 0
    assert round_trip(store, MarkerState().build(types, result)).markers == []
    overlay = round_trip(store, messages.overlay(types, frame, result))
    np.testing.assert_array_equal(np.asarray(overlay.data).reshape(8, 10, 3), frame.color)


def test_point_cloud_rejects_foreign_layout(types) -> None:
    with pytest.raises(ValueError, match='dtype'):
        messages.point_cloud(types, messages.header(types, 0, 'cam'), np.zeros(3, np.float32))
