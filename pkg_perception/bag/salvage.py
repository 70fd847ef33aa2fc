# Copyright 2026 The pkg_perception Authors
# SPDX-License-Identifier: Apache-2.0
"""Recover the readable start of a damaged rosbag2 into a new, valid bag.

A recording cut off by a crash or a full disk leaves an mcap file without its summary (or
a sqlite3 file with missing pages) and often no metadata.yaml; `rosbags` then refuses to
open it. MCAP and sqlite3 both store messages in write order, so scanning from the start
and stopping at the first damaged record keeps every message before the damage.
"""

from __future__ import annotations

import sqlite3
import struct
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from typing import Any, BinaryIO

from rosbags.interfaces import Qos
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_types_from_msg, get_typestore

from pkg_perception.bag.types import DEFAULT_DISTRO, typestore
from pkg_perception.errors import BagError

MCAP_MAGIC = b'\x89MCAP0\r\n'
_SCHEMA, _CHANNEL, _MESSAGE, _CHUNK, _DATA_END = 0x03, 0x04, 0x05, 0x06, 0x0F


@dataclass(frozen=True)
class SalvageResult:
    """What was recovered: the new bag, how many messages, and where the damage is."""

    path: Path
    messages: int
    damage: str  # one sentence naming the file, the offset and what was wrong there


@dataclass(frozen=True)
class _Topic:
    topic: str
    msgtype: str
    msgdef: str
    qos: list[Qos]


def _qos(text: str | None) -> list[Qos]:
    """QoS profiles from their YAML text; none when unreadable (playback then uses defaults)."""
    if not text:
        return []
    try:
        from rosbags.rosbag2.metadata import parse_qos

        return list(parse_qos(text))
    except Exception:
        return []


class _DamageError(Exception):
    """A record that cannot be read; carries the reason."""


def storage_files(path: Path) -> list[Path]:
    """The .mcap or .db3 files of a bag directory (or the file itself), in name order."""
    if path.is_file():
        return [path]
    files = sorted(path.glob('*.mcap')) or sorted(path.glob('*.db3'))
    if not files:
        raise BagError(f'{path} holds no .mcap or .db3 file: nothing to recover')
    return files


def salvage_bag(src: Path, dst: Path, *, distro: str = DEFAULT_DISTRO) -> SalvageResult:
    """Copy every message readable before the first damage of `src` into a new bag `dst`.

    Messages stream straight into `dst` (nothing is held in memory), which is closed valid.

    Raises:
        BagError: when not even the start of the file can be read.
    """
    files = storage_files(src)
    topics: dict[int, _Topic] = {}
    damage = ''
    written = 0
    with _LazyWriter(dst, topics, typestore(distro)) as out:
        for f in files:
            reader = _mcap_records if f.suffix == '.mcap' else _sqlite_records
            topics.clear()
            out.conns.clear()
            try:
                for key, stamp, data in reader(f, topics):
                    written += out.write(key, stamp, data)
            except _DamageError as err:
                damage = f'{f.name}: {err}'
                break
    if not damage:
        damage = 'no damaged record found, but the bag index or metadata.yaml was unreadable'
    if not written:
        raise BagError(f'bag {src} is damaged ({damage}) and holds no readable message')
    return SalvageResult(dst, written, damage)


class _LazyWriter:
    """Adds a connection when its first message arrives (channels precede their messages)."""

    def __init__(self, dst: Path, topics: dict[int, _Topic], known: Any) -> None:
        self.topics, self.known = topics, known
        self.writer = Writer(dst, version=8, storage_plugin=StoragePlugin.MCAP)
        self.conns: dict[int, Any] = {}
        self.by_name: dict[tuple[str, str], Any] = {}

    def __enter__(self) -> _LazyWriter:
        self.writer.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.writer.close()

    def write(self, key: int, stamp: int, data: bytes) -> int:
        if key not in self.conns:
            t = self.topics.get(key)
            conn = None
            if t is not None:
                conn = self.by_name.get((t.topic, t.msgtype))
                if conn is None:
                    try:
                        conn = self.writer.add_connection(
                            t.topic,
                            t.msgtype,
                            msgdef=t.msgdef or _msgdef(t.msgtype, self.known),
                            rihs01=_rihs01(t.msgtype, t.msgdef, self.known),
                            offered_qos_profiles=t.qos,
                        )
                    except Exception:
                        conn = None  # a type we cannot describe is left out
                    self.by_name[(t.topic, t.msgtype)] = conn
            self.conns[key] = conn
        conn = self.conns[key]
        if conn is None:
            return 0
        self.writer.write(conn, stamp, data)
        return 1


