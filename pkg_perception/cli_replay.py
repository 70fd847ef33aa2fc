# Copyright 2026 The pkg_perception Authors
# SPDX-License-Identifier: Apache-2.0
"""`pkg-perception replay | evaluate | regress | benchmark`: the offline main job.

Exit codes: 0 done; 1 a regression (regress); 2 an error (the message says the fix);
3 the input bag is damaged and the outputs cover the frames before the damage;
130 interrupted (outputs cover the frames done).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

EXIT_REGRESSION = 1
EXIT_DAMAGED = 3
EXIT_INTERRUPTED = 130


def default_config_path() -> Path | None:
    """config/perception.yaml: installed share directory, else the source tree, else None."""
    try:
        from ament_index_python.packages import get_package_share_directory

        shared = Path(get_package_share_directory('pkg_perception')) / 'config' / 'perception.yaml'
        if shared.is_file():
            return shared
    except Exception:
        pass
    repo = Path(__file__).resolve().parents[1] / 'config' / 'perception.yaml'
    return repo if repo.is_file() else None


def command_line(args: argparse.Namespace) -> str:
    """The command line as typed (main() records it), for run.json and the docs."""
    import shlex

    return 'pkg-perception ' + ' '.join(shlex.quote(a) for a in getattr(args, 'argv', []))


def setup_logging() -> None:
    logging.basicConfig(level=logging.WARNING, format='pkg-perception: %(levelname)s: %(message)s')


def _add_pipeline_args(p: argparse.ArgumentParser) -> None:
    from pkg_perception.replay import SEGMENTERS

    g = p.add_argument_group('pipeline')
    g.add_argument(
        '--config',
        type=Path,
        help='ROS 2 parameter file (default: config/perception.yaml, else built-in defaults)',
    )
    g.add_argument(
        '--set',
        action='append',
        default=[],
        metavar='KEY=VALUE',
        help='override one setting, e.g. --set grasping.min_score=0.4 (repeatable)',
    )
    g.add_argument(
        '--segmenter',
        choices=SEGMENTERS,
        help='model: the ONNX model (segmentation.model_path; default), geometric: depth-only '
        'baseline, ground-truth: the simulator masks (scores grasping and tracking alone)',
    )
    g.add_argument('--model', type=Path, help='ONNX model file (sets segmentation.model_path)')


def _add_topic_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group('input topics (defaults: realsense2_camera, aligned depth)')
    g.add_argument('--camera-ns', help="camera namespace, e.g. '/camera/camera' (realsense 4.x)")
    g.add_argument('--color-topic', help='colour image topic (absolute, or under --camera-ns)')
    g.add_argument(
        '--depth-topic', help='depth aligned to colour (absolute, or under --camera-ns)'
    )
    g.add_argument('--info-topic', help='colour camera_info (absolute, or under --camera-ns)')


def _add_replay_args(p: argparse.ArgumentParser) -> None:
    from pkg_perception.cli import _positive_int

    g = p.add_argument_group('replay')
    g.add_argument(
        '--rate',
        type=float,
        default=0.0,
        help='0: as fast as possible (default); 1: the recorded rate; 2: twice as fast',
    )
    g.add_argument('--storage', choices=('mcap', 'sqlite3'), default='mcap', help='output bag')
    g.add_argument('--max-frames', type=_positive_int, help='stop after this many frames')
    g.add_argument(
        '--no-copy-inputs',
        action='store_true',
        help='output bag with the outputs only (smaller; evaluation then reads the input bag)',
    )
    g.add_argument('--overwrite', action='store_true', help='replace a previous run in --out')
    g.add_argument('--quiet', action='store_true', help='no progress bar')


def load_cli_config(args: argparse.Namespace) -> Any:
    """The config file (or defaults) with --model and --set applied."""
    from pkg_perception.config import load_config, parse_override

    overrides = dict(parse_override(s) for s in args.set)
    if args.model is not None:
        overrides['segmentation.model_path'] = str(args.model)
    path = args.config if args.config is not None else default_config_path()
    return load_config(path, overrides=overrides)


def topic_map(args: argparse.Namespace, config: Any) -> Any:
    """Input topics: the config's node section, then the remap flags."""
    from pkg_perception.bag.topics import TopicMap

    node = config.node
    ns = args.camera_ns if args.camera_ns is not None else node.camera_namespace
    base = TopicMap.for_camera(ns)
    prefix = '/' + ns.strip('/') if ns.strip('/') else ''

    def full(flag: str | None, relative: str) -> str:
        name = flag if flag is not None else relative
        return name if name.startswith('/') else f'{prefix}/{name}'

    return TopicMap(
        color=full(args.color_topic, node.color_topic),
        color_info=full(args.info_topic, node.camera_info_topic),
        depth=full(args.depth_topic, node.depth_topic),
        depth_info=base.depth_info,
    )


