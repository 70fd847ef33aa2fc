# Copyright 2026 The pkg_perception Authors
# SPDX-License-Identifier: Apache-2.0
"""Compare metrics against a committed baseline; fail when one falls beyond its tolerance.

A baseline file carries its own recipe (the seeded bag to simulate and the segmenters to
run), so `pkg-perception regress --baseline FILE` needs nothing else and gives the same
figures on every machine: the simulator and the pipeline are deterministic on the CPU.
Only quality metrics belong in a baseline; latency depends on the machine.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pkg_perception.errors import ConfigError

BASELINE_SCHEMA = 'pkg_perception/baseline/v1'
DIRECTIONS = ('higher', 'lower')


@dataclass(frozen=True)
class Recipe:
    """The bag a baseline is measured on."""

    frames: int = 12
    seed: int = 7
    width: int = 320
    height: int = 240
    scene: str = 'mixed'
    fps: float = 15.0


@dataclass(frozen=True)
class Expectation:
    """One metric's baseline value and how far it may move the wrong way."""

    value: float
    tolerance: float
    direction: str = 'higher'  # which way is better

    def __post_init__(self) -> None:
        if self.direction not in DIRECTIONS:
            raise ConfigError(f'direction {self.direction!r}: use "higher" or "lower"')
        if not (self.tolerance >= 0):
            raise ConfigError(f'tolerance {self.tolerance} must be 0 or more')


@dataclass(frozen=True)
class Baseline:
    """Expected metrics per segmenter run ('geometric', 'ground-truth', 'model')."""

    recipe: Recipe
    runs: dict[str, dict[str, Expectation]]
    description: str = ''
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Check:
    """One metric compared: `ok` unless it fell beyond its tolerance."""

    run: str
    metric: str
    value: float | None
    expected: Expectation

    @property
    def delta(self) -> float:
        return math.nan if self.value is None else self.value - self.expected.value

    @property
    def ok(self) -> bool:
        if self.value is None or not math.isfinite(self.value):
            return math.isnan(self.expected.value)
        sign = 1.0 if self.expected.direction == 'higher' else -1.0
        return sign * self.delta >= -self.expected.tolerance - 1e-12

    @property
    def improved(self) -> bool:
        """Better than the baseline by more than the tolerance: time to update it."""
        if not self.ok or self.value is None:
            return False
        sign = 1.0 if self.expected.direction == 'higher' else -1.0
        return sign * self.delta > self.expected.tolerance + 1e-12


def metric_value(metrics: Mapping[str, Any], dotted: str) -> float | None:
    """metrics['segmentation']['AP50'] for 'segmentation.AP50'; None when absent."""
    node: Any = metrics
    for part in dotted.split('.'):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    if isinstance(node, bool):
        return float(node)
    if node is None:
        return math.nan
    return float(node) if isinstance(node, (int, float)) else None


def load_baseline(path: Path) -> Baseline:
    """Read and validate a baseline file.

    Raises:
        ConfigError: naming the file and what is wrong in it.
    """
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise ConfigError(f'baseline {path} not found') from None
    except json.JSONDecodeError as err:
        raise ConfigError(f'baseline {path} is not valid JSON: {err}') from None
    if not isinstance(data, dict) or data.get('schema') != BASELINE_SCHEMA:
        raise ConfigError(f'{path} is not a baseline ({BASELINE_SCHEMA}); see test/')
    try:
        recipe = Recipe(**data.get('recipe', {}))
        runs = {
            name: {
                metric: Expectation(
                    value=math.nan if e['value'] is None else float(e['value']),
                    tolerance=float(e.get('tolerance', 0.0)),
                    direction=str(e.get('direction', 'higher')),
                )
                for metric, e in run['metrics'].items()
            }
            for name, run in data['runs'].items()
        }
    except (KeyError, TypeError, ValueError) as err:
        raise ConfigError(f'baseline {path} is malformed ({err}); see test/') from None
    return Baseline(recipe, runs, str(data.get('description', '')), data.get('extra', {}))


