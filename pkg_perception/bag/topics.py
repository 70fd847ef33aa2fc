# Copyright 2026 The pkg_perception Authors
# SPDX-License-Identifier: Apache-2.0
"""Topic names: realsense2_camera's defaults with depth alignment on, plus ground truth."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TopicMap:
    """Where each stream lives in a bag; remap any of them for bags from other drivers."""

    color: str = '/camera/color/image_raw'
    color_info: str = '/camera/color/camera_info'
    depth: str = '/camera/aligned_depth_to_color/image_raw'
    depth_info: str = '/camera/aligned_depth_to_color/camera_info'
    tf_static: str = '/tf_static'
    gt_instances: str = '/ground_truth/instances'
    gt_parcels: str = '/ground_truth/parcels'
    gt_scene: str = '/ground_truth/scene'

    @classmethod
    def for_camera(cls, namespace: str = '/camera') -> TopicMap:
        """Camera topics under `namespace` (e.g. '/camera/camera' for realsense-ros 4.x)."""
        ns = '/' + namespace.strip('/') if namespace.strip('/') else ''
        return cls(
            color=f'{ns}/color/image_raw',
            color_info=f'{ns}/color/camera_info',
            depth=f'{ns}/aligned_depth_to_color/image_raw',
            depth_info=f'{ns}/aligned_depth_to_color/camera_info',
        )

    @property
    def required(self) -> tuple[str, ...]:
        """Topics a replay cannot do without."""
        return (self.color, self.depth, self.color_info)

    @property
    def ground_truth(self) -> tuple[str, ...]:
        """Topics present only in simulated bags."""
        return (self.gt_instances, self.gt_parcels, self.gt_scene)
