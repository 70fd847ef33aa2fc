# Copyright 2026 The pkg_perception Authors
# SPDX-License-Identifier: Apache-2.0
"""Replay: output bag next to the inputs, results.jsonl, remapping, damaged and busy outputs."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from rosbags.rosbag2 import Reader

from pkg_perception.bag.reader import BagFrameReader
from pkg_perception.bag.salvage import salvage_bag
from pkg_perception.bag.topics import TopicMap
from pkg_perception.bag.types import typestore
from pkg_perception.classes import ParcelClass
from pkg_perception.cli import main
from pkg_perception.config import PerceptionConfig, build_pipeline
from pkg_perception.errors import BagError
from pkg_perception.records import read_records, result_from_record, result_record
from pkg_perception.replay import ReplayOptions, replay_bag
from pkg_perception.segmentation.geometric import GeometricSegmenter
from pkg_perception.sim.simulator import ConveyorSimulator, SimConfig

QUIET = ['--segmenter', 'geometric', '--quiet']


def _stamps(bag: Path, topic: str) -> list[int]:
    ts = typestore()
    with Reader(bag) as r:
        conns = [c for c in r.connections if c.topic == topic]
        out = []
        for c, _, raw in r.messages(conns):
            stamp = ts.deserialize_cdr(raw, c.msgtype).header.stamp
            out.append(stamp.sec * 1_000_000_000 + stamp.nanosec)
        return out


@pytest.fixture(scope='module')
def replayed(small_bag_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp('replay') / 'run'
    assert main(['replay', str(small_bag_path), '--out', str(out), *QUIET]) == 0
    return out


def test_replay_writes_outputs_next_to_inputs(replayed: Path, small_bag_path: Path) -> None:
    with Reader(small_bag_path) as r:
        inputs = {c.topic: c.msgcount for c in r.connections}
    with Reader(replayed / 'replay.bag') as r:
        counts = {c.topic: c.msgcount for c in r.connections}
    for topic, n in inputs.items():
        assert counts[topic] == n  # every input message copied
    frames = inputs['/camera/color/image_raw']
    for name in ('detections', 'grasps', 'markers', 'overlay'):
        assert counts[f'/perception_node/{name}'] == frames
    color = _stamps(small_bag_path, '/camera/color/image_raw')
    # The colour stamp travels unchanged into every output.
    assert _stamps(replayed / 'replay.bag', '/perception_node/detections') == color
    assert _stamps(replayed / 'replay.bag', '/perception_node/overlay') == color
    records = list(read_records(replayed / 'results.jsonl'))
    assert [r['stamp_ns'] for r in records] == color
    assert [r['frame'] for r in records] == list(range(frames))
    run = json.loads((replayed / 'run.json').read_text())
    assert run['frames'] == frames and run['damage'] == '' and run['segmenter'] == 'geometric'
    assert run['config']['segmentation.use_geometric'] is True


def test_record_carries_parcels_masks_grasps_and_timings(replayed: Path) -> None:
    rec = next(read_records(replayed / 'results.jsonl'))
    assert set(rec['timings_ms']) >= {'segment', 'lift', 'grasp', 'track', 'total'}
    parcel = rec['parcels'][0]
    assert set(parcel) >= {'id', 'class', 'score', 'box', 'mask'}
    assert parcel['mask']['size'] == [240, 320]
    q = np.asarray(parcel['box']['orientation'])
    assert abs(np.linalg.norm(q) - 1.0) < 1e-5 and len(parcel['box']['size']) == 3
    grasp = rec['grasps'][0]
    assert set(grasp) >= {'parcel_id', 'kind', 'score', 'position', 'orientation'}
    assert grasp['score'] >= max(g['score'] for g in rec['grasps'][1:] or [grasp])


def test_record_round_trip(small_bag_path: Path) -> None:
    pipeline = build_pipeline(PerceptionConfig(), segmenter=GeometricSegmenter())
    with BagFrameReader(small_bag_path) as reader:
        frame = next(reader.frames())
    result = pipeline.process(frame)
    seg = result.segmentation  # the baseline offers one class; a model offers the others too
    other = ((ParcelClass.MAILER, 0.125),)
    seg.instances = [replace(i, alternatives=other) for i in seg.instances]
    back = result_from_record(json.loads(json.dumps(result_record(result, frame=0))))
    np.testing.assert_array_equal(back.segmentation.labels, result.segmentation.labels)
    assert back.segmentation.instances
    assert {i.alternatives for i in back.segmentation.instances} == {other}
    assert [p.track_id for p in back.parcels] == [p.track_id for p in result.parcels]
    for a, b in zip(back.parcels, result.parcels, strict=True):
        np.testing.assert_allclose(a.box.pose, b.box.pose, atol=2e-6)
        assert a.parcel_class == b.parcel_class
    for a, b in zip(back.grasps, result.grasps, strict=True):
        np.testing.assert_allclose(a.pose, b.pose, atol=2e-6)
        assert a.kind == b.kind and a.parcel_id == b.parcel_id


def test_existing_output_is_not_overwritten_unless_asked(
    replayed: Path, small_bag_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / 'run'
    shutil.copytree(replayed, out)
    assert main(['replay', str(small_bag_path), '--out', str(out), *QUIET]) == 2
    assert '--overwrite' in capsys.readouterr().err
    args = ['replay', str(small_bag_path), '--out', str(out), '--max-frames', '2', *QUIET]
    assert main([*args, '--overwrite']) == 0
    assert len(list(read_records(out / 'results.jsonl'))) == 2
    (out / 'notes.txt').write_text('mine')
    assert main([*args, '--overwrite']) == 2
    assert 'notes.txt' in capsys.readouterr().err and (out / 'notes.txt').exists()


def test_missing_topic_names_the_topics_and_the_flags(
    small_bag_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / 'run'
    assert main(['replay', str(small_bag_path), '--out', str(out), '--camera-ns', '/cam', *QUIET])
    err = capsys.readouterr().err
    assert '/cam/color/image_raw' in err and '/camera/color/image_raw' in err
    assert '--color-topic' in err and '--camera-ns' in err
    assert not out.exists()  # a failed start leaves nothing behind


@pytest.mark.parametrize('storage', ['mcap', 'sqlite3'])
def test_truncated_bag_is_replayed_up_to_the_damage(
    tmp_path: Path, storage: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from pkg_perception.sim.record import record_bag

    bag = tmp_path / 'bag'
    record_bag(
        bag, frames=6, seed=3, config=SimConfig(width=160, height=120), storage=storage,
        progress=False,
    )  # fmt: skip
    (bag / 'metadata.yaml').unlink()  # as after a crash: no metadata, file cut short
    data = next(p for p in bag.iterdir() if p.suffix in ('.mcap', '.db3'))
    with data.open('r+b') as f:
        f.truncate(int(data.stat().st_size * 0.6))
    out = tmp_path / 'run'
    assert main(['replay', str(bag), '--out', str(out), *QUIET]) == 3
    assert 'damage' in capsys.readouterr().err
    n = len(list(read_records(out / 'results.jsonl')))
    assert 0 < n < 6
    assert 'damage' in json.loads((out / 'run.json').read_text())['damage']
    with BagFrameReader(out / 'replay.bag') as reader:  # the output is a valid bag
        assert sum(1 for _ in reader.frames()) == n
    assert not (out / '.salvaged.bag').exists()


def test_salvage_refuses_a_file_with_nothing_readable(tmp_path: Path) -> None:
    (tmp_path / 'bad').mkdir()
    (tmp_path / 'bad' / 'x.mcap').write_bytes(b'not an mcap file at all')
    with pytest.raises(BagError, match='no readable message'):
        salvage_bag(tmp_path / 'bad', tmp_path / 'out')


def _camera_bag(path: Path, topics: TopicMap, frames: int = 3) -> None:
    """A bag as `ros2 bag record` makes it from a camera: only the camera's topics (no
    /tf_static, no ground truth), bgr8 colour and 32FC1 depth in metres."""
    from rosbags.rosbag2 import StoragePlugin, Writer

    from pkg_perception.ros.conversions import model_to_camera_info, numpy_to_image

    ts = typestore()
    t = ts.types
    sim = ConveyorSimulator(SimConfig(width=160, height=120, scene='sparse'), seed=5)
    with Writer(path, version=8, storage_plugin=StoragePlugin.MCAP) as w:
        conns = {
            name: w.add_connection(topic, msgtype, typestore=ts)
            for name, topic, msgtype in (
                ('info', topics.color_info, 'sensor_msgs/msg/CameraInfo'),
                ('color', topics.color, 'sensor_msgs/msg/Image'),
                ('depth', topics.depth, 'sensor_msgs/msg/Image'),
            )
        }
        for k in range(frames):
            f = sim.frame(k)
            stamp = t['builtin_interfaces/msg/Time'](
                sec=f.stamp_ns // 10**9, nanosec=f.stamp_ns % 10**9
            )
            hdr = t['std_msgs/msg/Header'](stamp=stamp, frame_id=sim.camera.frame_id)
            depth = f.depth_mm.astype(np.float32) / 1000.0
            msgs = {
                'info': model_to_camera_info(
                    t['sensor_msgs/msg/CameraInfo'],
                    t['sensor_msgs/msg/RegionOfInterest'],
                    hdr,
                    sim.camera,
                ),
                'color': numpy_to_image(
                    t['sensor_msgs/msg/Image'], hdr, f.color[..., ::-1].copy(), 'bgr8'
                ),
                'depth': numpy_to_image(t['sensor_msgs/msg/Image'], hdr, depth, '32FC1'),
            }
            for name, msg in msgs.items():
                c = conns[name]
                w.write(c, f.stamp_ns + 1000 * (name != 'info'), ts.serialize_cdr(msg, c.msgtype))


def test_real_camera_bag_with_remapped_topics(tmp_path: Path) -> None:
    bag = tmp_path / 'camera'
    _camera_bag(bag, TopicMap.for_camera('/camera/camera'))
    out = tmp_path / 'run'
    args = ['replay', str(bag), '--out', str(out), '--camera-ns', '/camera/camera', *QUIET]
    assert main(args) == 0
    records = list(read_records(out / 'results.jsonl'))
    assert len(records) == 3
    # No TF in the bag: outputs stay in the camera frame and say so.
    assert all(r['frame_id'] == 'camera_color_optical_frame' for r in records)
    assert all('tf_fallback_camera_frame' in r['flags'] for r in records)
    assert main(['evaluate', str(out)]) == 0
    assert json.loads((out / 'metrics.json').read_text())['ground_truth'] is False


def test_ground_truth_segmenter_needs_a_simulated_bag(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bag = tmp_path / 'camera'
    _camera_bag(bag, TopicMap(), frames=1)
    out = tmp_path / 'run'
    assert main(['replay', str(bag), '--out', str(out), '--segmenter', 'ground-truth']) == 2
    assert 'ground truth' in capsys.readouterr().err


def test_replay_at_recorded_rate_keeps_every_frame(small_bag_path: Path, tmp_path: Path) -> None:
    pipeline = build_pipeline(PerceptionConfig(), segmenter=GeometricSegmenter())
    summary = replay_bag(
        small_bag_path,
        tmp_path / 'run',
        pipeline,
        options=ReplayOptions(rate=50.0, progress=False, copy_inputs=False, max_frames=3),
    )
    assert summary.frames == 3 and not summary.damage
    with Reader(summary.bag_path) as r:
        assert all(c.topic.startswith('/perception_node/') for c in r.connections)
