# Copyright 2026 The pkg_perception Authors
# SPDX-License-Identifier: Apache-2.0
"""`pkg-perception`: simulate, train, replay, evaluate, regress, benchmark: the offline jobs."""

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


def _blocks(text: str) -> tuple[int, ...]:
    try:
        blocks = tuple(int(b) for b in text.split(','))
    except ValueError:
        blocks = ()
    if not blocks or min(blocks) < 0:
        raise argparse.ArgumentTypeError(f'{text!r}: comma-separated counts, e.g. 0,2,3,2')
    return blocks


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
    p.add_argument(
        '--frames',
        type=_positive_int,
        default=150,
        help='frames per measurement (default 150, as simulate records)',
    )
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


def _add_train(sub: argparse._SubParsersAction) -> None:
    from pkg_perception.training.simdata import SimDataPlan
    from pkg_perception.training.train import PRECISIONS, TrainConfig

    d, plan = TrainConfig(), SimDataPlan()
    p = sub.add_parser(
        'train',
        help='train the segmenter on simulated frames, or fine-tune it on labelled images',
        description='Train ParcelNet from scratch on simulated conveyor frames (the default), '
        'or fine-tune a trained model on COCO-format RGB-D images (--coco). Resumes from '
        'OUT/last.pt when it exists.',
    )
    p.add_argument('--out', type=Path, default=Path('out/train/run'), help='run directory')
    p.add_argument('--cache', type=Path, default=Path('out/train/cache'), help='rendered data')
    p.add_argument('--steps', type=_positive_int, default=d.steps)
    p.add_argument('--batch-size', type=_positive_int, default=d.batch_size)
    p.add_argument('--lr', type=float, default=d.lr)
    p.add_argument('--seed', type=_non_negative_int, default=d.seed)
    p.add_argument('--threads', type=_positive_int, default=d.threads)
    p.add_argument(
        '--precision',
        choices=PRECISIONS,
        default=d.precision,
        help='bf16 runs the convolutions in bfloat16: about 0.7x the time a step on a CPU '
        f'with AVX512-BF16 or AMX (default {d.precision})',
    )
    p.add_argument(
        '--touching-weight',
        type=float,
        default=d.touching_weight,
        help='extra edge-loss weight on boundaries between touching parcels '
        f'(default {d.touching_weight})',
    )
    p.add_argument(
        '--instance-balance',
        type=float,
        default=d.instance_balance,
        help='edge-loss weight of a parcel goes as its area**-this, so slivers count '
        f'(default {d.instance_balance})',
    )
    p.add_argument(
        '--distill',
        type=float,
        default=d.distill_weight,
        help="share of the loss spent matching the --init model's output averaged with its "
        "mirror image's (self-distillation; 0 to 1, default "
        f'{d.distill_weight})',
    )
    p.add_argument(
        '--output-stride',
        type=int,
        choices=(1, 2),
        help='model input pixels per output pixel: 1 adds a full-resolution stage '
        f'(default: that of --init, else {d.output_stride})',
    )
    p.add_argument(
        '--embed-dims',
        type=_non_negative_int,
        help='embedding channels trained to tell touching parcels apart '
        f'(default: those of --init, else {d.embed_dims})',
    )
    p.add_argument(
        '--blocks',
        type=_blocks,
        help='residual blocks per stage, e.g. 0,2,3,2; more than --init has start as the '
        f'identity (default: those of --init, else {",".join(map(str, d.blocks))})',
    )
    p.add_argument(
        '--full-width',
        type=_positive_int,
        help='channels of the full-resolution stage (--output-stride 1); wider than --init '
        "starts from its channels (default: that of --init, else half the 1/2 stage's)",
    )
    p.add_argument(
        '--seeds', type=_positive_int, default=plan.seeds, help='simulated cells (seeds) to render'
    )
    p.add_argument(
        '--frames-per-seed', type=_positive_int, default=plan.frames_per_seed, help='per cell'
    )
    p.add_argument('--workers', type=_positive_int, default=2, help='rendering processes')
    p.add_argument(
        '--coco',
        type=Path,
        help='COCO annotations JSON of RGB-D images to fine-tune on (see docs/fine-tuning.md)',
    )
    p.add_argument(
        '--init',
        type=Path,
        help='weights to start from (default with --coco: the shipped models/parcelnet.pt)',
    )
    p.set_defaults(func=_cmd_train)


