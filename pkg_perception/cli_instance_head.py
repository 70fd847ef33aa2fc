# Copyright 2026 The pkg_perception Authors
# SPDX-License-Identifier: Apache-2.0
"""`pkg-perception fit-instance-head`: fit the mask re-classifier into an exported model."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from pkg_perception.errors import ConfigError

if TYPE_CHECKING:  # the heavy imports wait until the command runs
    from pkg_perception.segmentation.instance_head import InstanceHead
    from pkg_perception.training.instance_head_fit import HeadData


def add_command(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        'fit-instance-head',
        help="fit the per-mask class and overlap head on the model's own masks",
        description='Run an exported model on fresh simulated cells (or, with --coco, on a '
        "cell's labelled images), fit the small head that re-classes and re-scores each "
        "decoded mask from its size, thickness and the network's confidence, and store it "
        "in the model's metadata_props. A --holdout share of the seeds (images) is kept out "
        'of the fit and reported on.',
    )
    p.add_argument('--model', type=Path, default=Path('models/parcelnet.onnx'))
    p.add_argument('--out', type=Path, help='model to write (default: --model, in place)')
    p.add_argument(
        '--coco',
        type=Path,
        help="a cell's labelled RGB-D images (annotations.json, docs/fine-tuning.md) instead "
        'of simulated cells; best images the fine-tuning did not train on',
    )
    p.add_argument('--first-seed', type=int, default=30_000, help='first simulated cell')
    p.add_argument('--seeds', type=int, default=600, help='cells (16 frames each)')
    p.add_argument(
        '--holdout', type=float, default=0.1, help='share of seeds (last images) to report on'
    )
    p.add_argument('--members', type=int, default=5, help='perceptrons averaged')
    p.add_argument('--hidden', type=int, default=64)
    p.add_argument(
        '--epochs', type=int, help='passes over the rows (default 60; 10 refining a head)'
    )
    p.add_argument('--lr', type=float, help='learning rate (default 3e-3; 1e-3 refining)')
    p.add_argument(
        '--head-from',
        type=Path,
        help="with --coco: the model whose head is refined (default: --model's own, else "
        'the shipped models/parcelnet.onnx, e.g. for a fine-tuned export that has none)',
    )
    p.add_argument(
        '--fresh', action='store_true', help='with --coco: fit a new head instead of refining one'
    )
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--workers', type=int, default=2)
    p.add_argument(
        '--rows', type=Path, help='.npz of collected rows: read when it exists, else written'
    )
    p.set_defaults(func=_cmd_fit_instance_head)


def _cmd_fit_instance_head(args: argparse.Namespace) -> int:
    from pkg_perception.training.instance_head_fit import (
        HeadData,
        fit_head,
        read_head,
        write_head,
    )

    if not 0 < args.holdout < 1:
        raise ConfigError('--holdout must be in (0, 1)')
    if args.rows is not None and args.rows.is_file():
        data = HeadData.load(args.rows)
        print(f'rows read from {args.rows}: {len(data.iou)} masks')
    else:
        data = _collect(args)
        if args.rows is not None:
            data.save(args.rows)
    held_out, what = _held_out(args, data)
    fit_rows, held = data.take(~held_out), data.take(held_out)
    if not len(fit_rows.iou) or not len(held.iou):
        raise ConfigError(f'{len(data.iou)} masks collected: too few to fit and hold out')
    present = read_head(args.model)
    init, source = _start_head(args, present)
    head = fit_head(
        fit_rows,
        members=args.members,
        hidden=args.hidden,
        epochs=args.epochs or (60 if init is None else 10),
        lr=args.lr or (3e-3 if init is None else 1e-3),
        seed=args.seed,
        init=init,
    )
    _print_report(head, present, held, what)
    out = args.out or args.model
    write_head(args.model, head, out)
    how = f"{source}'s head refined" if init is not None else 'instance head fitted'
    print(f'{how} on {len(fit_rows.iou)} masks, written into {out}')
    return 0


def _start_head(
    args: argparse.Namespace, present: InstanceHead | None
) -> tuple[InstanceHead | None, Path | None]:
    """The head a cell's masks refine, and the model it came from (None: fit a new one).

    `present` is --model's own head, already read.

    A cell's few thousand masks refine what tens of thousands of simulated ones taught;
    alone they overfit: on four simulated bags held out of a 360-image fit, a fresh head
    scored 0.005 mask AP below the shipped one, a refined one 0.004 above.
    """
    from pkg_perception.errors import InputError
    from pkg_perception.models import default_model_path
    from pkg_perception.training.instance_head_fit import read_head

    if args.coco is None or args.fresh:
        return None, None
    if args.head_from is None and present is not None:
        return present, args.model
    source = args.head_from or default_model_path()
    if source.is_file() and (head := read_head(source)) is not None:
        return head, source
    if args.head_from:
        problem = (
            'carries no instance head for these features'
            if args.head_from.is_file()
            else 'not found'
        )
        raise InputError(f'--head-from {args.head_from}: {problem}')
    return None, None


def _collect(args: argparse.Namespace) -> HeadData:
    from pkg_perception.training.instance_head_fit import collect, collect_coco
    from pkg_perception.training.simdata import SimDataPlan

    if args.coco is not None:
        return collect_coco(args.model, args.coco)
    if args.seeds < 2:
        raise ConfigError('--seeds must be at least 2')
    return collect(
        args.model, SimDataPlan(first_seed=args.first_seed, seeds=args.seeds), workers=args.workers
    )


def _held_out(args: argparse.Namespace, data: HeadData) -> tuple[np.ndarray, str]:
    """Rows kept out of the fit: those of the last seeds, or of the last images in id order.

    Labelled images are most often numbered as recorded, so the last ones are the latest
    pass of the belt: neighbouring frames of one pass do not land on both sides.
    """
    first, last = int(data.seed.min()), int(data.seed.max())
    count = min(last - first, max(1, round((last - first + 1) * args.holdout)))
    cut = last + 1 - count
    what = 'images' if args.coco is not None else 'seeds'
    return data.seed >= cut, f'held-out {what} {cut}..{last}'


def _print_report(
    head: InstanceHead, present: InstanceHead | None, held: HeadData, what: str
) -> None:
    """Class accuracy on the held-out masks: pixel vote, the model's present head, the new."""
    from pkg_perception.training.instance_head_fit import report

    r = report(head, held)
    before = {'pixel vote': r.pixel_accuracy}
    if present is not None:
        before['present head'] = report(present, held).head_accuracy
    listed = ', '.join(f'{v:.3f} ({k})' for k, v in before.items())
    print(
        f'{what}: {r.masks} masks, {r.matched} on a parcel (IoU >= 0.5); class accuracy '
        f'{listed} -> {r.head_accuracy:.3f} (new head); predicted vs true IoU correlation '
        f'{r.iou_correlation:.3f}'
    )
    if r.head_accuracy < max(before.values()):
        print(
            'the new head classes the held-out masks worse than before: compare mask AP on '
            'a labelled bag of the cell (segmentation.instance_head: false turns heads off) '
            'before keeping it'
        )
