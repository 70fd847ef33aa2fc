# Copyright 2026 The pkg_perception Authors
# SPDX-License-Identifier: Apache-2.0
"""Message definitions for reading and writing bags, from `rosbags`' built-in typestores.

vision_msgs is not among rosbags' built-in types. Its definitions below are those of
vision_msgs 4.1 (ros-perception/vision_msgs, the ros2 branch), the version Humble and Jazzy
ship; the field layout is identical in both distributions.
"""

from __future__ import annotations

from functools import cache

from rosbags.typesys import Stores, get_types_from_msg, get_typestore
from rosbags.typesys.store import Typestore

from pkg_perception.errors import ConfigError

VISION_MSGS: dict[str, str] = {
    'vision_msgs/msg/ObjectHypothesis': 'string class_id\nfloat64 score\n',
    'vision_msgs/msg/ObjectHypothesisWithPose': (
        'vision_msgs/ObjectHypothesis hypothesis\ngeometry_msgs/PoseWithCovariance pose\n'
    ),
    'vision_msgs/msg/BoundingBox3D': 'geometry_msgs/Pose center\ngeometry_msgs/Vector3 size\n',
    'vision_msgs/msg/Detection3D': (
        'std_msgs/Header header\n'
        'vision_msgs/ObjectHypothesisWithPose[] results\n'
        'vision_msgs/BoundingBox3D bbox\n'
        'string id\n'
    ),
    'vision_msgs/msg/Detection3DArray': (
        'std_msgs/Header header\nvision_msgs/Detection3D[] detections\n'
    ),
}

DISTROS = {'humble': Stores.ROS2_HUMBLE, 'jazzy': Stores.ROS2_JAZZY}
DEFAULT_DISTRO = 'jazzy'


@cache
def typestore(distro: str = DEFAULT_DISTRO) -> Typestore:
    """The distribution's message types plus vision_msgs."""
    if distro not in DISTROS:
        raise ConfigError(f'ROS distribution {distro!r} unknown; choose {", ".join(DISTROS)}')
    store = get_typestore(DISTROS[distro])
    types = {}
    for name, text in VISION_MSGS.items():
        types.update(get_types_from_msg(text, name))
    store.register(types)
    return store