def _replay(args: argparse.Namespace, bag: Path, out: Path) -> Any:
    from pkg_perception.config import NODE_NAME
    from pkg_perception.replay import ReplayOptions, build_replay_pipeline, replay_bag

    setup_logging()
    config = load_cli_config(args)
    topics = topic_map(args, config)
    if args.segmenter == 'ground-truth':
        _require_truth(bag, topics)
    pipeline, provenance = build_replay_pipeline(config, args.segmenter)
    provenance['command'] = command_line(args)
    node = config.node
    options = ReplayOptions(
        rate=args.rate,
        storage=args.storage,
        namespace='/' + NODE_NAME,
        copy_inputs=not args.no_copy_inputs,
        max_frames=args.max_frames,
        progress=not args.quiet,
        publish_markers=node.publish_markers,
        publish_overlay=node.publish_overlay,
        publish_points=node.publish_points,
        points_stride=node.points_stride,
        max_frame_gap_s=config.tracking.max_gap_s,
    )
    summary = replay_bag(
        bag,
        out,
        pipeline,
        topics=topics,
        options=options,
        overwrite=args.overwrite,
        provenance=provenance,
    )
    rate = summary.frames / max(summary.seconds, 1e-9)
    print(
        f'replayed {summary.frames} frames of {bag} in {summary.seconds:.1f} s '
        f'({rate:.1f} frames/s) with {summary.segmenter} on {summary.provider}'
        + (f', {summary.skipped} skipped' if summary.skipped else '')
    )
    for reason in summary.skip_reasons[:3]:
        print(f'  skipped {reason}', file=sys.stderr)
    print(f'  {summary.bag_path}  (input topics + /{NODE_NAME}/* outputs)')
    print(f'  {summary.results_path}')
    if summary.damage:
        print(f'warning: {summary.damage}', file=sys.stderr)
    if summary.interrupted:
        print('interrupted: outputs hold the frames done so far', file=sys.stderr)
    return summary


def _require_truth(bag: Path, topics: Any) -> None:
    from pkg_perception.bag.reader import BagFrameReader
    from pkg_perception.errors import BagError

    try:
        with BagFrameReader(bag, topics=topics) as reader:
            counts = reader.message_counts
            truth = reader.has_ground_truth and counts.get(topics.gt_scene, 0) > 0
    except BagError:
        return  # the replay reports it (and salvages a damaged bag)
    if not truth:
        raise BagError(
            f'{bag} has no simulator ground truth (/ground_truth/*); --segmenter ground-truth '
            'needs a simulated bag: use --segmenter model or geometric'
        )


def _exit_code(summary: Any) -> int:
    if summary.interrupted:
        return EXIT_INTERRUPTED
    if not summary.frames:
        print('error: no frame was processed (see the reasons above)', file=sys.stderr)
        return 2
    return EXIT_DAMAGED if summary.damage else 0


# --- replay ------------------------------------------------------------------------------


