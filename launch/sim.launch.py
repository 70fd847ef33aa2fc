# Copyright 2026 The pkg_perception Authors
# SPDX-License-Identifier: Apache-2.0
"""The whole system on a simulated conveyor: bag playback, perception_node and RViz.

    ros2 launch pkg_perception sim.launch.py [bag:=/tmp/pkg_perception/conveyor.bag]
        [frames:=300] [seed:=0] [rate:=1.0] [rviz:=true] [config:=FILE] [model_path:=FILE]

Plays the bag with `ros2 bag play --loop --clock` and runs the node on sim time; each loop
steps the clock back, which the node notices and answers by resetting tracking. When the
bag does not exist yet it is recorded first with `pkg-perception simulate` (a minute or so
on two CPU cores for 300 frames).
"""

from __future__ import annotations

from pathlib import Path

from ament_index_python.packages import get_package_share_directory
from launch import LaunchContext, LaunchDescription
from launch.actions import (
    DeclareLaunchArgument,
    EmitEvent,
    ExecuteProcess,
    IncludeLaunchDescription,
    LogInfo,
    OpaqueFunction,
    RegisterEventHandler,
)
from launch.event_handlers import OnProcessExit
from launch.events import Shutdown
from launch.events.process import ProcessExited
from launch.launch_description_sources import PythonLaunchDescriptionSource
from launch.substitutions import LaunchConfiguration

PACKAGE = 'pkg_perception'

ARGUMENTS = (
    (
        'bag',
        '/tmp/pkg_perception/conveyor.bag',
        'rosbag2 to play; recorded by the simulator first if it does not exist',
    ),
    ('frames', '300', 'frames to simulate when the bag has to be recorded (15 per second)'),
    ('seed', '0', 'simulator seed when the bag has to be recorded'),
    ('rate', '1.0', 'playback rate (ros2 bag play --rate)'),
    ('rviz', 'true', 'start RViz with config/perception.rviz'),
    (
        'config',
        str(Path(get_package_share_directory(PACKAGE), 'config', 'perception.yaml')),
        'ROS 2 parameter file for perception_node',
    ),
    ('model_path', '', "ONNX model file; '' keeps segmentation.model_path from the config"),
)


def _launch_setup(context: LaunchContext) -> list:
    bag = Path(LaunchConfiguration('bag').perform(context)).expanduser()
    play = ExecuteProcess(
        cmd=[
            'ros2', 'bag', 'play', str(bag), '--loop', '--clock',
            '--rate', LaunchConfiguration('rate'),
        ],
        output='screen',
    )  # fmt: skip
    perception = IncludeLaunchDescription(
        PythonLaunchDescriptionSource(
            str(Path(get_package_share_directory(PACKAGE), 'launch', 'perception.launch.py'))
        ),
        launch_arguments={
            'config': LaunchConfiguration('config'),
            'model_path': LaunchConfiguration('model_path'),
            'use_sim_time': 'true',
            'rviz': LaunchConfiguration('rviz'),
            'autostart': 'true',
            # A demo should show something even before a model is trained or installed.
            'fallback_to_geometric': 'true',
        }.items(),
    )
    if bag.exists():
        return [perception, play]
    simulate = ExecuteProcess(
        cmd=[
            'ros2', 'run', PACKAGE, 'pkg-perception', 'simulate', '--out', str(bag),
            '--frames', LaunchConfiguration('frames'), '--seed', LaunchConfiguration('seed'),
        ],
        output='screen',
    )  # fmt: skip

    def after_simulate(event: ProcessExited, _: LaunchContext) -> list:
        if event.returncode == 0:
            return [play]
        return [
            LogInfo(msg=f'recording {bag} failed (exit code {event.returncode}); see above'),
            EmitEvent(event=Shutdown(reason='simulation failed')),
        ]

    return [
        LogInfo(msg=f'{bag} does not exist: recording it with the simulator first'),
        simulate,
        perception,
        RegisterEventHandler(OnProcessExit(target_action=simulate, on_exit=after_simulate)),
    ]


def generate_launch_description() -> LaunchDescription:
    return LaunchDescription(
        [
            *(
                DeclareLaunchArgument(name, default_value=default, description=text)
                for name, default, text in ARGUMENTS
            ),
            OpaqueFunction(function=_launch_setup),
        ]
    )
