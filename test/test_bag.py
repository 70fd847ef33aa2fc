# Copyright 2026 The pkg_perception Authors
# SPDX-License-Identifier: Apache-2.0
"""The simulated bag reads back with rosbags, with our reader, and with an independent decoder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import FRAMES, SEED, SMALL
from mcap.reader import make_reader
from mcap_ros2.decoder import DecoderFactory
from rosbags.rosbag2 import Reader

from pkg_perception.bag.reader import BagFrameReader
from pkg_perception.bag.topics import TopicMap
from pkg_perception.errors import BagError
from pkg_perception.processes import worker_context
from pkg_perception.sim.record import record_bag
from pkg_perception.sim.simulator import ConveyorSimulator

TOPICS = TopicMap()
EXPECTED_TYPES = {
    TOPICS.color: 'sensor_msgs/msg/Image',
    TOPICS.color_info: 'sensor_msgs/msg/CameraInfo',
    TOPICS.depth: 'sensor_msgs/msg/Image',
    TOPICS.depth_info: 'sensor_msgs/msg/CameraInfo',
    TOPICS.tf_static: 'tf2_msgs/msg/TFMessage',
    TOPICS.gt_instances: 'sensor_msgs/msg/Image',
    TOPICS.gt_parcels: 'vision_msgs/msg/Detection3DArray',
    TOPICS.gt_scene: 'std_msgs/msg/String',
}
STAMP0 = SMALL.start_time_ns
PERIOD = round(1e9 / SMALL.fps)


def _mcap_file(bag: Path) -> Path:
    files = list(bag.glob('*.mcap'))
    assert len(files) == 1, files
    return files[0]


def test_metadata_lists_every_topic_with_counts(small_bag_path: Path) -> None:
    meta = yaml.safe_load((small_bag_path / 'metadata.yaml').read_text())[
        'rosbag2_bagfile_information'
    ]
    assert meta['storage_identifier'] == 'mcap'
    assert meta['version'] == 8
    counts = {
        t['topic_metadata']['name']: t['message_count'] for t in meta['topics_with_message_count']
    }
    assert counts == {t: (1 if t == TOPICS.tf_static else FRAMES) for t in EXPECTED_TYPES}
    tf = next(
        t for t in meta['topics_with_message_count'] if t['topic_metadata']['name'] == '/tf_static'
    )
    assert (
        'durability: 1' in str(tf['topic_metadata']['offered_qos_profiles'])
        or 'transient_local' in str(tf['topic_metadata']['offered_qos_profiles']).lower()
    )


def test_rosbags_reader_sees_types_encodings_stamps(small_bag_path: Path) -> None:
    from pkg_perception.bag.types import typestore

    ts = typestore()
    stamps: dict[str, list[int]] = {}
    with Reader(small_bag_path) as reader:
        assert {c.topic: c.msgtype for c in reader.connections} == EXPECTED_TYPES
        for conn, _, raw in reader.messages():
            msg = ts.deserialize_cdr(raw, conn.msgtype)
            if conn.topic == TOPICS.tf_static:
                frames = {(t.header.frame_id, t.child_frame_id) for t in msg.transforms}
                assert frames == {
                    ('base_link', 'conveyor'),
                    ('conveyor', 'camera_color_optical_frame'),
                }
                continue
            if conn.topic == TOPICS.gt_scene:
                continue
            stamps.setdefault(conn.topic, []).append(
                msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec
            )
            if conn.topic == TOPICS.color:
                assert (msg.encoding, msg.width, msg.height, msg.step) == ('rgb8', 320, 240, 960)
                assert msg.header.frame_id == 'camera_color_optical_frame'
            if conn.topic in (TOPICS.depth, TOPICS.gt_instances):
                assert (msg.encoding, msg.step) == ('16UC1', 640)
            if conn.topic == TOPICS.gt_parcels:
                assert msg.header.frame_id == 'conveyor'
    want = [STAMP0 + round(k * 1e9 / SMALL.fps) for k in range(FRAMES)]
    for topic, got in stamps.items():
        assert got == want, topic


def test_independent_mcap_decoder_agrees(small_bag_path: Path) -> None:
    seen: dict[str, int] = {}
    with _mcap_file(small_bag_path).open('rb') as f:
        reader = make_reader(f, decoder_factories=[DecoderFactory()])
        for schema, channel, message, msg in reader.iter_decoded_messages():
            seen[channel.topic] = seen.get(channel.topic, 0) + 1
            assert schema.encoding == 'ros2msg'
            assert schema.name == EXPECTED_TYPES[channel.topic]
            if channel.topic == TOPICS.color:
                assert msg.encoding == 'rgb8'
                stamp = msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec
                assert stamp == message.log_time
                assert len(msg.data) == 320 * 240 * 3
            if channel.topic == TOPICS.depth:
                assert msg.encoding == '16UC1'
                depth = np.frombuffer(bytes(msg.data), '<u2').reshape(240, 320)
                assert float(np.mean(depth == 0)) > 0.05 or depth.max() > 0
            if channel.topic == TOPICS.gt_parcels:
                assert msg.header.frame_id == 'conveyor'
                for det in msg.detections:
                    assert det.results[0].hypothesis.class_id in {
                        'box',
                        'polybag',
                        'mailer',
                        'envelope',
                    }
                    assert det.bbox.size.x > 0.0 and det.id
            if channel.topic == TOPICS.color_info:
                assert msg.distortion_model == 'plumb_bob' and len(msg.k) == 9
    assert seen == {t: (1 if t == TOPICS.tf_static else FRAMES) for t in EXPECTED_TYPES}


def test_frame_reader_pairs_frames_with_truth(small_bag_path: Path) -> None:
    sim = ConveyorSimulator(SMALL, SEED)
    with BagFrameReader(small_bag_path) as reader:
        assert reader.has_ground_truth
        frames = list(reader.frames())
        tree = reader.transforms()
    assert [f.stamp_ns for f in frames] == [
        STAMP0 + round(k * 1e9 / SMALL.fps) for k in range(FRAMES)
    ]
    np.testing.assert_allclose(
        tree.lookup('conveyor', 'camera_color_optical_frame'), sim.conveyor_from_camera, atol=1e-9
    )
    f0 = frames[0]
    assert f0.color.shape == (240, 320, 3) and f0.depth.dtype == np.float32
    assert f0.camera.fx == pytest.approx(sim.camera.fx)
    gt = f0.ground_truth
    assert gt is not None and gt.instance_ids.shape == (240, 320)
    ids_in_image = set(np.unique(gt.instance_ids)) - {0}
    assert ids_in_image == {p.parcel_id for p in gt.truth.parcels}
    # Byte-for-byte: the simulator's first frame is what the bag holds.
    direct = sim.frame(0)
    np.testing.assert_array_equal(f0.color, direct.color)
    np.testing.assert_array_equal(gt.instance_ids, direct.instance_ids)
    depth_mm = np.nan_to_num(f0.depth * 1000.0).round().astype(np.uint16)
    np.testing.assert_array_equal(depth_mm, direct.depth_mm)


def _raw_messages(bag: Path) -> list[tuple[str, int, bytes]]:
    with Reader(bag) as reader:
        return [(c.topic, t, bytes(raw)) for c, t, raw in reader.messages()]


def test_same_seed_same_bag_and_workers_do_not_matter(
    tmp_path: Path, small_bag_path: Path
) -> None:
    again = record_bag(
        tmp_path / 'again', frames=FRAMES, seed=SEED, config=SMALL, workers=2, progress=False
    )
    assert _raw_messages(again.path) == _raw_messages(small_bag_path)
    other = record_bag(tmp_path / 'other', frames=2, seed=SEED + 1, config=SMALL, progress=False)
    a = [m for m in _raw_messages(other.path) if m[0] == TOPICS.color]
    b = [m for m in _raw_messages(small_bag_path) if m[0] == TOPICS.color][:2]
    assert a != b


def test_workers_are_never_forked_from_a_threaded_process() -> None:
    # Forking while open3d's ray-casting threads run can hang a worker on a copied lock.
    assert worker_context().get_start_method() in ('forkserver', 'spawn')


def test_sqlite3_storage_reads_back(tmp_path: Path) -> None:
    result = record_bag(
        tmp_path / 'db', frames=3, seed=1, config=SMALL, storage='sqlite3', progress=False
    )
    assert list(result.path.glob('*.db3'))
    with BagFrameReader(result.path) as reader:
        assert len(list(reader.frames())) == 3


def test_refuses_to_overwrite_unless_asked(tmp_path: Path) -> None:
    record_bag(tmp_path / 'b', frames=1, seed=1, config=SMALL, progress=False)
    with pytest.raises(BagError, match=r'already exists.*--overwrite'):
        record_bag(tmp_path / 'b', frames=1, seed=1, config=SMALL, progress=False)
    record_bag(tmp_path / 'b', frames=2, seed=1, config=SMALL, progress=False, overwrite=True)
    with BagFrameReader(tmp_path / 'b') as reader:
        assert len(list(reader.frames())) == 2


def test_missing_topic_names_what_the_bag_has(small_bag_path: Path) -> None:
    with pytest.raises(
        BagError,
        match=r'(?s)lacks topic\(s\) /cam/color/image_raw.*/camera/color/image_raw.*--color-topic',
    ):
        BagFrameReader(small_bag_path, topics=TopicMap.for_camera('/cam'))


def test_not_a_bag_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(BagError, match='does not exist'):
        BagFrameReader(tmp_path / 'nope')
    (tmp_path / 'junk').mkdir()
    (tmp_path / 'junk' / 'metadata.yaml').write_text('not: [a bag')
    with pytest.raises(BagError, match='cannot open bag'):
        BagFrameReader(tmp_path / 'junk')
