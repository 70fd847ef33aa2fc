# Copyright 2026 The pkg_perception Authors
# SPDX-License-Identifier: Apache-2.0
"""Read synchronized RGB-D frames (and ground truth, when present) from a rosbag2.

One reader serves replay, evaluation and training, so all three see frames the same way.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from rosbags.rosbag2 import Reader
from rosbags.rosbag2.errors import ReaderError

from pkg_perception.bag.topics import TopicMap
from pkg_perception.bag.types import DEFAULT_DISTRO, typestore
from pkg_perception.errors import BagError, InputError
from pkg_perception.frames import CameraModel, RGBDFrame
from pkg_perception.ros.conversions import (
    camera_info_to_model,
    image_to_depth_m,
    image_to_numpy,
    image_to_rgb,
    stamp_to_ns,
)
from pkg_perception.sim.ground_truth import FrameTruth, GroundTruth
from pkg_perception.transforms import TransformTree, make_transform, matrix_from_quaternion

REMAP_FLAGS = '--color-topic, --depth-topic and --info-topic'


class BagFrameReader:
    """Iterate a bag's colour + aligned depth + camera_info as RGBDFrame objects.

    Colour and depth are paired by header stamp within `slop_s` (approximate-time, like
    message_filters); each frame carries the colour stamp, the latest camera_info, the bag's
    /tf_static and, for simulated bags, a GroundTruth.
    """

    def __init__(
        self,
        path: Path | str,
        *,
        topics: TopicMap | None = None,
        slop_s: float = 0.02,
        distro: str = DEFAULT_DISTRO,
    ) -> None:
        self.path = Path(path)
        self.topics = topics or TopicMap()
        self.slop_ns = int(slop_s * 1e9)
        self._ts = typestore(distro)
        if not self.path.exists():
            raise BagError(f'bag {self.path} does not exist; check the path')
        try:
            self._reader = Reader(self.path)
            self._reader.open()
        except (ReaderError, OSError, ValueError, KeyError) as err:
            raise BagError(
                f'cannot open bag {self.path}: {err}. Is it a rosbag2 directory with '
                'metadata.yaml (mcap or sqlite3)? A bag whose recording was cut off can be '
                'repaired with `ros2 bag reindex`.'
            ) from err
        available = {c.topic: c.msgtype for c in self._reader.connections}
        missing = [t for t in self.topics.required if t not in available]
        if missing:
            self._reader.close()
            have = '\n  '.join(f'{t} ({m})' for t, m in sorted(available.items())) or '(none)'
            raise BagError(
                f'bag {self.path} lacks topic(s) {", ".join(missing)}. It has:\n  {have}\n'
                f'Remap with {REMAP_FLAGS} (or --camera-ns).'
            )
        self.has_ground_truth = all(
            t in available for t in (self.topics.gt_scene, self.topics.gt_instances)
        )
        self.frames_read = 0

    def close(self) -> None:
        """Release the file."""
        if self._reader.is_open:
            self._reader.close()

    def __enter__(self) -> BagFrameReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def message_counts(self) -> dict[str, int]:
        """Messages per topic, from the bag's index."""
        return {c.topic: c.msgcount for c in self._reader.connections}

    def _connections(self, topics: tuple[str, ...]) -> list[Any]:
        return [c for c in self._reader.connections if c.topic in topics]

    def transforms(self) -> TransformTree:
        """Every transform on /tf_static (empty tree when the bag has none)."""
        tree = TransformTree()
        conns = self._connections((self.topics.tf_static,))
        if not conns:  # rosbags reads every topic when given no connection
            return tree
        for conn, _, raw in self._reader.messages(conns):
            msg = self._ts.deserialize_cdr(raw, conn.msgtype)
            for tf in msg.transforms:
                tr, q = tf.transform.translation, tf.transform.rotation
                rot = matrix_from_quaternion([q.x, q.y, q.z, q.w])
                tree.add(
                    tf.header.frame_id, tf.child_frame_id, make_transform(rot, [tr.x, tr.y, tr.z])
                )
        return tree

    def frames(self) -> Iterator[RGBDFrame]:
        """Synchronized frames in bag order.

        Raises:
            BagError: after yielding every frame before the damage, if the bag is damaged.
        """
        tp = self.topics
        tree = self.transforms()
        gt = (tp.gt_scene, tp.gt_instances) if self.has_ground_truth else ()
        wanted = (tp.color, tp.depth, tp.color_info, *gt)
        colors: deque[tuple[int, np.ndarray]] = deque()
        depths: deque[tuple[int, np.ndarray]] = deque()
        truths: dict[int, FrameTruth] = {}
        labels: dict[int, np.ndarray] = {}
        pending: deque[tuple[int, np.ndarray, np.ndarray]] = deque()
        camera: CameraModel | None = None
        latest_gt = -1
        try:
            for conn, _, raw in self._reader.messages(self._connections(wanted)):
                msg = self._ts.deserialize_cdr(raw, conn.msgtype)
                if conn.topic == tp.color_info:
                    camera = camera_info_to_model(msg)
                    continue
                if conn.topic == tp.gt_scene:
                    truth = FrameTruth.from_json(msg.data)
                    truths[truth.stamp_ns] = truth
                    latest_gt = max(latest_gt, truth.stamp_ns)
                    continue
                stamp = stamp_to_ns(msg.header.stamp)
                if conn.topic == tp.gt_instances:
                    labels[stamp] = image_to_numpy(msg)
                elif conn.topic == tp.color:
                    colors.append((stamp, image_to_rgb(msg)))
                elif conn.topic == tp.depth:
                    depths.append((stamp, image_to_depth_m(msg)))
                pending.extend(self._pair(colors, depths))
                while (
                    pending
                    and camera is not None
                    and (not self.has_ground_truth or pending[0][0] <= latest_gt)
                ):
                    yield self._frame(pending.popleft(), camera, tree, truths, labels)
            while pending and camera is not None:
                yield self._frame(pending.popleft(), camera, tree, truths, labels)
        except (ReaderError, InputError, ValueError, KeyError, AssertionError, EOFError) as err:
            raise BagError(
                f'bag {self.path} is damaged after {self.frames_read} frame(s): {err}'
            ) from err
        if camera is None and self.frames_read == 0:
            raise BagError(
                f'bag {self.path} has no message on {tp.color_info}; '
                'record the colour camera_info with the images'
            )

    def _pair(
        self, colors: deque[tuple[int, np.ndarray]], depths: deque[tuple[int, np.ndarray]]
    ) -> list[tuple[int, np.ndarray, np.ndarray]]:
        """Match colour and depth stamps within the slop; drop what can no longer match."""
        out = []
        while colors and depths:
            (cs, color), (ds, depth) = colors[0], depths[0]
            if abs(cs - ds) <= self.slop_ns:
                out.append((cs, color, depth))
                colors.popleft()
                depths.popleft()
            elif cs < ds:
                colors.popleft()
            else:
                depths.popleft()
        return out

    def _frame(
        self,
        item: tuple[int, np.ndarray, np.ndarray],
        camera: CameraModel,
        tree: TransformTree,
        truths: dict[int, FrameTruth],
        labels: dict[int, np.ndarray],
    ) -> RGBDFrame:
        stamp, color, depth = item
        gt = None
        truth, ids = truths.pop(stamp, None), labels.pop(stamp, None)
        if truth is not None and ids is not None:
            gt = GroundTruth(truth, ids)
        self.frames_read += 1
        return RGBDFrame(
            color=color,
            depth=depth,
            camera=camera,
            stamp_ns=stamp,
            transforms=tree,
            ground_truth=gt,
        )