def _add_replay(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        'replay',
        help='run every frame of a bag through the pipeline; output bag + results.jsonl',
        description='Replay a rosbag2 (simulated or from a real camera) through the pipeline '
        'the node runs. Writes DIR/replay.bag (input topics and the node outputs, for RViz or '
        'Foxglove), DIR/results.jsonl (per frame: parcels with class, score, 3D box and COCO '
        'RLE mask; grasps; stage timings) and DIR/run.json (config, model, damage).',
    )
    p.add_argument('bag', type=Path, help='input bag directory')
    p.add_argument('--out', type=Path, required=True, help='output directory')
    _add_pipeline_args(p)
    _add_topic_args(p)
    _add_replay_args(p)
    p.set_defaults(func=_cmd_replay)


def _cmd_replay(args: argparse.Namespace) -> int:
    summary = _replay(args, args.bag, args.out)
    if summary.frames:
        print(f'next: pkg-perception evaluate {args.out}')
    return _exit_code(summary)


# --- evaluate ----------------------------------------------------------------------------


def _add_evaluate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        'evaluate',
        help='metrics and report.html of a replay (replays a bag first)',
        description='Evaluate a replay directory, a results.jsonl, or a bag (replayed into '
        '--out first). With simulator ground truth: mask AP, grasp top-1 success and recall, '
        'tracking id consistency; always: counts and latency p50/p95/p99 per stage. Writes '
        'metrics.json and a self-contained report.html.',
    )
    p.add_argument('input', type=Path, help='replay directory, results.jsonl, or a bag')
    p.add_argument(
        '--out',
        type=Path,
        help='where to write (default: the replay directory; for a bag: out/replay/<bag name>)',
    )
    _add_pipeline_args(p)
    _add_topic_args(p)
    _add_replay_args(p)
    p.set_defaults(func=_cmd_evaluate)


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from pkg_perception.evaluation.evaluate import evaluate_results, is_bag

    code = 0
    source = args.input
    if not source.exists():
        from pkg_perception.errors import InputError

        raise InputError(f'{source} does not exist; give a replay directory or a bag')
    if is_bag(source):
        out = args.out or Path('out/replay') / source.name
        summary = _replay(args, source, out)
        code = _exit_code(summary)
        if not summary.frames:
            return code
        source, out_dir = out, out
    else:
        out_dir = args.out
    setup_logging()
    result = evaluate_results(source, out=out_dir, progress=not args.quiet)
    print(summary_text(result.metrics))
    print(f'metrics: {result.metrics_path}')
    print(f'report:  {result.report_path.resolve()}')
    return code


def summary_text(m: dict[str, Any]) -> str:
    """A few lines for the terminal: the headline figures."""
    c, lat = m['counts'], m['latency_ms']
    lines = [
        f'{c["frames"]} frames, {c["parcels_per_frame"]:.1f} parcels and '
        f'{c["grasps_per_frame"]:.1f} grasps per frame, {c["track_ids"]} track ids'
    ]
    if 'total' in lat:
        t = lat['total']
        lines.append(
            f'latency end to end: p50 {t["p50"]:.1f} ms, p95 {t["p95"]:.1f} ms, '
            f'p99 {t["p99"]:.1f} ms ({m["fps"]:.1f} frames/s)'
        )
    seg = m.get('segmentation')
    if seg:
        lines.append(
            f'mask AP {seg["AP"]:.3f}, AP50 {seg["AP50"]:.3f}, AP75 {seg["AP75"]:.3f}, '
            f'pile frames AP {seg["piles"]["AP"]:.3f}'
        )
    for section in ('grasping', 'tracking'):
        if isinstance(m.get(section), dict):
            items = [
                f'{k} {v:.3f}' if isinstance(v, float) else f'{k} {v}'
                for k, v in m[section].items()
                if not isinstance(v, dict)
            ]
            lines.append(f'{section}: ' + ', '.join(items))
    if not m.get('ground_truth'):
        lines.append('no simulator ground truth in the bag: counts and latency only')
    return '\n'.join(lines)


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Register replay, evaluate, regress and benchmark."""
    from pkg_perception.cli_checks import add_benchmark, add_regress

    _add_replay(sub)
    _add_evaluate(sub)
    add_regress(sub)
    add_benchmark(sub)
