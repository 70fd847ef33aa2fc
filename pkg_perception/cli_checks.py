# Copyright 2026 The pkg_perception Authors
# SPDX-License-Identifier: Apache-2.0
"""`pkg-perception regress | benchmark`: the checks before a model or a change ships."""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from pkg_perception.cli_replay import (
    EXIT_REGRESSION,
    command_line,
    default_config_path,
    setup_logging,
)

# --- regress -----------------------------------------------------------------------------


def add_regress(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        'regress',
        help='fail (exit 1) when a metric falls below the baseline beyond its tolerance',
        description='Simulate the seeded bag the baseline names, replay it with each of its '
        'segmenter runs, evaluate, and compare every metric with the baseline. With --metrics, '
        'compare an existing metrics.json instead (against --run).',
    )
    p.add_argument('--baseline', type=Path, required=True, help='baseline JSON (see test/)')
    p.add_argument('--metrics', type=Path, help='compare this metrics.json instead of running')
    p.add_argument('--run', action='append', help='only these runs of the baseline (repeatable)')
    p.add_argument('--work', type=Path, help='keep the bag and replays here (default: temporary)')
    p.add_argument(
        '--update', action='store_true', help='write the measured values into the baseline'
    )
    p.add_argument(
        '--config', type=Path, help='ROS 2 parameter file (default: config/perception.yaml)'
    )
    p.add_argument('--set', action='append', default=[], metavar='KEY=VALUE')
    p.add_argument('--model', type=Path, help='ONNX model for the "model" run')
    p.set_defaults(func=_cmd_regress)


def _cmd_regress(args: argparse.Namespace) -> int:
    import json

    from pkg_perception.config import load_config, parse_override
    from pkg_perception.errors import ConfigError
    from pkg_perception.evaluation import regress

    setup_logging()
    baseline = regress.load_baseline(args.baseline)
    runs = args.run or list(baseline.runs)
    unknown = [r for r in runs if r not in baseline.runs]
    if unknown:
        raise ConfigError(
            f'run(s) {", ".join(unknown)} not in {args.baseline}: {", ".join(baseline.runs)}'
        )
    if args.metrics is not None:
        if len(runs) != 1:
            raise ConfigError(f'--metrics compares one run: pass --run (one of {", ".join(runs)})')
        measured = {runs[0]: json.loads(args.metrics.read_text())}
    else:
        overrides = dict(parse_override(s) for s in args.set)
        if args.model is not None:
            overrides['segmentation.model_path'] = str(args.model)
        config = load_config(args.config or default_config_path(), overrides=overrides)
        with tempfile.TemporaryDirectory(prefix='regress-') as tmp:
            work = args.work or Path(tmp)
            measured = regress.measure(baseline, work, config=config, runs=runs)
    checks = [c for r in runs for c in regress.compare(r, measured[r], baseline.runs[r])]
    print(regress.format_checks(checks))
    if args.update:
        regress.save_baseline(regress.updated(baseline, measured), args.baseline)
        print(f'baseline updated: {args.baseline}')
        return 0
    failed = [c for c in checks if not c.ok]
    if failed:
        print(
            f'REGRESSION: {len(failed)} metric(s) below the baseline beyond tolerance: '
            + ', '.join(f'{c.run}/{c.metric}' for c in failed),
            file=sys.stderr,
        )
        return EXIT_REGRESSION
    improved = [c for c in checks if c.improved]
    if improved:
        print(f'{len(improved)} metric(s) improved beyond tolerance; consider --update')
    print(f'all {len(checks)} metrics within tolerance of {args.baseline}')
    return 0


# --- benchmark ---------------------------------------------------------------------------


def add_benchmark(sub: argparse._SubParsersAction) -> None:
    from pkg_perception.cli import _non_negative_int, _positive_int

    p = sub.add_parser(
        'benchmark',
        help='end-to-end latency, frames/s and peak memory: model and geometric side by side',
    )
    p.add_argument('--frames', type=_positive_int, default=60)
    p.add_argument('--seed', type=_non_negative_int, default=0)
    p.add_argument('--width', type=_positive_int, default=640)
    p.add_argument('--height', type=_positive_int, default=480)
    p.add_argument('--scene', default='mixed')
    p.add_argument(
        '--segmenters',
        default='model,geometric',
        help='comma-separated pipelines to measure (default model,geometric)',
    )
    p.add_argument(
        '--config', type=Path, help='ROS 2 parameter file (default: config/perception.yaml)'
    )
    p.add_argument('--set', action='append', default=[], metavar='KEY=VALUE')
    p.add_argument('--model', type=Path)
    p.add_argument(
        '--doc',
        type=Path,
        default=Path('docs/benchmarks.md'),
        help='markdown file to update (default docs/benchmarks.md)',
    )
    p.add_argument('--no-doc', action='store_true', help='print only')
    p.set_defaults(func=_cmd_benchmark)


def _cmd_benchmark(args: argparse.Namespace) -> int:
    from pkg_perception.config import load_config, parse_override
    from pkg_perception.e2e_benchmark import benchmark_pipelines

    overrides = dict(parse_override(s) for s in args.set)
    if args.model is not None:
        overrides['segmentation.model_path'] = str(args.model)
    config = load_config(args.config or default_config_path(), overrides=overrides)
    body, _ = benchmark_pipelines(
        frames=args.frames,
        seed=args.seed,
        width=args.width,
        height=args.height,
        scene=args.scene,
        segmenters=tuple(s.strip() for s in args.segmenters.split(',') if s.strip()),
        config=config,
        doc=None if args.no_doc else args.doc,
        command=command_line(args),
    )
    print(body)
    if not args.no_doc:
        print(f'written to {args.doc}')
    return 0
