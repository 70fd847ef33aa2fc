# Copyright 2026 The pkg_perception Authors
# SPDX-License-Identifier: Apache-2.0
"""Write simulated frames as a rosbag2 that `ros2 bag play` accepts (mcap or sqlite3)."""

from __future__ import annotations

import shutil
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
from rosbags.interfaces import (
    Qos,
    QosDurability,
    QosHistory,
    QosLiveliness,
    QosReliability,
    QosTime,
)
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.rosbag2.errors import WriterError

from pkg_perception.bag.topics import TopicMap
from pkg_perception.bag.types import DEFAULT_DISTRO, typestore
from pkg_perception.errors import BagError
from pkg_perception.frames import CameraModel
from pkg_perception.ros.conversions import model_to_camera_info, ns_to_sec_nanosec, numpy_to_image
from pkg_perception.sim.ground_truth import FrameTruth
from pkg_perception.transforms import Matrix4, TransformTree, quaternion_from_matrix

STORAGES = {'mcap': StoragePlugin.MCAP, 'sqlite3': StoragePlugin.SQLITE3}
# rosbag2 metadata version 8: read by Jazzy, and by Humble, which ignores the newer keys.
BAG_VERSION = 8

_ZERO = QosTime(sec=0, nsec=0)
SENSOR_QOS = Qos(
    QosHistory.KEEP_LAST,
    10,
    QosReliability.RELIABLE,
    QosDurability.VOLATILE,
    _ZERO,
    _ZERO,
    QosLiveliness.AUTOMATIC,
    _ZERO,
    False,
)
# /tf_static is latched: late subscribers (RViz, the node) still get it during playback.
LATCHED_QOS = Qos(
    QosHistory.KEEP_LAST,
    1,
    QosReliability.RELIABLE,
    QosDurability.TRANSIENT_LOCAL,
    _ZERO,
    _ZERO,
    QosLiveliness.AUTOMATIC,
    _ZERO,
    False,
)


def finish_bag(writer: Writer, path: Path) -> None:
    """Close a rosbags writer once (metadata.yaml is written then), as a BagError on failure."""
    if writer.storage is not None:
        try:
            writer.close()
        except WriterError as err:
            raise BagError(f'could not finish {path}: {err}') from err


def prepare_output(path: Path, *, overwrite: bool) -> None:
    """Refuse to clobber an existing bag unless asked; then clear the way."""
    if path.exists():
        if not overwrite:
            raise BagError(f'{path} already exists; choose another --out or pass --overwrite')
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()
    path.parent.mkdir(parents=True, exist_ok=True)