def _cmd_train(args: argparse.Namespace) -> int:
    from pkg_perception.training.run import run_training
    from pkg_perception.training.simdata import SimDataPlan
    from pkg_perception.training.train import TrainConfig

    config = TrainConfig(
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        seed=args.seed,
        threads=args.threads,
        precision=args.precision,
        touching_weight=args.touching_weight,
        instance_balance=args.instance_balance,
        distill_weight=args.distill,
    )
    plan = SimDataPlan(seeds=args.seeds, frames_per_seed=args.frames_per_seed)
    init = args.init
    if init is None and args.coco is not None:
        from pkg_perception.models import default_weights_path

        init = default_weights_path()
    path = run_training(
        args.out,
        config,
        cache=args.cache,
        plan=plan,
        coco=args.coco,
        init=init,
        output_stride=args.output_stride,
        embed_dims=args.embed_dims,
        blocks=args.blocks,
        full_width=args.full_width,
        workers=args.workers,
    )
    print(f'weights written to {path}; export with: pkg-perception export --weights {path}')
    return 0


def _add_export(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        'export',
        help='export trained weights to ONNX (opset 18, metadata, parity-checked)',
        description='Write an ONNX model with its metadata_props, run onnx.checker, and compare '
        'ONNX Runtime with PyTorch on the same input. The weights are copied next to the model '
        '(same name, .pt) for fine-tuning.',
    )
    p.add_argument('--weights', type=Path, default=Path('out/train/run/model.pt'))
    p.add_argument('--out', type=Path, default=Path('models/parcelnet.onnx'))
    p.add_argument(
        '--input-size',
        type=_positive_int,
        nargs=2,
        metavar=('W', 'H'),
        help='model input size (multiples of 16; default: the size it was trained at)',
    )
    p.set_defaults(func=_cmd_export)


def _cmd_export(args: argparse.Namespace) -> int:
    from pkg_perception.training.export import describe, export_onnx

    report = export_onnx(
        args.weights, args.out, input_size=tuple(args.input_size) if args.input_size else None
    )
    print(describe(report))
    return 0


def _add_quantize(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        'quantize',
        help="write a model's INT8 sibling for the CPU provider (after fit-instance-head)",
        description='Quantize the stages at stride 8 and coarser to 8-bit (static, calibrated '
        'on simulated frames) and keep the finer ones float; write MODEL.int8.onnx with the '
        "float model's metadata and its SHA-256, which the runtime checks before running it "
        'on a CPU in place of MODEL. Run it again after every change to MODEL.',
    )
    p.add_argument('--model', type=Path, default=Path('models/parcelnet.onnx'))
    p.add_argument('--out', type=Path, help='default: MODEL with .int8.onnx')
    p.add_argument(
        '--min-stride',
        type=_positive_int,
        default=8,
        help='quantize nodes whose output is at this stride or coarser (default 8)',
    )
    p.add_argument('--cells', type=_positive_int, default=8, help='simulated calibration cells')
    p.add_argument('--frames-per-cell', type=_positive_int, default=6)
    p.set_defaults(func=_cmd_quantize)


def _cmd_quantize(args: argparse.Namespace) -> int:
    from pkg_perception.training.quantize import quantize_model

    report = quantize_model(
        args.model,
        args.out,
        min_stride=args.min_stride,
        cells=args.cells,
        frames_per_cell=args.frames_per_cell,
    )
    print(report.to_json())
    return 0