def save_baseline(baseline: Baseline, path: Path) -> None:
    """Write a baseline (values rounded to 4 digits; NaN as null)."""

    def exp(e: Expectation) -> dict[str, Any]:
        value = None if math.isnan(e.value) else round(e.value, 4)
        return {'value': value, 'tolerance': e.tolerance, 'direction': e.direction}

    # One metric per line: a baseline change reads as a one-line diff per metric.
    runs = []
    for name, run in baseline.runs.items():
        metrics = ',\n'.join(
            f'        {json.dumps(m)}: {json.dumps(exp(e))}' for m, e in run.items()
        )
        runs.append(f'    {json.dumps(name)}: {{"metrics": {{\n{metrics}\n    }}}}')
    text = (
        '{\n'
        f'  "schema": {json.dumps(BASELINE_SCHEMA)},\n'
        f'  "description": {json.dumps(baseline.description)},\n'
        f'  "recipe": {json.dumps(asdict(baseline.recipe))},\n'
        '  "runs": {\n' + ',\n'.join(runs) + '\n  }\n}\n'
    )
    json.loads(text)  # stays valid JSON
    Path(path).write_text(text)


def compare(
    run: str, metrics: Mapping[str, Any], expected: Mapping[str, Expectation]
) -> list[Check]:
    """Every expected metric of one run checked against `metrics` (a metrics.json)."""
    return [Check(run, name, metric_value(metrics, name), e) for name, e in expected.items()]


def updated(baseline: Baseline, results: Mapping[str, Mapping[str, Any]]) -> Baseline:
    """The baseline with each measured run's values replaced (tolerances kept)."""
    runs = {}
    for name, expected in baseline.runs.items():
        metrics = results.get(name)
        if metrics is None:
            runs[name] = dict(expected)
            continue
        runs[name] = {}
        for metric, e in expected.items():
            value = metric_value(metrics, metric)
            runs[name][metric] = Expectation(
                math.nan if value is None else value, e.tolerance, e.direction
            )
    return Baseline(baseline.recipe, runs, baseline.description, baseline.extra)


def format_checks(checks: Sequence[Check]) -> str:
    """A plain table: run, metric, value, baseline, tolerance, verdict."""
    rows = [('run', 'metric', 'value', 'baseline', 'tolerance', 'verdict')]
    for c in checks:
        value = 'missing' if c.value is None else f'{c.value:.4f}'
        verdict = 'FAIL' if not c.ok else 'improved' if c.improved else 'ok'
        arrow = '>=' if c.expected.direction == 'higher' else '<='
        rows.append(
            (
                c.run,
                c.metric,
                value,
                f'{arrow} {c.expected.value:.4f}',
                f'{c.expected.tolerance:g}',
                verdict,
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return '\n'.join('  '.join(v.ljust(w) for v, w in zip(r, widths, strict=True)) for r in rows)


def measure(
    baseline: Baseline,
    work: Path,
    *,
    config: Any,
    runs: Sequence[str] | None = None,
    progress: bool = False,
) -> dict[str, dict[str, Any]]:
    """Simulate the recipe's bag in `work`, replay it once per run, return each metrics.

    Raises:
        ConfigError: a run name that is not a segmenter.
        ModelError: the 'model' run and no loadable model.
    """
    from pkg_perception.evaluation.aggregate import evaluate_records
    from pkg_perception.records import read_records
    from pkg_perception.replay import ReplayOptions, build_replay_pipeline, replay_bag
    from pkg_perception.sim.record import record_bag
    from pkg_perception.sim.simulator import SimConfig

    r = baseline.recipe
    bag = work / 'bag'
    record_bag(
        bag,
        frames=r.frames,
        seed=r.seed,
        config=SimConfig(width=r.width, height=r.height, fps=r.fps, scene=r.scene),
        overwrite=True,
        progress=progress,
    )
    out: dict[str, dict[str, Any]] = {}
    for name in runs or list(baseline.runs):
        pipeline, provenance = build_replay_pipeline(config, name)
        summary = replay_bag(
            bag,
            work / name,
            pipeline,
            options=ReplayOptions(progress=progress),
            overwrite=True,
            provenance=provenance,
        )
        records = list(read_records(summary.results_path))
        out[name] = evaluate_records(records, bag=bag).metrics
    return out
