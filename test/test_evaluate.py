# Copyright 2026 The pkg_perception Authors
# SPDX-License-Identifier: Apache-2.0
"""Evaluate: metrics against ground truth, latency percentiles, the self-contained report."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest

from pkg_perception.bag.topics import TopicMap
from pkg_perception.bag.writer import SimBagWriter
from pkg_perception.cli import main
from pkg_perception.evaluation.aggregate import FrameScore, latency_stats, latency_summary
from pkg_perception.sim.simulator import ConveyorSimulator, SimConfig


@pytest.fixture(scope='module')
def oracle_run(small_bag_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bag evaluated straight away (replayed first) with the simulator's own masks."""
    out = tmp_path_factory.mktemp('evaluate') / 'oracle'
    args = ['evaluate', str(small_bag_path), '--out', str(out)]
    assert main([*args, '--segmenter', 'ground-truth', '--quiet']) == 0
    return out


def test_perfect_masks_score_one(oracle_run: Path) -> None:
    m = json.loads((oracle_run / 'metrics.json').read_text())
    assert m['ground_truth'] is True
    seg = m['segmentation']
    # The ground-truth segmenter returns the label image itself: every mask IoU is 1.
    assert seg['AP'] == pytest.approx(1.0) and seg['AP50'] == pytest.approx(1.0)
    assert seg['class_agnostic']['AP'] == pytest.approx(1.0)
    assert seg['f1_at_50'] == pytest.approx(1.0)
    assert m['counts']['frames'] == m['frames_with_truth'] == 10


def test_latency_percentiles_per_stage(oracle_run: Path) -> None:
    lat = json.loads((oracle_run / 'metrics.json').read_text())['latency_ms']
    assert list(lat)[-1] == 'total'
    assert {'segment', 'lift', 'grasp', 'track'} <= set(lat)
    for v in lat.values():
        assert v['p50'] <= v['p95'] <= v['p99'] <= v['max']


def test_report_is_self_contained(oracle_run: Path) -> None:
    html = (oracle_run / 'report.html').read_text()
    assert html.startswith('<!DOCTYPE html>')
    assert not re.search(r'(src|href)="(?!data:)', html)  # nothing fetched from anywhere
    images = re.findall(r'src="data:image/png;base64,', html)
    assert len(images) >= 4 + 2  # the plots, and overlays of the best and worst frames
    assert 'Best frames' in html and 'Worst frames' in html
    assert 'ground-truth' in html  # the segmenter used
    assert 'grasping.suction_cup_diameter' in html or 'segmentation.model_path' in html


def test_evaluate_a_replay_directory_again(oracle_run: Path, tmp_path: Path) -> None:
    out = tmp_path / 'again'
    assert main(['evaluate', str(oracle_run / 'results.jsonl'), '--out', str(out)]) == 0
    first = json.loads((oracle_run / 'metrics.json').read_text())
    again = json.loads((out / 'metrics.json').read_text())
    assert again['segmentation'] == first['segmentation']  # from the records alone


def test_without_ground_truth_counts_and_latency_only(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bag = tmp_path / 'camera'
    sim = ConveyorSimulator(SimConfig(width=160, height=120, scene='sparse'), seed=4)
    with SimBagWriter(bag, topics=TopicMap()) as w:
        for k in range(4):
            f = sim.frame(k)
            w.write_frame(
                stamp_ns=f.stamp_ns, camera=sim.camera, color=f.color, depth_mm=f.depth_mm
            )
    out = tmp_path / 'run'
    assert main(['evaluate', str(bag), '--out', str(out), '--segmenter', 'geometric']) == 0
    m = json.loads((out / 'metrics.json').read_text())
    assert m['ground_truth'] is False and 'segmentation' not in m
    assert m['counts']['frames'] == 4 and 'total' in m['latency_ms']
    assert 'no simulator ground truth' in capsys.readouterr().out
    html = (out / 'report.html').read_text()
    assert 'Fastest frames' in html and 'Slowest frames' in html


def test_latency_stats_hand_computed() -> None:
    s = latency_stats([float(v) for v in range(1, 101)])
    # numpy's linear interpolation: p50 of 1..100 is 50.5, p95 95.05, p99 99.01.
    assert s['p50'] == pytest.approx(50.5)
    assert s['p95'] == pytest.approx(95.05)
    assert s['p99'] == pytest.approx(99.01)
    assert s['mean'] == pytest.approx(50.5) and s['max'] == 100.0
    assert math.isnan(latency_stats([])['p50'])


def test_latency_summary_orders_total_last() -> None:
    records = [{'timings_ms': {'total': 3.0, 'segment': 2.0}}, {'timings_ms': {'total': 5.0}}]
    lat = latency_summary(records)
    assert list(lat) == ['segment', 'total'] and lat['total']['p50'] == pytest.approx(4.0)


def test_frame_f1() -> None:
    assert FrameScore(0, 0, 1.0, gt=4, matched=3, detections=5).f1 == pytest.approx(6 / 9)
    assert FrameScore(0, 0, 1.0).f1 == 1.0  # nothing there, nothing found