def _add_evaluate_segmentation(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        'evaluate-segmentation',
        help='COCO mask AP of the model and the geometric baseline on a simulated bag',
        description='COCO mask AP of what the pipeline publishes (classes pooled along '
        "each parcel's track) for the model and the geometric baseline, and of the model's "
        'own frame-by-frame output; then what became of each visible parcel (found, wrong '
        'class, merged with a neighbour, split, missed), by class and by visible area',
    )
    p.add_argument('bag', type=Path)
    p.add_argument('--model', type=Path, help='ONNX model (default: the shipped one)')
    p.add_argument(
        '--every',
        type=_positive_int,
        default=1,
        help='score every N-th frame (all frames still run: the tracker needs them)',
    )
    p.add_argument('--frames', type=_positive_int, help='stop after this many scored frames')
    p.add_argument('--json', type=Path, help='write the figures as JSON')
    p.add_argument('--preview', type=Path, help='PNG: ground truth | model | baseline on piles')
    p.add_argument(
        '--config',
        type=Path,
        help='ROS 2 parameter file (default: config/perception.yaml, else built-in defaults)',
    )
    p.add_argument(
        '--set',
        action='append',
        default=[],
        metavar='KEY=VALUE',
        help='override one setting, e.g. --set tracking.class_memory=0 (repeatable)',
    )
    p.set_defaults(func=_cmd_evaluate_segmentation)


def _cmd_evaluate_segmentation(args: argparse.Namespace) -> int:
    import json

    from pkg_perception.cli_replay import load_cli_config
    from pkg_perception.config import build_segmenter
    from pkg_perception.evaluation.mask_errors import format_errors
    from pkg_perception.evaluation.segmentation import evaluate_bag, format_table
    from pkg_perception.segmentation.geometric import GeometricSegmenter

    config = load_cli_config(args)
    results = evaluate_bag(
        args.bag,
        {'model': build_segmenter(config.segmentation), 'geometric': GeometricSegmenter()},
        every=args.every,
        max_frames=args.frames,
        preview=args.preview,
        grasping=config.grasping,
        tracking=config.tracking,
    )
    print(format_table(results))
    print('\nWhat became of each visible parcel at IoU 0.5 (each mask once, its top class):')
    print(format_errors(results))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=1))
    return 0


def _add_benchmark_training(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        'benchmark-training', help='seconds per training step, by precision and memory layout'
    )
    p.add_argument('--steps', type=_positive_int, default=30, help='timed steps per variant')
    p.add_argument('--seed', type=_non_negative_int, default=0, help='simulated cell')
    p.add_argument('--doc', type=Path, default=Path('docs/benchmarks.md'))
    p.set_defaults(func=_cmd_benchmark_training)


def _cmd_benchmark_training(args: argparse.Namespace) -> int:
    from pkg_perception.training.benchmark import benchmark_training

    print(benchmark_training(steps=args.steps, seed=args.seed, doc=args.doc))
    print(f'written to {args.doc}')
    return 0


def _add_benchmark_segmentation(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        'benchmark-segmentation', help='segmentation latency at 640x480, model and baseline'
    )
    p.add_argument('--model', type=Path, help='ONNX model (default: the shipped one)')
    p.add_argument('--runs', type=_positive_int, default=300)
    p.add_argument('--seed', type=_non_negative_int, default=5)
    p.add_argument(
        '--providers',
        nargs='+',
        default=['cpu'],
        choices=('tensorrt', 'cuda', 'cpu'),
        help='ONNX Runtime providers in order (default cpu)',
    )
    p.add_argument(
        '--mirror-pass',
        default='gpu',
        choices=('gpu', 'always', 'never'),
        help='segmentation.mirror_pass: also run the mirror image (default gpu: on GPU providers)',
    )
    p.add_argument('--doc', type=Path, default=Path('docs/benchmarks.md'))
    p.set_defaults(func=_cmd_benchmark_segmentation)


def _cmd_benchmark_segmentation(args: argparse.Namespace) -> int:
    from pkg_perception.models import default_model_path
    from pkg_perception.segmentation.benchmark import benchmark_segmentation

    print(
        benchmark_segmentation(
            args.model or default_model_path(),
            runs=args.runs,
            seed=args.seed,
            doc=args.doc,
            providers=tuple(args.providers),
            mirror_pass=args.mirror_pass,
        )
    )
    return 0


