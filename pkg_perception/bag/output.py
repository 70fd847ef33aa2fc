# Copyright 2026 The pkg_perception Authors
# SPDX-License-Identifier: Apache-2.0
"""The bag a replay writes: the input's messages unchanged, plus the node's outputs.

Input messages are copied as raw CDR bytes (no decoding, so any message type passes,
including ones this package does not know). Playing the result in RViz or Foxglove shows
the camera streams and the perception outputs together, exactly as in the cell.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Any

from rosbags.rosbag2 import Reader, Writer
from rosbags.rosbag2.errors import ReaderError, WriterError

from pkg_perception.bag.types import DEFAULT_DISTRO, typestore
from pkg_perception.bag.writer import BAG_VERSION, SENSOR_QOS, STORAGES, finish_bag
from pkg_perception.errors import BagError

# Output topic (relative to the node's namespace) -> message type, as the node publishes.
OUTPUT_TYPES = {
    'detections': 'vision_msgs/msg/Detection3DArray',
    'grasps': 'geometry_msgs/msg/PoseArray',
    'markers': 'visualization_msgs/msg/MarkerArray',
    'overlay': 'sensor_msgs/msg/Image',
    'points': 'sensor_msgs/msg/PointCloud2',
}


class ReplayBagWriter:
    """Use as a context manager; the bag is closed valid whatever happens in the block.

    Args:
        path: bag directory to create (must not exist).
        namespace: the node's namespace; outputs go to `{namespace}/{name}`.
        storage: 'mcap' or 'sqlite3'.
    """

    def __init__(
        self,
        path: Path,
        *,
        namespace: str,
        storage: str = 'mcap',
        distro: str = DEFAULT_DISTRO,
    ) -> None:
        if storage not in STORAGES:
            raise BagError(f'storage {storage!r} unknown; choose {" or ".join(STORAGES)}')
        self.path = path
        self.namespace = '/' + namespace.strip('/') if namespace.strip('/') else ''
        self.store = typestore(distro)
        self._writer = Writer(path, version=BAG_VERSION, storage_plugin=STORAGES[storage])
        self._copied: dict[int, Any] = {}  # input connection id -> output connection
        self._by_key: dict[tuple[str, str], Any] = {}
        self._outputs: dict[str, Any] = {}
        self.skipped_topics: list[str] = []

    def __enter__(self) -> ReplayBagWriter:
        self._writer.open()
        for name, msgtype in OUTPUT_TYPES.items():
            self._outputs[name] = self._writer.add_connection(
                self.topic(name),
                msgtype,
                typestore=self.store,
                offered_qos_profiles=[SENSOR_QOS],
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

    def topic(self, name: str) -> str:
        """Full name of an output topic, e.g. '/perception_node/detections'."""
        return f'{self.namespace}/{name}'

    def write_output(self, name: str, stamp_ns: int, msg: Any) -> None:
        """Serialize and write one output message; `stamp_ns` is also its log time."""
        conn = self._outputs[name]
        self._writer.write(conn, stamp_ns, self.store.serialize_cdr(msg, conn.msgtype))

    def copy(self, conn: Any, log_time: int, raw: bytes) -> None:
        """Write one input message unchanged, on a connection like the input's."""
        out = self._copied.get(conn.id, False)
        if out is False:
            out = self._connection_like(conn)
            self._copied[conn.id] = out
        if out is not None:
            self._writer.write(out, log_time, raw)

    def _connection_like(self, conn: Any) -> Any:
        key = (conn.topic, conn.msgtype)
        if key in self._by_key:
            return self._by_key[key]
        msgdef = getattr(conn.msgdef, 'data', '') or ''
        digest = conn.digest if str(conn.digest).startswith('RIHS01_') else None
        try:
            if msgdef and digest:
                out = self._writer.add_connection(
                    conn.topic,
                    conn.msgtype,
                    msgdef=msgdef,
                    rihs01=digest,
                    serialization_format=conn.ext.serialization_format,
                    offered_qos_profiles=conn.ext.offered_qos_profiles,
                )
            else:  # older bags store no definition: take it from the distribution's types
                out = self._writer.add_connection(
                    conn.topic,
                    conn.msgtype,
                    typestore=self.store,
                    serialization_format=conn.ext.serialization_format,
                    offered_qos_profiles=conn.ext.offered_qos_profiles,
                )
        except (WriterError, KeyError, ValueError, TypeError):
            out = None  # a type nobody can describe: left out, and said so
            self.skipped_topics.append(conn.topic)
        self._by_key[key] = out
        return out


class InputCopier:
    """Streams every message of the input bag into a ReplayBagWriter, in log-time order.

    `advance(t)` copies everything logged up to `t`, so inputs and outputs interleave in
    the output file as they did in the cell. Damage while copying stops the copy (the
    frame reader reports it too); `error` says what happened.
    """

    def __init__(self, bag: Path, out: ReplayBagWriter) -> None:
        self.out = out
        self.error = ''
        self.copied = 0
        self._reader = Reader(bag)
        self._reader.open()
        self._it: Iterator[tuple[Any, int, bytes]] | None = self._reader.messages()
        self._next: tuple[Any, int, bytes] | None = None
        self._pull()

    def _pull(self) -> None:
        self._next = None
        if self._it is None:
            return
        try:
            self._next = next(self._it)
        except StopIteration:
            self._it = None
        except (ReaderError, ValueError, KeyError, AssertionError, EOFError, OSError) as err:
            self._it = None
            self.error = f'copying input messages stopped after {self.copied}: {err}'

    def advance(self, until_ns: int | None = None) -> None:
        """Copy every input message logged at or before `until_ns` (None: all the rest)."""
        while self._next is not None and (until_ns is None or self._next[1] <= until_ns):
            conn, log_time, raw = self._next
            self.out.copy(conn, log_time, raw)
            self.copied += 1
            self._pull()

    def close(self) -> None:
        if self._reader.is_open:
            self._reader.close()

    def __enter__(self) -> InputCopier:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
