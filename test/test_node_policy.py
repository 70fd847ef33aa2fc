# Copyright 2026 The pkg_perception Authors
# SPDX-License-Identifier: Apache-2.0
"""The node's decisions without rclpy: drop policy, throttles, clock jumps, faults, outputs."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from rosbags.rosbag2 import Reader

from pkg_perception.bag.reader import BagFrameReader
from pkg_perception.bag.topics import TopicMap
from pkg_perception.bag.types import typestore
from pkg_perception.classes import ParcelClass
from pkg_perception.config import PerceptionConfig, build_pipeline
from pkg_perception.errors import InputError
from pkg_perception.frames import CameraModel, RGBDFrame
from pkg_perception.pipeline import CONVEYOR_FRAME
from pkg_perception.results import OrientedBox, Parcel, PerceptionResult
from pkg_perception.ros.conversions import model_to_camera_info, numpy_to_image
from pkg_perception.ros.messages import MessageTypes
from pkg_perception.ros.policy import (
    ClockJumpDetector,
    FaultLog,
    LatestSlot,
    RunningStats,
    Throttle,
)
from pkg_perception.ros.runner import NodeCore
from pkg_perception.segmentation.instances import Instance, Segmentation

CAMERA = CameraModel(width=8, height=6, fx=8.0, fy=8.0, cx=4.0, cy=3.0, frame_id='cam')
SECOND = 1_000_000_000


# --- policy pieces ---------------------------------------------------------------------------


def test_slot_keeps_only_the_newest_and_counts_drops() -> None:
    slot: LatestSlot[int] = LatestSlot()
    assert slot.put(1) is False
    assert slot.put(2) is True
    assert slot.put(3) is True
    assert slot.take(timeout=0) == 3
    assert slot.take(timeout=0) is None  # nothing new: no stale frame comes back
    slot.put(4)
    assert slot.take() == 4
    assert (slot.received, slot.dropped) == (4, 2)
    slot.put(5)
    slot.clear()  # deactivate: forgotten, not counted as dropped
    assert slot.take(timeout=0) is None and slot.dropped == 2


def test_slot_close_wakes_a_waiting_worker() -> None:
    slot: LatestSlot[int] = LatestSlot()
    got: list[Any] = []
    worker = threading.Thread(target=lambda: got.append(slot.take()))
    worker.start()
    slot.close()
    worker.join(timeout=30)
    assert not worker.is_alive() and got == [None]
    slot.put(1)
    assert slot.take(timeout=0) is None  # closed stays closed
    slot.reopen()
    slot.put(2)
    assert slot.take(timeout=0) == 2


def test_throttle_allows_one_message_per_period() -> None:
    t = Throttle(5.0)
    assert [t.ready(s) for s in (0.0, 1.0, 4.9, 5.0, 6.0, 10.5)] == [
        True,
        False,
        False,
        True,
        False,
        True,
    ]
    assert t.ready(2.0) is True  # the clock went back (sim time loop): speak again


def test_clock_jump_detector_sees_loops_and_gaps() -> None:
    d = ClockJumpDetector(max_gap_s=1.0)
    assert d.observe(10 * SECOND) is None
    assert d.observe(10 * SECOND + SECOND // 15) is None
    back = d.observe(2 * SECOND)
    assert back is not None and back.backwards
    assert back.describe().startswith('time went back 8.067 s')
    assert d.observe(2 * SECOND + SECOND) is None  # exactly max_gap: still one stream
    ahead = d.observe(5 * SECOND)
    assert ahead is not None and not ahead.backwards
    assert 'jumped ahead 2.000 s' in ahead.describe()


def test_fault_log_logs_once_and_counts() -> None:
    log = FaultLog()
    assert log.report('input:enc', 'bad encoding') is True
    assert log.report('input:enc', 'bad encoding') is False
    assert log.active()['input:enc'].count == 2 and bool(log)
    assert log.resolve('input:') == ['input:enc'] and not log
    assert log.report('input:enc', 'bad encoding') is False  # back, but not logged again
    log.forget('input:enc')
    assert log.report('input:enc', 'bad encoding') is True


def test_running_stats_rate_and_latency() -> None:
    stats = RunningStats(window=3)
    for i, total in enumerate((10.0, 20.0, 30.0, 40.0)):
        stats.add({'segment': total / 2, 'total': total}, done_s=100.0 + 0.1 * i)
    assert stats.processed == 4
    assert stats.rate_hz(100.3) == pytest.approx(10.0)
    assert stats.latency_ms() == {'segment': (15.0, 20.0), 'total': (30.0, 40.0)}
    assert stats.rate_hz(200.0) == 0.0  # output stopped long ago


# --- NodeCore with a stand-in pipeline -------------------------------------------------------


class ListLog:
    def __init__(self) -> None:
        self.lines: list[tuple[str, str]] = []

    def info(self, msg: str) -> None:
        self.lines.append(('info', msg))

    def warning(self, msg: str) -> None:
        self.lines.append(('warning', msg))

    def error(self, msg: str) -> None:
        self.lines.append(('error', msg))

    def count(self, level: str, text: str) -> int:
        return sum(1 for lv, m in self.lines if lv == level and text in m)


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        self.now += 0.01
        return self.now


class StandIn:
    """Returns one parcel per frame; records what it was given."""

    name = 'stand-in'

    def __init__(self, fail: Exception | None = None) -> None:
        self.frames: list[RGBDFrame] = []
        self.resets = 0
        self.fail = fail

    def reset(self) -> None:
        self.resets += 1

    def process(self, frame: RGBDFrame) -> PerceptionResult:
        if self.fail is not None:
            raise self.fail
        self.frames.append(frame)
        labels = np.zeros(frame.depth.shape, np.uint16)
        labels[1:3, 1:4] = 1
        target = 'base_link' if frame.transforms and 'base_link' in frame.transforms.frames else ''
        parcel = Parcel(
            track_id=len(self.frames),  # a new id every frame: the old marker must go
            label=1,
            parcel_class=ParcelClass.BOX,
            score=0.9,
            box=OrientedBox(np.eye(4), np.array([0.2, 0.2, 0.1])),
            top_center=np.zeros(3),
            top_normal=np.array([0.0, 0.0, 1.0]),
            height=0.1,
            supports=(),
            velocity=np.zeros(3),
            point_count=6,
        )
        return PerceptionResult(
            stamp_ns=frame.stamp_ns,
            frame_id=target or frame.frame_id,
            camera_frame_id=frame.frame_id,
            segmentation=Segmentation(
                labels, [Instance(1, ParcelClass.BOX, 0.9, (1, 1, 4, 3), 6)]
            ),
            parcels=[parcel],
            grasps=[],
            timings_ms={'segment': 1.0, 'total': 2.0},
            segmenter='stand-in',
            provider='numpy',
        )


@pytest.fixture(params=['humble', 'jazzy'])
def ts(request: pytest.FixtureRequest) -> Any:
    return typestore(request.param)


def _header(ts: Any, stamp_ns: int, frame_id: str = 'cam') -> Any:
    t = ts.types
    sec, nsec = divmod(stamp_ns, SECOND)
    return t['std_msgs/msg/Header'](
        stamp=t['builtin_interfaces/msg/Time'](sec=sec, nanosec=nsec), frame_id=frame_id
    )


def pair(ts: Any, stamp_ns: int, *, encoding: str = 'rgb8', width: int = 8) -> tuple[Any, Any]:
    image = ts.types['sensor_msgs/msg/Image']
    color = np.full((6, 8, 3), 90, np.uint8)
    if encoding == 'mono16':
        color = color[..., 0].astype(np.uint16)
    color_msg = numpy_to_image(image, _header(ts, stamp_ns), color, encoding)
    depth = np.full((6, width), 1000, np.uint16)
    return color_msg, numpy_to_image(image, _header(ts, stamp_ns), depth, '16UC1')


def info(ts: Any, camera: CameraModel = CAMERA) -> Any:
    t = ts.types
    return model_to_camera_info(
        t['sensor_msgs/msg/CameraInfo'],
        t['sensor_msgs/msg/RegionOfInterest'],
        _header(ts, 0),
        camera,
    )


def make_core(
    ts: Any, pipeline: Any = None, *, lookup: Any = None, config: Any = None
) -> tuple[NodeCore, ListLog]:
    log = ListLog()
    core = NodeCore(
        config or PerceptionConfig(),
        pipeline or StandIn(),
        MessageTypes.from_typestore(ts),
        log=log,
        lookup=lookup,
        clock=FakeClock(),
    )
    return core, log


def test_frames_wait_for_camera_info_with_a_throttled_warning(ts) -> None:
    core, log = make_core(ts)
    for i in range(5):
        assert core.process(*pair(ts, i * SECOND // 15)) is None
    assert core.skipped == 5
    assert log.count('warning', 'no camera_info on /camera/color/camera_info yet') == 1
    report = core.report(name='perception_node')
    assert report.level == 'WARN' and 'camera_info' in report.message
    core.on_camera_info(info(ts))
    out = core.process(*pair(ts, SECOND))
    assert out is not None and not core.faults


def test_only_the_newest_pair_is_processed_and_drops_are_counted(ts) -> None:
    core, _ = make_core(ts)
    core.on_camera_info(info(ts))
    for i in range(4):
        core.on_frame(*pair(ts, SECOND + i))
    out = core.step(timeout=0)
    assert out is not None and out.result.stamp_ns == SECOND + 3
    assert core.step(timeout=0) is None
    values = dict(core.report(name='n').values)
    assert (values['frames_received'], values['frames_dropped']) == ('4', '3')
    assert values['frames_processed'] == '1'


def test_outputs_carry_the_colour_stamp_and_follow_the_switches(ts) -> None:
    cfg = PerceptionConfig().with_overrides({'node.publish_points': True, 'node.points_stride': 1})
    core, _ = make_core(ts, config=cfg)
    core.on_camera_info(info(ts))
    stamp = 1_700_000_000 * SECOND + 123
    out = core.process(*pair(ts, stamp))
    assert out is not None
    for msg in (out.detections, out.grasps, out.markers, out.overlay, out.points):
        header = msg.header if hasattr(msg, 'header') else msg.markers[0].header
        assert (header.stamp.sec, header.stamp.nanosec) == (1_700_000_000, 123)
    assert out.points.width == 6  # the 2x3 mask, all with depth
    out = core.process(*pair(ts, stamp + SECOND // 15), overlay=False, points=False)
    assert out.overlay is None and out.points is None  # nobody subscribed
    quiet = PerceptionConfig().with_overrides(
        {'node.publish_markers': False, 'node.publish_overlay': False}
    )
    core, _ = make_core(ts, config=quiet)
    core.on_camera_info(info(ts))
    out = core.process(*pair(ts, stamp))
    assert out.markers is None and out.overlay is None and out.points is None
    assert len(out.detections.detections) == 1


def test_markers_of_parcels_that_left_are_deleted(ts) -> None:
    core, _ = make_core(ts)
    core.on_camera_info(info(ts))
    core.process(*pair(ts, SECOND))
    second = core.process(*pair(ts, SECOND + SECOND // 15))
    delete = ts.types['visualization_msgs/msg/Marker'].DELETE
    gone = {(m.ns, m.id) for m in second.markers.markers if m.action == delete}
    assert gone == {('parcels', 1), ('labels', 1)}


@pytest.mark.parametrize(
    ('kwargs', 'text'),
    [
        ({'encoding': 'mono16'}, "colour image has encoding 'mono16'"),
        ({'width': 7}, 'color is 8x6 but depth is 7x6'),
    ],
)
def test_bad_frames_are_reported_once_and_skipped(ts, kwargs: dict, text: str) -> None:
    core, log = make_core(ts)
    core.on_camera_info(info(ts))
    for i in range(3):
        assert core.process(*pair(ts, SECOND + i, **kwargs)) is None
    assert core.skipped == 3 and log.count('error', text) == 1
    report = core.report(name='n')
    assert report.level == 'WARN'
    assert any(v.endswith('(x3)') and text in v for _, v in report.values)
    assert core.process(*pair(ts, 2 * SECOND)) is not None  # a good frame clears it
    assert core.report(name='n').level == 'OK'


def test_camera_info_of_another_size_is_a_size_mismatch(ts) -> None:
    core, log = make_core(ts)
    core.on_camera_info(info(ts, CameraModel(width=16, height=12, fx=8, fy=8, cx=8, cy=6)))
    assert core.process(*pair(ts, SECOND)) is None
    assert log.count('error', 'camera_info is 16x12 but the image is 8x6') == 1


def test_broken_camera_info_keeps_the_last_good_one(ts) -> None:
    core, log = make_core(ts)
    core.on_camera_info(info(ts))
    bad = info(ts)
    bad.k = np.zeros(9)
    core.on_camera_info(bad)
    assert core.camera == CAMERA and log.count('error', 'camera_info rejected') == 1
    assert core.process(*pair(ts, SECOND)) is not None


def test_tf_failure_publishes_in_the_camera_frame_and_says_so(ts) -> None:
    available = {'ok': False}

    def lookup(target: str, source: str) -> np.ndarray:
        if not available['ok']:
            raise LookupError(f'"{target}" passed to lookupTransform does not exist')
        return np.eye(4)

    stand_in = StandIn()
    core, log = make_core(ts, stand_in, lookup=lookup)
    core.on_camera_info(info(ts))
    out = core.process(*pair(ts, SECOND))
    assert out.detections.header.frame_id == 'cam'
    core.process(*pair(ts, SECOND + 1))
    assert log.count('warning', 'no transform base_link <- cam') == 1
    assert log.count('warning', 'publishing in cam') == 1
    assert log.count('warning', f'no transform {CONVEYOR_FRAME} <- cam') == 1
    report = core.report(name='n')
    assert report.level == 'WARN' and 'publishing in cam' in report.message
    available['ok'] = True
    out = core.process(*pair(ts, SECOND + 2))
    assert out.detections.header.frame_id == 'base_link'
    assert set(stand_in.frames[-1].transforms.frames) == {'base_link', CONVEYOR_FRAME, 'cam'}
    assert log.count('info', 'transform base_link <- cam available again') == 1
    assert core.report(name='n').level == 'OK'


def test_a_clock_jump_resets_tracking_and_clears_markers(ts) -> None:
    stand_in = StandIn()
    core, log = make_core(ts, stand_in)
    core.on_camera_info(info(ts))
    core.process(*pair(ts, 20 * SECOND))
    out = core.process(*pair(ts, 10 * SECOND))  # the bag looped
    assert out is not None and stand_in.resets == 1 and core.tracker_resets == 1
    deleteall = ts.types['visualization_msgs/msg/Marker'].DELETEALL
    assert out.markers.markers[0].action == deleteall
    text = 'time went back 10.000 s (bag loop or clock reset): tracking reset'
    assert log.count('warning', text) == 1
    core.process(*pair(ts, 13 * SECOND))  # a pause longer than tracking.max_gap_s
    assert stand_in.resets == 2


def test_pipeline_errors_skip_the_frame_and_keep_running(ts) -> None:
    core, log = make_core(ts, StandIn(fail=InputError('no plane facing the camera')))
    core.on_camera_info(info(ts))
    for i in range(3):
        assert core.process(*pair(ts, SECOND + i)) is None
    assert log.count('error', 'no plane facing the camera') == 1
    assert dict(core.report(name='n').values)['frames_skipped'] == '3'


def test_live_settings_rebuild_the_pipeline_before_the_next_frame(ts) -> None:
    built: list[PerceptionConfig] = []

    def rebuild(config: PerceptionConfig) -> StandIn:
        built.append(config)
        return StandIn()

    log = ListLog()
    core = NodeCore(
        PerceptionConfig(),
        StandIn(),
        MessageTypes.from_typestore(ts),
        log=log,
        rebuild=rebuild,
        clock=FakeClock(),
    )
    core.on_camera_info(info(ts))
    core.request_config(PerceptionConfig().with_overrides({'node.publish_overlay': False}))
    out = core.process(*pair(ts, SECOND))
    assert built == [] and out.overlay is None  # an output switch needs no new pipeline
    core.request_config(core.config.with_overrides({'grasping.min_score': 0.5}))
    core.process(*pair(ts, SECOND + 1))
    assert len(built) == 1 and built[0].grasping.min_score == 0.5
    assert log.count('info', 'settings changed: grasping.min_score') == 1


def test_diagnostics_report_rate_latency_and_provider(ts) -> None:
    core, _ = make_core(ts)
    report = core.report(name='perception_node', state='inactive')
    assert (report.level, report.message) == ('OK', 'inactive')
    core.on_camera_info(info(ts))
    for i in range(5):
        core.process(*pair(ts, SECOND + i * SECOND // 15))
    report = core.report(name='perception_node')
    values = dict(report.values)
    assert report.level == 'OK' and report.hardware_id == '/camera'
    assert float(values['rate_hz']) > 0
    assert values['segmenter'] == 'stand-in' and values['provider'] == 'numpy'
    assert values['latency_total_ms'] == '2.0 mean, 2.0 max'
    assert {'latency_convert_ms', 'latency_segment_ms', 'latency_messages_ms'} <= set(values)
    assert values['output_frame'] == 'cam'


# --- the real pipeline on a simulated bag, fed as the node receives it ----------------------


def test_bag_messages_through_the_node_core_give_sane_detections(small_bag_path: Path) -> None:
    ts = typestore('jazzy')
    tree = BagFrameReader(small_bag_path).transforms()
    cfg = PerceptionConfig().with_overrides(
        {'segmentation.use_geometric': True, 'node.publish_points': True}
    )
    core, log = make_core(ts, build_pipeline(cfg), lookup=tree.lookup, config=cfg)
    topics = TopicMap()
    pending: dict[str, dict[int, Any]] = {topics.color: {}, topics.depth: {}}
    outputs = []
    with Reader(small_bag_path) as reader:
        wanted = [c for c in reader.connections if c.topic in (*pending, topics.color_info)]
        for conn, _, raw in reader.messages(connections=wanted):
            msg = ts.deserialize_cdr(raw, conn.msgtype)
            if conn.topic == topics.color_info:
                core.on_camera_info(msg)
                continue
            stamp = msg.header.stamp.sec * SECOND + msg.header.stamp.nanosec
            pending[conn.topic][stamp] = msg
            if all(stamp in p for p in pending.values()):
                core.on_frame(pending[topics.color].pop(stamp), pending[topics.depth].pop(stamp))
                out = core.step(timeout=0)
                assert out is not None, log.lines
                outputs.append((stamp, out))
    assert len(outputs) == 10 and core.skipped == 0 and not core.faults
    for stamp, out in outputs:
        dets = out.detections
        assert dets.header.frame_id == 'base_link'
        assert dets.header.stamp.sec * SECOND + dets.header.stamp.nanosec == stamp
        for d in dets.detections:
            assert d.results[0].hypothesis.class_id in {c.label for c in ParcelClass}
            size = np.array([d.bbox.size.x, d.bbox.size.y, d.bbox.size.z])
            assert np.all(size > 0) and np.all(size < 1.0)  # parcels are 8 to 60 cm
        assert len(out.grasps.poses) <= cfg.grasping.max_candidates
        assert out.points.header.frame_id == 'camera_color_optical_frame'
    assert sum(len(o.detections.detections) for _, o in outputs) > 0
    assert dict(core.report(name='n').values)['segmenter'] == 'geometric'
