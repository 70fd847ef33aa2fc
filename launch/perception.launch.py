# Copyright 2026 The pkg_perception Authors
# SPDX-License-Identifier: Apache-2.0
"""Start perception_node (a lifecycle node) with the shared parameter file, and RViz.

    ros2 launch pkg_perception perception.launch.py [config:=FILE] [model_path:=FILE]
        [camera_namespace:=/camera/camera] [target_frame:=base_link] [use_sim_time:=false]
        [rviz:=false] [autostart:=true] [fallback_to_geometric:=true]

Empty model_path, camera_namespace, target_frame and fallback_to_geometric keep the
parameter file's values, so the file stays the one source of truth and the arguments are
only for quick overrides. With
autostart the node is configured (model loaded and warmed up) and then activated; if
configuring fails (e.g. the model cannot be loaded) the launch shuts down with the reason in
the node's log.
"""

from __future__ import annotations

from pathlib import Path

from ament_index_python.packages import get_package_share_directory
from launch import LaunchContext, LaunchDescription
from launch.actions import (
    DeclareLaunchArgument,
    EmitEvent,
    LogInfo,
    OpaqueFunction,
    RegisterEventHandler,
)
from launch.event_handlers import OnProcessStart
from launch.events import Shutdown, matches_action
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import LifecycleNode, Node
from launch_ros.event_handlers import OnStateTransition
from launch_ros.events.lifecycle import ChangeState
from lifecycle_msgs.msg import Transition

PACKAGE = 'pkg_perception'
NODE_NAME = 'perception_node'


def _share(*parts: str) -> str:
    return str(Path(get_package_share_directory(PACKAGE), *parts))


ARGUMENTS = (
    ('config', _share('config', 'perception.yaml'), 'ROS 2 parameter file with every setting'),
    ('model_path', '', "ONNX model file; '' keeps segmentation.model_path from the config"),
    (
        'camera_namespace',
        '',
        "camera topic namespace, e.g. /camera/camera for realsense-ros 4.x; '' keeps "
        'node.camera_namespace from the config',
    ),
    ('target_frame', '', "frame of the output poses; '' keeps frames.target_frame"),
    (
        'fallback_to_geometric',
        '',
        "true: run the depth-only segmenter if the model cannot be loaded; '' keeps "
        'segmentation.fallback_to_geometric',
    ),
    ('use_sim_time', 'false', 'use /clock (true when playing a bag with --clock)'),
    ('rviz', 'false', 'start RViz with config/perception.rviz'),
    ('autostart', 'true', 'configure and activate the lifecycle node right away'),
    ('log_level', 'info', 'log level of perception_node (debug, info, warn, error)'),
)


def _is_true(context: LaunchContext, name: str) -> bool:
    return LaunchConfiguration(name).perform(context).strip().lower() in ('true', '1', 'yes')


def _launch_setup(context: LaunchContext) -> list:
    overrides = {}
    for arg, param in (
        ('model_path', 'segmentation.model_path'),
        ('camera_namespace', 'node.camera_namespace'),
        ('target_frame', 'frames.target_frame'),
    ):
        value = LaunchConfiguration(arg).perform(context).strip()
        if value:
            overrides[param] = value
    fallback = 'fallback_to_geometric'
    if LaunchConfiguration(fallback).perform(context).strip():
        overrides[f'segmentation.{fallback}'] = _is_true(context, fallback)
    sim_time = _is_true(context, 'use_sim_time')
    node = LifecycleNode(
        package=PACKAGE,
        executable='perception_node',
        name=NODE_NAME,
        namespace='',
        output='screen',
        parameters=[
            LaunchConfiguration('config').perform(context),
            {**overrides, 'use_sim_time': sim_time},
        ],
        arguments=['--ros-args', '--log-level', LaunchConfiguration('log_level')],
    )
    actions: list = [node]
    if _is_true(context, 'autostart'):
        actions += autostart(node)
    if _is_true(context, 'rviz'):
        actions.append(
            Node(
                package='rviz2',
                executable='rviz2',
                name='rviz2',
                arguments=['-d', _share('config', 'perception.rviz')],
                parameters=[{'use_sim_time': sim_time}],
                output='log',
            )
        )
    return actions


def autostart(node: LifecycleNode) -> list:
    """Configure when the process is up, activate once inactive; stop if configure fails."""

    def change(transition: int) -> EmitEvent:
        return EmitEvent(
            event=ChangeState(
                lifecycle_node_matcher=matches_action(node), transition_id=transition
            )
        )

    return [
        RegisterEventHandler(
            OnProcessStart(target_action=node, on_start=[change(Transition.TRANSITION_CONFIGURE)])
        ),
        RegisterEventHandler(
            OnStateTransition(
                target_lifecycle_node=node,
                start_state='configuring',
                goal_state='inactive',
                entities=[change(Transition.TRANSITION_ACTIVATE)],
            )
        ),
        RegisterEventHandler(
            OnStateTransition(
                target_lifecycle_node=node,
                start_state='configuring',
                goal_state='unconfigured',
                entities=[
                    LogInfo(msg=f'{NODE_NAME} failed to configure (see its log); shutting down'),
                    EmitEvent(event=Shutdown(reason=f'{NODE_NAME} failed to configure')),
                ],
            )
        ),
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
