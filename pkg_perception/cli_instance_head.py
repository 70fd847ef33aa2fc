# Copyright 2026 The pkg_perception Authors
# SPDX-License-Identifier: Apache-2.0
"""`pkg-perception fit-instance-head`: fit the mask re-classifier into an exported model."""

from __future__ import annotations

import argparse
from pathlib import Path

from pkg_perception.errors import ConfigError


def add_command(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        'fit-instance-head',
        help="fit the per-mask class and overlap head on the model's own masks",
        description='Run an exported model on fresh simulated cells, fit the small head that '
        're-classes and re-scores each decoded mask from its size, thickness and the '
        "network's confidence, and store it in the model's metadata_props. The last "
        '--holdout share of the seeds is kept out of the fit and reported on.',
    )
    p.add_argument('--model', type=Path, default=Path('models/parcelnet.onnx'))
    p.add_argument('--out', type=Path, help='model to write (default: --model, in place)')
    p.add_argument('--first-seed', type=int, default=30_000, help='first simulated cell')
    p.add_argument('--seeds', type=int, default=600, help='cells (16 frames each)')
    p.add_argument('--holdout', type=float, default=0.1, help='share of seeds to report on')
    p.add_argument('--members', type=int, default=5, help='perceptrons averaged')
    p.add_argument('--hidden', type=int, default=64)
    p.add_argument('--epochs', type=int, default=60)
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--workers', type=int, default=2)
    p.add_argument(
        '--rows', type=Path, help='.npz of collected rows: read when it exists, else written'
    )
    p.set_defaults(func=_cmd_fit_instance_head)


def _cmd_fit_instance_head(args: argparse.Namespace) -> int:
    from pkg_perception.training.instance_head_fit import (
        HeadData,
        collect,
        fit_head,
        report,
        write_head,
    )
    from pkg_perception.training.simdata import SimDataPlan

    if args.seeds < 2 or not 0 < args.holdout < 1:
        raise ConfigError('--seeds must be at least 2 and --holdout in (0, 1)')
    plan = SimDataPlan(first_seed=args.first_seed, seeds=args.seeds)
    if args.rows is not None and args.rows.is_file():
        data = HeadData.load(args.rows)
        print(f'rows read from {args.rows}: {len(data.iou)} masks')
    else:
        data = collect(args.model, plan, workers=args.workers)
        if args.rows is not None:
            data.save(args.rows)
    held_seeds = min(args.seeds - 1, max(1, round(args.seeds * args.holdout)))
    cut = args.first_seed + args.seeds - held_seeds
    fit_rows, held = data.take(data.seed < cut), data.take(data.seed >= cut)
    head = fit_head(
        fit_rows, members=args.members, hidden=args.hidden, epochs=args.epochs, seed=args.seed
    )
    r = report(head, held)
    print(
        f'held-out seeds {cut}..{args.first_seed + args.seeds - 1}: {r.masks} masks, '
        f'{r.matched} on a parcel (IoU >= 0.5); class accuracy {r.pixel_accuracy:.3f} '
        f'(pixel vote) -> {r.head_accuracy:.3f} (head); predicted vs true IoU '
        f'correlation {r.iou_correlation:.3f}'
    )
    out = args.out or args.model
    write_head(args.model, head, out)
    print(f'instance head ({len(fit_rows.iou)} masks, seeds < {cut}) written into {out}')
    return 0