def _add_evaluate_grasps(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        'evaluate-grasps',
        help='grasp top-1 success, recall and tracking id consistency on a simulated bag',
        description='Run the pipeline over a simulated bag and score its grasps against the '
        'ground truth: a grasp succeeds on the visible top face of a parcel nothing rests on, '
        'a cup radius inside its edge, within 10 degrees and 5 mm.',
    )
    p.add_argument('bag', type=Path, help='bag recorded by `pkg-perception simulate`')
    p.add_argument(
        '--segmenter',
        choices=('ground-truth', 'geometric'),
        default='ground-truth',
        help='ground-truth: the simulator masks (scores grasping alone); geometric: the '
        'depth-only baseline',
    )
    p.add_argument('--frames', type=_positive_int, help='stop after this many frames')
    p.add_argument('--target-frame', default='base_link', help='frame of the output poses')
    p.add_argument('--overlay', type=Path, help='PNG of the busiest frame with ranked grasps')
    p.add_argument(
        '--overlay-scale', type=float, default=1.0, help='scale the overlay PNG (default 1)'
    )
    p.add_argument(
        '--pile-order',
        choices=('estimated', 'truth-in-view'),
        default='estimated',
        help="estimated: the pipeline's own; truth-in-view: the simulator's among the parcels "
        'in view, the most a better pile order could give',
    )
    p.add_argument('--json', type=Path, help='write the figures as JSON')
    p.set_defaults(func=_cmd_evaluate_grasps)


def _cmd_evaluate_grasps(args: argparse.Namespace) -> int:
    import json

    import numpy as np

    from pkg_perception.evaluation.grasps import evaluate_bag
    from pkg_perception.visualize import draw_overlay, write_png

    if args.segmenter == 'geometric':
        from pkg_perception.segmentation.geometric import GeometricSegmenter

        segmenter = GeometricSegmenter()
    else:
        from pkg_perception.segmentation.oracle import GroundTruthSegmenter

        segmenter = GroundTruthSegmenter()
    busiest: dict = {}
    count = [0]

    def keep_busiest(frame, result, verdict) -> None:
        served = len({g.parcel_id for g in result.grasps})
        if args.overlay and result.grasps and served > busiest.get('served', -1):
            busiest.update(
                served=served, frame=frame, result=result, verdict=verdict, index=count[0]
            )
        count[0] += 1

    evaluation = evaluate_bag(
        args.bag,
        segmenter,
        target_frame=args.target_frame,
        max_frames=args.frames,
        on_frame=keep_busiest,
        pile_order=args.pile_order,
    )
    g, t = evaluation.summary['grasping'], evaluation.summary['tracking']
    print(
        f'{evaluation.segmenter} masks, {args.pile_order} pile order: top-1 success '
        f'{g["top1_success"]:.3f} '
        f'({g["top1_successes"]}/{g["frames_with_grasp"]} frames with a grasp, '
        f'{g["frames_missing_grasp"]} frames with a graspable parcel but no grasp)'
    )
    print(
        f'recall of graspable parcels {g["recall"]:.3f} '
        f'({g["served_parcel_frames"]}/{g["graspable_parcel_frames"]} parcel-frames); '
        f'top-1 failures: {g["top1_failures"] or "none"}'
    )
    print(
        f'pile order (something rests on the parcel): precision '
        f'{g["pile_order_precision"]:.3f} of {g["pile_order_said_under"]} parcel-frames said '
        f'under, recall {g["pile_order_recall"]:.3f} of {g["pile_order_truly_under"]} truly under'
    )
    print(
        f'tracking id consistency {t["id_consistency"]:.3f} over {t["parcels"]} parcels '
        f'({t["id_switches"]} id switches, {t["id_switches_at_split"]} where a mask was cut '
        'or joined)'
    )
    latency = {
        stage: {q: float(np.percentile(v, q)) for q in (50, 99)}
        for stage, v in evaluation.timings_ms.items()
    }
    line = ', '.join(f'{s} {v[50]:.2f}' for s, v in latency.items())
    print(f'latency p50 ms: {line}')
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        out = {
            'segmenter': evaluation.segmenter,
            'pile_order': args.pile_order,
            **evaluation.summary,
            'latency_ms': latency,
        }
        args.json.write_text(json.dumps(out, indent=1))
    if args.overlay and busiest:
        frame, result, verdict = busiest['frame'], busiest['result'], busiest['verdict']
        t_cam = frame.transforms.lookup(frame.frame_id, result.frame_id)
        verdicts = [c.success for c in verdict.checks] if verdict else None
        best = result.grasps[0]
        caption = (
            f'{args.bag.name} frame {busiest["index"]}, {evaluation.segmenter} masks: '
            f'#1 {best.kind.value} on parcel {best.parcel_id}, score {best.score:.2f}'
            + (f', {"succeeds" if verdicts[0] else "fails"}' if verdicts else '')
            + ' (green ok, red fails)'
        )
        image = draw_overlay(
            frame.color, result, frame.camera, t_cam, verdicts=verdicts, caption=caption
        )
        print(f'overlay: {write_png(args.overlay, image, scale=args.overlay_scale)}')
    return 0