def _msgdef(msgtype: str, known: Any) -> str:
    return str(known.generate_msgdef(msgtype, ros_version=2)[0])


def _rihs01(msgtype: str, msgdef: str, known: Any) -> str:
    if msgtype in known.types or not msgdef:
        return str(known.hash_rihs01(msgtype))
    store = get_typestore(Stores.EMPTY)
    store.register(get_types_from_msg(msgdef, msgtype))
    return str(store.hash_rihs01(msgtype))


# --- mcap --------------------------------------------------------------------------------


def _read(bio: BinaryIO, size: int, what: str) -> bytes:
    pos = bio.tell()
    data = bio.read(size)
    if len(data) != size:
        raise _DamageError(f'{what} at byte {pos} is cut off ({len(data)} of {size} bytes)')
    return data


def _string(bio: BinaryIO) -> str:
    (n,) = struct.unpack('<I', _read(bio, 4, 'string length'))
    return _read(bio, n, 'string').decode('utf-8', errors='replace')


def _decompress(data: bytes, compression: str, size: int) -> bytes:
    if compression == '':
        return data
    if compression == 'lz4':
        import lz4.frame

        return bytes(lz4.frame.decompress(data))
    if compression == 'zstd':
        try:
            import zstandard

            return bytes(zstandard.ZstdDecompressor().decompress(data, max_output_size=size))
        except ImportError:
            from compression import zstd  # type: ignore[import-not-found]  # Python 3.14

            return bytes(zstd.decompress(data))
    raise _DamageError(f'unknown chunk compression {compression!r}')


def _mcap_records(path: Path, topics: dict[int, _Topic]) -> Iterator[tuple[int, int, bytes]]:
    """(channel id, log time, data) of every message, in file order, until the damage."""
    schemas: dict[int, tuple[str, str]] = {}
    with path.open('rb') as f:
        if f.read(8) != MCAP_MAGIC:
            raise _DamageError('does not start with the MCAP magic bytes')
        yield from _mcap_stream(f, schemas, topics, nested=False)


def _mcap_stream(
    bio: BinaryIO, schemas: dict[int, tuple[str, str]], topics: dict[int, _Topic], *, nested: bool
) -> Iterator[tuple[int, int, bytes]]:
    import zlib

    while True:
        pos = bio.tell()
        head = bio.read(9)
        if not head and nested:
            return
        if len(head) < 9:
            raise _DamageError(f'file ends inside a record header at byte {pos}')
        op, size = head[0], struct.unpack('<Q', head[1:])[0]
        if op == _DATA_END or (op == 0x02 and not nested):
            return
        body = bio.read(size)
        if len(body) < size:
            if op == _CHUNK and not nested:
                yield from _partial_chunk(body, schemas, topics)
            raise _DamageError(
                f'record 0x{op:02x} at byte {pos} is cut off ({len(body)} of {size} bytes)'
            )
        rec = BytesIO(body)
        if op == _SCHEMA:
            (sid,) = struct.unpack('<H', _read(rec, 2, 'schema id'))
            name, _encoding = _string(rec), _string(rec)
            schemas[sid] = (name, _string(rec))
        elif op == _CHANNEL:
            cid, sid = struct.unpack('<HH', _read(rec, 4, 'channel ids'))
            topic, _encoding = _string(rec), _string(rec)
            meta = _metadata(rec)
            name, msgdef = schemas.get(sid, ('', ''))
            if name:
                topics[cid] = _Topic(topic, name, msgdef, _qos(meta.get('offered_qos_profiles')))
        elif op == _MESSAGE:
            cid, _seq, log_time, _pub = struct.unpack('<HIQQ', _read(rec, 22, 'message header'))
            yield cid, log_time, rec.read()
        elif op == _CHUNK and not nested:
            _start, _end, raw_size, crc = struct.unpack('<QQQI', _read(rec, 28, 'chunk header'))
            compression = _string(rec)
            (n,) = struct.unpack('<Q', _read(rec, 8, 'chunk length'))
            try:
                raw = _decompress(_read(rec, n, 'chunk data'), compression, raw_size)
            except _DamageError:
                raise
            except Exception as err:
                raise _DamageError(f'chunk at byte {pos} does not decompress: {err}') from None
            if len(raw) != raw_size or (crc and zlib.crc32(raw) != crc):
                raise _DamageError(f'chunk at byte {pos} fails its size or CRC check')
            yield from _mcap_stream(BytesIO(raw), schemas, topics, nested=True)


