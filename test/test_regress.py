# Copyright 2026 The pkg_perception Authors
# SPDX-License-Identifier: Apache-2.0
"""The regression gate: a seeded bag replayed and checked against the committed baseline."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from pkg_perception.cli import main
from pkg_perception.errors import ConfigError
from pkg_perception.evaluation.regress import (
    Baseline,
    Check,
    Expectation,
    Recipe,
    compare,
    load_baseline,
    metric_value,
    save_baseline,
    updated,
)

BASELINE = Path(__file__).parent / 'baseline_metrics.json'


def test_release_baseline_holds(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Simulate the baseline's seeded bag, replay it per run, compare every metric."""
    code = main(['regress', '--baseline', str(BASELINE), '--work', str(tmp_path)])
    out = capsys.readouterr()
    assert code == 0, out.out + out.err
    assert 'FAIL' not in out.out
    baseline = load_baseline(BASELINE)
    for run in baseline.runs:
        assert (tmp_path / run / 'results.jsonl').is_file()


def test_a_drop_beyond_tolerance_fails(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    baseline = load_baseline(BASELINE)
    expected = baseline.runs['geometric']
    metrics: dict = {}
    for name, e in expected.items():  # every metric at its baseline value...
        node = metrics
        *parents, leaf = name.split('.')
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = e.value
    metrics['segmentation']['AP50'] -= expected['segmentation.AP50'].tolerance + 0.01  # ...but one
    path = tmp_path / 'metrics.json'
    path.write_text(json.dumps(metrics))
    args = ['regress', '--baseline', str(BASELINE), '--metrics', str(path), '--run', 'geometric']
    assert main(args) == 1
    err = capsys.readouterr().err
    assert 'REGRESSION' in err and 'geometric/segmentation.AP50' in err
    metrics['segmentation']['AP50'] = expected['segmentation.AP50'].value
    path.write_text(json.dumps(metrics))
    assert main(args) == 0


def test_tolerance_edges() -> None:
    hi = Expectation(0.5, 0.05, 'higher')
    assert Check('r', 'm', 0.45, hi).ok  # exactly at the tolerance
    assert not Check('r', 'm', 0.449, hi).ok
    assert Check('r', 'm', 0.56, hi).improved and not Check('r', 'm', 0.55, hi).improved
    lo = Expectation(20.0, 2.0, 'lower')
    assert Check('r', 'm', 22.0, lo).ok and not Check('r', 'm', 22.5, lo).ok
    assert not Check('r', 'm', None, hi).ok  # a metric that disappeared fails


def test_metric_lookup_and_compare() -> None:
    metrics = {'segmentation': {'AP': 0.7, 'per_class': {'box': {'AP': 0.9}}}, 'ok': True}
    assert metric_value(metrics, 'segmentation.per_class.box.AP') == 0.9
    assert metric_value(metrics, 'ok') == 1.0
    assert metric_value(metrics, 'segmentation.missing') is None
    checks = compare('r', metrics, {'segmentation.AP': Expectation(0.8, 0.05)})
    assert len(checks) == 1 and not checks[0].ok
    assert checks[0].delta == pytest.approx(-0.1)


def test_update_keeps_tolerances_and_round_trips(tmp_path: Path) -> None:
    b = Baseline(Recipe(frames=3), {'g': {'a.b': Expectation(0.1, 0.02), 'c': Expectation(1, 0)}})
    new = updated(b, {'g': {'a': {'b': 0.25}}})
    assert new.runs['g']['a.b'] == Expectation(0.25, 0.02)
    assert math.isnan(new.runs['g']['c'].value)  # no longer measured
    path = tmp_path / 'b.json'
    save_baseline(new, path)
    again = load_baseline(path)
    assert again.recipe == Recipe(frames=3) and again.runs['g']['a.b'] == Expectation(0.25, 0.02)


def test_bad_baseline_is_named(tmp_path: Path) -> None:
    path = tmp_path / 'b.json'
    path.write_text('{"schema": "something else"}')
    with pytest.raises(ConfigError, match='is not a baseline'):
        load_baseline(path)
    with pytest.raises(ConfigError, match='not found'):
        load_baseline(tmp_path / 'missing.json')
