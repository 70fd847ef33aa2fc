# Copyright 2026 The pkg_perception Authors
# SPDX-License-Identifier: Apache-2.0
"""`pkg-perception`: the offline commands (simulate now; replay, evaluate, train later)."""

from __future__ import annotations

import argparse
import os
import sys
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path

from pkg_perception.errors import PerceptionError


def _int_at_least(minimum: int) -> Callable[[str], int]:
    """Argparse type: an integer >= minimum, with a message that says which rule failed."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f'{text!r} is not an integer') from None
        if value < minimum:
            rule = 'at least 1' if minimum == 1 else f'{minimum} or more'
            raise argparse.ArgumentTypeError(f'{value} must be {rule}')
        return value

    return parse


_positive_int = _int_at_least(1)
_non_negative_int = _int_at_least(0)


def _add_simulate(sub: argparse._SubParsersAction) -> None:
    from pkg_perception.sim.layout import SCENE_KINDS

    p = sub.add_parser(
        'simulate',
        help='record a simulated RGB-D conveyor camera as a rosbag2',
        description='Render parcels riding a conveyor under a downward RGB-D camera and write '
        'a rosbag2 (colour, aligned depth, camera_info, /tf_static, ground truth).',
    )
    p.add_argument('--out', type=Path, required=True, help='bag directory to create')
    p.add_argument(
        '--frames', type=_positive_int, default=150, help='frames to record (default 150)'
    )
    p.add_argument('--seed', type=_non_negative_int, default=0, help='random seed (default 0)')
    p.add_argument('--storage', choices=('mcap', 'sqlite3'), default='mcap')
    p.add_argument('--scene', choices=SCENE_KINDS, default='mixed')
    p.add_argument('--preview', type=Path, help='write a contact sheet PNG of the recording')
    p.add_argument('--fps', type=float, default=15.0, help='frame rate, Hz (default 15)')
    p.add_argument('--belt-speed', type=float, default=0.3, help='belt speed, m/s (default 0.3)')
    p.add_argument('--width', type=_positive_int, default=640)
    p.add_argument('--height', type=_positive_int, default=480)
    p.add_argument(
        '--workers',
        type=_positive_int,
        default=min(2, os.cpu_count() or 1),
        help='rendering processes (default: up to 2)',
    )
    p.add_argument('--overwrite', action='store_true', help='replace an existing bag at --out')
    p.add_argument('--quiet', action='store_true', help='no progress bar')
    p.set_defaults(func=_cmd_simulate)


def _cmd_simulate(args: argparse.Namespace) -> int:
    from pkg_perception.bag.reader import BagFrameReader
    from pkg_perception.sim.preview import write_contact_sheet
    from pkg_perception.sim.record import record_bag
    from pkg_perception.sim.simulator import SimConfig

    config = SimConfig(
        width=args.width,
        height=args.height,
        fps=args.fps,
        belt_speed=args.belt_speed,
        scene=args.scene,
    )
    result = record_bag(
        args.out,
        frames=args.frames,
        seed=args.seed,
        config=config,
        storage=args.storage,
        overwrite=args.overwrite,
        workers=args.workers,
        progress=not args.quiet,
    )
    rate = result.frames / max(result.seconds, 1e-9)
    status = 'interrupted, ' if result.interrupted else ''
    print(
        f'wrote {result.path} ({args.storage}): {result.frames}/{result.requested} frames, '
        f'{status}{result.seconds:.1f} s, {rate:.1f} frames/s'
    )
    with BagFrameReader(result.path) as reader:
        counts = reader.message_counts
        print('topics:')
        for topic, n in sorted(counts.items()):
            print(f'  {topic:45s} {n:6d} messages')
        picks: list = []
        classes: Counter[str] = Counter()
        seen: set[int] = set()
        wanted = (
            {round(i * (result.frames - 1) / 2) for i in range(3)}
            if result.frames > 2
            else set(range(result.frames))
        )
        for k, frame in enumerate(reader.frames()):
            for p in frame.ground_truth.truth.parcels if frame.ground_truth else ():
                if p.parcel_id not in seen:
                    seen.add(p.parcel_id)
                    classes[p.parcel_class.label] += 1
            if k in wanted:
                picks.append(frame)
    print(
        f'parcels seen: {len(seen)} ('
        + ', '.join(f'{c} {n}' for c, n in sorted(classes.items()))
        + ')'
    )
    if args.preview:
        write_contact_sheet(
            picks,
            args.preview,
            f'{result.path.name}: seed {args.seed}, scene {args.scene}, {result.frames} frames',
        )
        print(f'preview: {args.preview}')
    return 130 if result.interrupted else 0


def _add_benchmark_sim(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser('benchmark-sim', help='measure simulator frame rate at 640x480 with piles')
    p.add_argument('--frames', type=_positive_int, default=60)
    p.add_argument('--seed', type=_non_negative_int, default=0)
    p.add_argument(
        '--doc',
        type=Path,
        default=Path('docs/benchmarks.md'),
        help='markdown file to update (default docs/benchmarks.md)',
    )
    p.set_defaults(func=_cmd_benchmark_sim)


def _cmd_benchmark_sim(args: argparse.Namespace) -> int:
    from pkg_perception.benchmarks import benchmark_simulator

    print(benchmark_simulator(frames=args.frames, seed=args.seed, doc=args.doc))
    print(f'written to {args.doc}')
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The `pkg-perception` argument parser."""
    parser = argparse.ArgumentParser(prog='pkg-perception', description=__doc__)
    sub = parser.add_subparsers(dest='command', required=True)
    _add_simulate(sub)
    _add_benchmark_sim(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the process exit code."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except PerceptionError as err:
        print(f'pkg-perception {args.command}: error: {err}', file=sys.stderr)
        return 2


if __name__ == '__main__':
    sys.exit(main())