def _partial_chunk(
    body: bytes, schemas: dict[int, tuple[str, str]], topics: dict[int, _Topic]
) -> Iterator[tuple[int, int, bytes]]:
    """The whole records of a cut-off chunk; only uncompressed chunks can be read so."""
    rec = BytesIO(body)
    try:
        _read(rec, 28, 'chunk header')
        if _string(rec) != '':
            return
        _read(rec, 8, 'chunk length')
    except _DamageError:
        return
    try:
        yield from _mcap_stream(rec, schemas, topics, nested=True)
    except _DamageError:
        return


def _metadata(rec: BinaryIO) -> dict[str, str]:
    (n,) = struct.unpack('<I', _read(rec, 4, 'metadata length'))
    sub = BytesIO(_read(rec, n, 'metadata'))
    out = {}
    while sub.tell() < n:
        key = _string(sub)
        out[key] = _string(sub)
    return out


# --- sqlite3 -----------------------------------------------------------------------------


def _sqlite_records(path: Path, topics: dict[int, _Topic]) -> Iterator[tuple[int, int, bytes]]:
    """(topic id, time, data) in insertion order, until sqlite reports the damage.

    A cut-off file still claims its full page count in the header, and sqlite then calls
    every page malformed; a copy with the count set to what is there reads up to the cut.
    """
    with tempfile.TemporaryDirectory(prefix='salvage-') as tmp:
        copy = Path(tmp) / path.name
        _sqlite_trimmed_copy(path, copy)
        try:
            db = sqlite3.connect(f'file:{copy}?mode=ro', uri=True)
        except sqlite3.Error as err:
            raise _DamageError(f'cannot open: {err}') from None
        try:
            yield from _sqlite_rows(db, topics)
        finally:
            db.close()


def _sqlite_trimmed_copy(src: Path, dst: Path) -> None:
    size = src.stat().st_size
    with src.open('rb') as f:
        header = bytearray(f.read(100))
    if len(header) < 100 or not header.startswith(b'SQLite format 3\0'):
        raise _DamageError('is not an sqlite3 database (bad header)')
    (page,) = struct.unpack('>H', header[16:18])
    page = 65536 if page == 1 else page
    pages = size // page
    if pages == 0:
        raise _DamageError(f'holds {size} bytes, less than one {page}-byte page')
    with src.open('rb') as f, dst.open('wb') as out:
        remaining = pages * page
        while remaining:
            block = f.read(min(remaining, 1 << 24))
            out.write(block)
            remaining -= len(block)
        out.seek(28)
        out.write(struct.pack('>I', pages))


def _sqlite_rows(
    db: sqlite3.Connection, topics: dict[int, _Topic]
) -> Iterator[tuple[int, int, bytes]]:
    try:
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        defs: dict[str, str] = {}
        if 'message_definitions' in tables:
            defs = dict(
                db.execute(
                    'SELECT topic_type, encoded_message_definition FROM message_definitions'
                )
            )
        for tid, name, msgtype, qos in db.execute(
            'SELECT id, name, type, offered_qos_profiles FROM topics'
        ):
            topics[tid] = _Topic(name, msgtype, defs.get(msgtype, ''), _qos(qos))
    except sqlite3.Error as err:
        raise _DamageError(f'topic table unreadable: {err}') from None
    cursor = db.execute('SELECT topic_id, timestamp, data FROM messages ORDER BY id')
    count = 0
    while True:
        try:
            row = cursor.fetchone()
        except sqlite3.Error as err:
            raise _DamageError(f'message table unreadable after {count} messages: {err}') from None
        if row is None:
            return
        count += 1
        yield int(row[0]), int(row[1]), bytes(row[2])
