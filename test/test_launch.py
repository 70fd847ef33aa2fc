# Copyright 2026 The pkg_perception Authors
# SPDX-License-Identifier: Apache-2.0
"""launch_testing: a simulated bag played into perception_node gives sane detections.

Runs under `colcon test` in a sourced ROS 2 (Humble or Jazzy) workspace where the package
is built; everywhere else it is skipped. The bag is recorded here by the simulator (sqlite3,
so Humble needs no mcap plugin) and played with --loop --clock at half speed, the node is
started by perception.launch.py with autostart, and a probe node checks that
- detections come for at least half the frames of a full loop (a rate of 7.5 Hz or more in
  bag time, for a 15 Hz camera);
- every output stamp is the stamp of a colour image in the bag, in the target frame;
- detections hold known classes, plausible boxes, numeric tracking ids;
- /diagnostics carries the node's status with segmenter, provider and dropped frames.
"""

from __future__ import annotations

import tempfile
import time
import unittest
from pathlib import Path

import pytest

try:
    import launch_testing
    import launch_testing.actions
    import rclpy
    from ament_index_python.packages import PackageNotFoundError, get_package_share_directory
    from diagnostic_msgs.msg import DiagnosticArray
    from launch import LaunchDescription
    from launch.actions import ExecuteProcess, IncludeLaunchDescription
    from launch.launch_description_sources import PythonLaunchDescriptionSource
    from vision_msgs.msg import Detection3DArray
except ImportError:
    pytest.skip('ROS 2 (rclpy, launch_testing) is not installed', allow_module_level=True)

try:
    SHARE = Path(get_package_share_directory('pkg_perception'))
except PackageNotFoundError:
    pytest.skip(
        'pkg_perception is not installed in the sourced workspace (colcon build first)',
        allow_module_level=True,
    )

from pkg_perception.bag.reader import BagFrameReader
from pkg_perception.classes import ParcelClass
from pkg_perception.config import PerceptionConfig, render_parameter_file
from pkg_perception.sim.record import record_bag
from pkg_perception.sim.simulator import SimConfig

FRAMES = 45
FPS = 15.0
PLAY_RATE = 0.5
WAIT_S = 180.0  # an upper bound for slow machines; the test ends as soon as it has enough


@pytest.mark.launch_test
def generate_test_description():
    work = Path(tempfile.mkdtemp(prefix='pkg_perception_launch_test_'))
    bag = work / 'conveyor.bag'
    config = SimConfig(width=320, height=240, fps=FPS, scene='mixed')
    record_bag(bag, frames=FRAMES, seed=3, config=config, storage='sqlite3', progress=False)
    with BagFrameReader(bag) as reader:
        bag_stamps = [f.stamp_ns for f in reader.frames()]
    params = work / 'perception.yaml'
    settings = PerceptionConfig().with_overrides({'segmentation.fallback_to_geometric': True})
    params.write_text(render_parameter_file(settings))
    perception = IncludeLaunchDescription(
        PythonLaunchDescriptionSource(str(SHARE / 'launch' / 'perception.launch.py')),
        launch_arguments={
            'config': str(params),
            'use_sim_time': 'true',
            'rviz': 'false',
            'autostart': 'true',
        }.items(),
    )
    play = ExecuteProcess(
        cmd=[
            'ros2', 'bag', 'play', str(bag), '--loop', '--clock', '--rate', str(PLAY_RATE),
        ],
        output='screen',
    )  # fmt: skip
    return LaunchDescription([perception, play, launch_testing.actions.ReadyToTest()]), {
        'bag_stamps': bag_stamps,
    }


def _stamp(msg) -> int:
    return msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec


class TestPerceptionNode(unittest.TestCase):
    @classmethod
    def setUpClass(cls) -> None:
        rclpy.init()

    @classmethod
    def tearDownClass(cls) -> None:
        rclpy.shutdown()

    def test_detections_arrive_at_rate_with_sane_content(self, bag_stamps) -> None:
        node = rclpy.create_node('perception_probe')
        detections: list = []
        diagnostics: list = []
        node.create_subscription(
            Detection3DArray, '/perception_node/detections', detections.append, 50
        )
        node.create_subscription(DiagnosticArray, '/diagnostics', diagnostics.append, 10)
        loops = 0  # times the output stamps stepped back: bag loops
        one_loop: list[int] = []  # stamps of the second pass through the bag
        last = None
        seen = 0
        deadline = time.monotonic() + WAIT_S
        try:
            while time.monotonic() < deadline and loops < 2:
                rclpy.spin_once(node, timeout_sec=0.2)
                for msg in detections[seen:]:
                    stamp = _stamp(msg)
                    if last is not None and stamp < last:
                        loops += 1
                    if loops == 1:
                        one_loop.append(stamp)
                    last = stamp
                    seen += 1
        finally:
            node.destroy_node()
        self.assertGreaterEqual(loops, 2, f'saw {len(detections)} detection messages only')
        # Rate: the share of one loop's frames that produced detections (newest-frame-only
        # processing may skip frames when the node is slower than the camera).
        processed = len(set(one_loop))
        self.assertGreaterEqual(
            processed / FRAMES * FPS, FPS / 2, f'{processed} of {FRAMES} frames in a loop'
        )
        stamps = set(bag_stamps)
        classes = {c.label for c in ParcelClass}
        parcels = 0
        for msg in detections:
            self.assertIn(_stamp(msg), stamps)  # outputs carry the colour image's stamp
            self.assertEqual(msg.header.frame_id, 'base_link')
            for det in msg.detections:
                parcels += 1
                self.assertEqual(_stamp(det), _stamp(msg))
                self.assertTrue(det.id.isdigit())
                self.assertIn(det.results[0].hypothesis.class_id, classes)
                self.assertTrue(0.0 < det.results[0].hypothesis.score <= 1.0)
                size = (det.bbox.size.x, det.bbox.size.y, det.bbox.size.z)
                self.assertTrue(all(0.0 < s < 1.0 for s in size), size)
                self.assertIn(det.results[0].pose.covariance[0], (0.0, -1.0))
        self.assertGreater(parcels, 0)
        ours = [s for d in diagnostics for s in d.status if s.name.startswith('perception_node')]
        self.assertTrue(ours, 'no perception_node status on /diagnostics')
        values = {kv.key: kv.value for kv in ours[-1].values}
        for key in ('rate_hz', 'frames_dropped', 'segmenter', 'provider', 'latency_total_ms'):
            self.assertIn(key, values)