class SimBagWriter:
    """Writes the camera streams, /tf_static and ground truth of simulated frames.

    Use as a context manager. The bag is closed with valid metadata whatever happens inside
    the block (an error or Ctrl-C included): the frames written so far stay readable.
    """

    def __init__(
        self,
        path: Path,
        *,
        storage: str = 'mcap',
        topics: TopicMap | None = None,
        distro: str = DEFAULT_DISTRO,
        overwrite: bool = False,
    ) -> None:
        if storage not in STORAGES:
            raise BagError(f'storage {storage!r} unknown; choose {" or ".join(STORAGES)}')
        prepare_output(path, overwrite=overwrite)
        self.path = path
        self.topics = topics or TopicMap()
        self._ts = typestore(distro)
        self._writer = Writer(path, version=BAG_VERSION, storage_plugin=STORAGES[storage])
        self._conns: dict[str, Any] = {}
        self.frames_written = 0
        t = self._ts.types
        self._Header, self._Time = t['std_msgs/msg/Header'], t['builtin_interfaces/msg/Time']
        self._Image = t['sensor_msgs/msg/Image']
        self._CameraInfo, self._Roi = (
            t['sensor_msgs/msg/CameraInfo'],
            t['sensor_msgs/msg/RegionOfInterest'],
        )

    def __enter__(self) -> SimBagWriter:
        self._writer.open()
        tp, sensor = self.topics, [SENSOR_QOS]
        for topic, msgtype, qos in (
            (tp.tf_static, 'tf2_msgs/msg/TFMessage', [LATCHED_QOS]),
            (tp.color_info, 'sensor_msgs/msg/CameraInfo', sensor),
            (tp.depth_info, 'sensor_msgs/msg/CameraInfo', sensor),
            (tp.depth, 'sensor_msgs/msg/Image', sensor),
            (tp.gt_instances, 'sensor_msgs/msg/Image', sensor),
            (tp.gt_parcels, 'vision_msgs/msg/Detection3DArray', sensor),
            (tp.gt_scene, 'std_msgs/msg/String', sensor),
            (tp.color, 'sensor_msgs/msg/Image', sensor),
        ):
            self._conns[topic] = self._writer.add_connection(
                topic, msgtype, typestore=self._ts, offered_qos_profiles=qos
            )
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Finish the file and write metadata.yaml (idempotent)."""
        finish_bag(self._writer, self.path)

    def _header(self, stamp_ns: int, frame_id: str) -> Any:
        sec, nsec = ns_to_sec_nanosec(stamp_ns)
        return self._Header(stamp=self._Time(sec=sec, nanosec=nsec), frame_id=frame_id)

    def _write(self, topic: str, stamp_ns: int, msg: Any) -> None:
        conn = self._conns[topic]
        self._writer.write(conn, stamp_ns, self._ts.serialize_cdr(msg, conn.msgtype))

    def write_static_transforms(
        self, tree: TransformTree, edges: list[tuple[str, str]], stamp_ns: int
    ) -> None:
        """One latched /tf_static message holding every (parent, child) edge."""
        t = self._ts.types
        transforms = []
        for parent, child in edges:
            m = tree.lookup(parent, child)
            q = quaternion_from_matrix(m[:3, :3])
            transforms.append(
                t['geometry_msgs/msg/TransformStamped'](
                    header=self._header(stamp_ns, parent),
                    child_frame_id=child,
                    transform=t['geometry_msgs/msg/Transform'](
                        translation=t['geometry_msgs/msg/Vector3'](
                            x=m[0, 3], y=m[1, 3], z=m[2, 3]
                        ),
                        rotation=t['geometry_msgs/msg/Quaternion'](x=q[0], y=q[1], z=q[2], w=q[3]),
                    ),
                )
            )
        self._write(
            self.topics.tf_static, stamp_ns, t['tf2_msgs/msg/TFMessage'](transforms=transforms)
        )

    def write_frame(
        self,
        *,
        stamp_ns: int,
        camera: CameraModel,
        color: np.ndarray,
        depth_mm: np.ndarray,
        instance_ids: np.ndarray | None = None,
        truth: FrameTruth | None = None,
    ) -> None:
        """One camera frame (and its ground truth); every message carries the colour stamp."""
        tp = self.topics
        header = self._header(stamp_ns, camera.frame_id)
        info = model_to_camera_info(self._CameraInfo, self._Roi, header, camera)
        self._write(tp.color_info, stamp_ns, info)
        self._write(tp.depth_info, stamp_ns, info)
        self._write(tp.depth, stamp_ns, numpy_to_image(self._Image, header, depth_mm, '16UC1'))
        if instance_ids is not None:
            self._write(
                tp.gt_instances,
                stamp_ns,
                numpy_to_image(self._Image, header, instance_ids, '16UC1'),
            )
        if truth is not None:
            self._write(tp.gt_parcels, stamp_ns, self._detections(truth))
            self._write(
                tp.gt_scene, stamp_ns, self._ts.types['std_msgs/msg/String'](data=truth.to_json())
            )
        self._write(tp.color, stamp_ns, numpy_to_image(self._Image, header, color, 'rgb8'))
        self.frames_written += 1

    def _detections(self, truth: FrameTruth) -> Any:
        """Ground-truth parcels as vision_msgs/Detection3DArray in the conveyor frame."""
        t = self._ts.types
        header = self._header(truth.stamp_ns, truth.frame_id)
        dets = []
        for p in truth.parcels:
            pose = _pose(t, p.pose)
            dets.append(
                t['vision_msgs/msg/Detection3D'](
                    header=header,
                    results=[
                        t['vision_msgs/msg/ObjectHypothesisWithPose'](
                            hypothesis=t['vision_msgs/msg/ObjectHypothesis'](
                                class_id=p.parcel_class.label, score=1.0
                            ),
                            pose=t['geometry_msgs/msg/PoseWithCovariance'](
                                pose=pose, covariance=np.zeros(36)
                            ),
                        )
                    ],
                    bbox=t['vision_msgs/msg/BoundingBox3D'](
                        center=pose,
                        size=t['geometry_msgs/msg/Vector3'](x=p.size[0], y=p.size[1], z=p.size[2]),
                    ),
                    id=str(p.parcel_id),
                )
            )
        return t['vision_msgs/msg/Detection3DArray'](header=header, detections=dets)


def _pose(t: Any, m: Matrix4) -> Any:
    q = quaternion_from_matrix(m[:3, :3])
    return t['geometry_msgs/msg/Pose'](
        position=t['geometry_msgs/msg/Point'](x=m[0, 3], y=m[1, 3], z=m[2, 3]),
        orientation=t['geometry_msgs/msg/Quaternion'](x=q[0], y=q[1], z=q[2], w=q[3]),
    )