def _add_benchmark_grasps(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        'benchmark-grasps',
        help='latency of lifting + grasp planning + tracking (10 parcels) and grasp accuracy',
    )
    p.add_argument('--frames', type=_positive_int, default=120, help='frames to simulate')
    p.add_argument('--seed', type=_non_negative_int, default=2)
    p.add_argument(
        '--bag',
        type=Path,
        action='append',
        default=[],
        help='held-out simulated bag for the accuracy table (repeatable)',
    )
    p.add_argument(
        '--bag-note',
        action='append',
        default=[],
        help='how each --bag was recorded, e.g. "seed 31337, mixed, 150 frames"',
    )
    p.add_argument(
        '--truth-pile-order',
        action='store_true',
        help="one more row per bag: ground-truth masks with the simulator's pile order among "
        'the parcels in view (what a perfect pile order from this view would give)',
    )
    p.add_argument('--doc', type=Path, default=Path('docs/benchmarks.md'))
    p.set_defaults(func=_cmd_benchmark_grasps)


def _cmd_benchmark_grasps(args: argparse.Namespace) -> int:
    from pkg_perception.grasp_benchmark import benchmark_grasping

    notes = args.bag_note + [''] * (len(args.bag) - len(args.bag_note))
    bags = list(zip(args.bag, notes, strict=False))
    print(
        benchmark_grasping(
            frames=args.frames,
            seed=args.seed,
            bags=bags,
            doc=args.doc,
            truth_pile_order=args.truth_pile_order,
        )
    )
    print(f'written to {args.doc}')
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The `pkg-perception` argument parser."""
    parser = argparse.ArgumentParser(prog='pkg-perception', description=__doc__)
    sub = parser.add_subparsers(dest='command', required=True)
    _add_simulate(sub)
    _add_benchmark_sim(sub)
    _add_train(sub)
    _add_export(sub)
    _add_quantize(sub)
    from pkg_perception.cli_instance_head import add_command as add_fit_instance_head

    add_fit_instance_head(sub)
    _add_evaluate_segmentation(sub)
    _add_benchmark_segmentation(sub)
    _add_benchmark_training(sub)
    _add_evaluate_grasps(sub)
    _add_benchmark_grasps(sub)
    from pkg_perception.cli_replay import add_commands

    add_commands(sub)  # replay, evaluate, regress, benchmark
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the process exit code."""
    args = build_parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # recorded in run.json
    try:
        return int(args.func(args))
    except PerceptionError as err:
        print(f'pkg-perception {args.command}: error: {err}', file=sys.stderr)
        return 2


if __name__ == '__main__':
    sys.exit(main())
