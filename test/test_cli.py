# Copyright 2026 The pkg_perception Authors
# SPDX-License-Identifier: Apache-2.0
"""Commands as a user runs them: simulate (arguments, preview, overwrite, Ctrl-C), evaluate."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import pytest

from pkg_perception.bag.reader import BagFrameReader
from pkg_perception.cli import main


def test_simulate_writes_bag_and_preview(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out, png = tmp_path / 'bag', tmp_path / 'sheet.png'
    code = main(
        [
            'simulate',
            '--out',
            str(out),
            '--frames',
            '4',
            '--seed',
            '2',
            '--width',
            '160',
            '--height',
            '120',
            '--scene',
            'piles',
            '--preview',
            str(png),
            '--quiet',
            '--workers',
            '1',
        ]
    )
    assert code == 0
    text = capsys.readouterr().out
    assert '4/4 frames' in text and '/camera/color/image_raw' in text and 'preview:' in text
    sheet = cv2.imread(str(png))
    assert sheet is not None and sheet.shape[1] == 3 * 160 and sheet.shape[0] > 3 * 120


def test_existing_output_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = [
        'simulate',
        '--out',
        str(tmp_path / 'b'),
        '--frames',
        '1',
        '--width',
        '64',
        '--height',
        '48',
        '--quiet',
        '--workers',
        '1',
    ]
    assert main(args) == 0
    assert main(args) == 2
    assert '--overwrite' in capsys.readouterr().err
    assert main([*args, '--overwrite']) == 0


@pytest.mark.parametrize(
    ('command', 'args', 'message'),
    [
        ('simulate', ['--frames', '0'], 'must be at least 1'),
        ('simulate', ['--frames', 'ten'], 'not an integer'),
        ('simulate', ['--scene', 'heap'], 'invalid choice'),
        ('simulate', ['--storage', 'zip'], 'invalid choice'),
        ('simulate', ['--seed', '-1'], 'must be 0 or more'),
        ('train', ['--blocks', '0,two'], 'comma-separated counts'),
        ('train', ['--blocks', '0,-1,2'], 'comma-separated counts'),
        ('train', ['--precision', 'fp16'], 'invalid choice'),
    ],
)
def test_bad_arguments_say_what_is_wrong(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    command: str,
    args: list[str],
    message: str,
) -> None:
    with pytest.raises(SystemExit) as exc:
        main([command, '--out', str(tmp_path / 'x'), *args])
    assert exc.value.code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / 'x').exists()


def test_bad_config_value_is_a_clean_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(['simulate', '--out', str(tmp_path / 'x'), '--fps', '500', '--quiet'])
    assert code == 2
    assert 'fps 500.0 must be in' in capsys.readouterr().err


def test_ctrl_c_leaves_a_valid_bag(tmp_path: Path) -> None:
    out = tmp_path / 'cut'
    proc = subprocess.Popen(
        [
            sys.executable,
            '-m',
            'pkg_perception.cli',
            'simulate',
            '--out',
            str(out),
            '--frames',
            '100000',
            '--width',
            '160',
            '--height',
            '120',
            '--quiet',
            '--workers',
            '2',
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not any(out.glob('*.mcap')):
        time.sleep(0.1)
    time.sleep(2.0)  # let some frames land
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert 'interrupted' in stdout
    assert (out / 'metadata.yaml').exists()
    with BagFrameReader(out) as reader:
        n = sum(1 for _ in reader.frames())
    assert 1 <= n < 100000
    assert f'{n}/100000 frames' in stdout


def test_evaluate_grasps_with_the_simulators_pile_order(
    small_bag_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / 'grasps.json'
    args = ['evaluate-grasps', str(small_bag_path), '--pile-order', 'truth-in-view']
    assert main([*args, '--json', str(out)]) == 0
    assert 'ground-truth masks, truth-in-view pile order: top-1 success' in capsys.readouterr().out
    figures = json.loads(out.read_text())
    assert figures['pile_order'] == 'truth-in-view'
    assert figures['grasping']['frames'] == 10
    # What rests on what is the simulator's word here (NaN: nothing was said to be under).
    precision = figures['grasping']['pile_order_precision']
    assert precision == 1.0 or precision != precision


def test_evaluate_segmentation_takes_the_settings_it_is_given(
    small_bag_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / 'seg.json'
    args = ['evaluate-segmentation', str(small_bag_path), '--every', '3', '--json', str(out)]
    assert main([*args, '--set', 'tracking.class_memory=0']) == 0
    assert '| model, one frame |' in capsys.readouterr().out
    figures = json.loads(out.read_text())
    assert set(figures) == {'model', 'model, one frame', 'geometric'}
    assert figures['model']['frames'] == 4
    # Without class memory the pipeline publishes the segmenter's masks as they came.
    assert figures['model']['all'] == figures['model, one frame']['all']
    assert main([*args, '--set', 'tracking.class_memory=-1']) == 2
    assert 'tracking.class_memory' in capsys.readouterr().err
