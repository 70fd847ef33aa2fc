# Copyright 2026 The pkg_perception Authors
# SPDX-License-Identifier: Apache-2.0
"""Replay a bag through the pipeline the node runs: output bag, results.jsonl, run.json.

Every synchronized frame goes through `Pipeline.process`, and the outputs are built by the
node's own message builders with the node's settings (which outputs are on, tracking reset
on a clock jump), so a replay shows what the cell would have published. A damaged input is
processed up to the damage, which is reported, never hidden.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from pkg_perception.bag.output import InputCopier, ReplayBagWriter
from pkg_perception.bag.reader import BagFrameReader
from pkg_perception.bag.topics import TopicMap
from pkg_perception.errors import BagError, PerceptionError
from pkg_perception.frames import RGBDFrame
from pkg_perception.records import ResultsWriter, result_record
from pkg_perception.results import PerceptionResult

RESULTS_FILE = 'results.jsonl'
RUN_FILE = 'run.json'
OUTPUT_BAG = 'replay.bag'
SALVAGE_DIR = '.salvaged.bag'
# Everything a replay or an evaluation writes into its directory; --overwrite removes these.
ARTEFACTS = (RESULTS_FILE, RUN_FILE, OUTPUT_BAG, SALVAGE_DIR, 'report.html', 'metrics.json')
RUN_SCHEMA = 'pkg_perception/replay/v1'


class PipelineLike(Protocol):
    """What a replay needs: `process` (and optionally `reset`, called on a clock jump)."""

    def process(self, frame: RGBDFrame) -> PerceptionResult: ...


@dataclass(frozen=True)
class ReplayOptions:
    """How to replay; the pipeline's own settings come from the config."""

    rate: float = 0.0  # 0: as fast as possible; 1.0: the recorded rate; 2.0: twice as fast
    storage: str = 'mcap'
    namespace: str = '/perception_node'  # where the node's outputs go in the output bag
    copy_inputs: bool = True  # the input's messages next to the outputs
    max_frames: int | None = None
    progress: bool = True
    publish_markers: bool = True
    publish_overlay: bool = True
    publish_points: bool = False
    points_stride: int = 2
    max_frame_gap_s: float = 1.0  # reset tracking across a longer gap, as the node does


@dataclass
class ReplaySummary:
    """What a replay did; also written to run.json with the provenance the caller adds."""

    out_dir: Path
    input_bag: Path
    frames: int = 0
    skipped: int = 0
    skip_reasons: list[str] = field(default_factory=list)
    damage: str = ''  # '' when the input was read to its end
    interrupted: bool = False
    seconds: float = 0.0
    has_ground_truth: bool = False
    segmenter: str = ''
    provider: str = ''
    tracker_resets: int = 0
    skipped_topics: list[str] = field(default_factory=list)
    topics: dict[str, str] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def results_path(self) -> Path:
        return self.out_dir / RESULTS_FILE

    @property
    def bag_path(self) -> Path:
        return self.out_dir / OUTPUT_BAG


def prepare_out_dir(out: Path, *, overwrite: bool) -> None:
    """Refuse a directory holding a previous run unless asked; never touch other files."""
    if out.exists() and not out.is_dir():
        raise BagError(f'--out {out} is a file; give a directory')
    if out.exists() and any(out.iterdir()):
        ours = [out / name for name in ARTEFACTS if (out / name).exists()]
        others = [p.name for p in out.iterdir() if p not in ours]
        if not overwrite:
            raise BagError(
                f'{out} already exists and is not empty; choose another --out or pass '
                '--overwrite to replace a previous run there'
            )
        if others:
            raise BagError(
                f'{out} holds files a replay did not write ({", ".join(sorted(others)[:5])}); '
                'refusing to overwrite it: choose an empty or new --out'
            )
        for p in ours:
            shutil.rmtree(p) if p.is_dir() else p.unlink()
    out.mkdir(parents=True, exist_ok=True)


def open_input(bag: Path, work: Path) -> tuple[Path, str]:
    """The bag to read and '' , or a salvaged copy and what was wrong with the original."""
    from rosbags.rosbag2 import Reader

    from pkg_perception.bag.salvage import salvage_bag

    if not bag.exists():
        raise BagError(f'bag {bag} does not exist; check the path')
    try:
        reader = Reader(bag)
        reader.open()
        reader.close()
        return bag, ''
    except Exception as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
    result = salvage_bag(bag, work)
    return work, (
        f'input {bag} could not be opened ({reason}); read the {result.messages} messages '
        f'before the damage ({result.damage})'
    )


def replay_bag(
    bag: Path,
    out: Path,
    pipeline: PipelineLike,
    *,
    topics: TopicMap | None = None,
    options: ReplayOptions | None = None,
    overwrite: bool = False,
    provenance: dict[str, Any] | None = None,
) -> ReplaySummary:
    """Run every synchronized frame of `bag` through `pipeline`; write the outputs to `out`.

    Writes `out/replay.bag` (input topics plus the node's outputs), `out/results.jsonl`
    (one record per frame, see pkg_perception.records) and `out/run.json` (what ran on
    what, how it went). `provenance` (config, model, command) goes into run.json as is.

    Raises:
        BagError: the bag is missing, lacks a required topic (the message names the topics
            it has and the remap flags), or has no readable frame; `out` is not free.
    """
    from tqdm import tqdm

    from pkg_perception.bag.types import typestore
    from pkg_perception.ros import messages
    from pkg_perception.ros.policy import ClockJumpDetector

    opts = options or ReplayOptions()
    topics = topics or TopicMap()
    created = not out.exists()
    prepare_out_dir(out, overwrite=overwrite)
    try:
        source, damage = open_input(Path(bag), out / SALVAGE_DIR)
    except BaseException:
        _discard(out, created)
        raise
    summary = ReplaySummary(
        out_dir=out,
        input_bag=Path(bag),
        damage=damage,
        topics=asdict(topics),
        options=asdict(opts),
    )
    start = time.perf_counter()
    try:
        with BagFrameReader(source, topics=topics) as reader:
            summary.has_ground_truth = reader.has_ground_truth
            total = reader.message_counts.get(topics.color, 0)
            if opts.max_frames is not None:
                total = min(total, opts.max_frames)
            types = messages.MessageTypes.from_typestore(typestore())
            markers = messages.MarkerState()
            jumps = ClockJumpDetector(opts.max_frame_gap_s)
            with (
                ReplayBagWriter(
                    out / OUTPUT_BAG, namespace=opts.namespace, storage=opts.storage
                ) as bag_out,
                ResultsWriter(out / RESULTS_FILE) as results,
                InputCopier(source, bag_out) if opts.copy_inputs else _NoCopy() as copier,
                tqdm(total=total, unit='frame', desc='replay', disable=not opts.progress) as bar,
            ):
                frames = reader.frames()
                first: tuple[int, float] | None = None
                while opts.max_frames is None or summary.frames < opts.max_frames:
                    try:
                        frame = next(frames)
                    except StopIteration:
                        break
                    except BagError as err:
                        if summary.frames == 0 and not summary.skipped:
                            raise
                        summary.damage = '; '.join(filter(None, (summary.damage, str(err))))
                        break
                    if jumps.observe(frame.stamp_ns) is not None:
                        reset = getattr(pipeline, 'reset', None)
                        if callable(reset):
                            reset()
                        markers.reset()
                        summary.tracker_resets += 1
                    first = _pace(first, frame.stamp_ns, opts.rate)
                    try:
                        result = pipeline.process(frame)
                    except PerceptionError as err:
                        summary.skipped += 1
                        if len(summary.skip_reasons) < 10:
                            summary.skip_reasons.append(f'{frame.stamp_ns}: {err}')
                        bar.update()
                        continue
                    copier.advance(frame.stamp_ns)
                    _write_outputs(bag_out, types, markers, frame, result, opts)
                    results.write(result_record(result, frame=summary.frames))
                    summary.frames += 1
                    summary.segmenter = result.segmenter or summary.segmenter
                    summary.provider = result.provider or summary.provider
                    bar.update()
                if summary.frames and opts.max_frames is None:
                    copier.advance(None)
                if copier.error:
                    summary.damage = summary.damage or copier.error
                summary.skipped_topics = list(bag_out.skipped_topics)
    except KeyboardInterrupt:
        summary.interrupted = True
    except BaseException:
        if summary.frames == 0:  # nothing worth keeping: leave --out as it was
            _discard(out, created)
            raise
        summary.damage = summary.damage or 'the replay stopped on an error (see the log)'
        _finish(summary, start, provenance)
        raise
    _finish(summary, start, provenance)
    return summary


def _finish(summary: ReplaySummary, start: float, provenance: dict[str, Any] | None) -> None:
    summary.seconds = time.perf_counter() - start
    shutil.rmtree(summary.out_dir / SALVAGE_DIR, ignore_errors=True)
    write_run_file(summary, provenance or {})


def _discard(out: Path, created: bool) -> None:
    """Remove what a failed replay wrote (and `out` itself if this replay made it)."""
    for name in ARTEFACTS:
        p = out / name
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
        elif p.exists():
            p.unlink()
    if created and out.is_dir() and not any(out.iterdir()):
        out.rmdir()


class _NoCopy:
    error = ''

    def advance(self, until_ns: int | None = None) -> None:
        pass

    def __enter__(self) -> _NoCopy:
        return self

    def __exit__(self, *exc: object) -> None:
        pass


def _pace(first: tuple[int, float] | None, stamp_ns: int, rate: float) -> tuple[int, float]:
    """Sleep until the frame is due at `rate` times the recorded speed (0: never sleep)."""
    now = time.perf_counter()
    if first is None:
        return stamp_ns, now
    if rate > 0:
        due = first[1] + (stamp_ns - first[0]) * 1e-9 / rate
        if due > now:
            time.sleep(due - now)
    return first


def _write_outputs(
    out: ReplayBagWriter,
    types: Any,
    markers: Any,
    frame: RGBDFrame,
    result: PerceptionResult,
    opts: ReplayOptions,
) -> None:
    """The node's outputs of one frame (same builders, same switches)."""
    from pkg_perception.ros import messages

    stamp = result.stamp_ns
    out.write_output('detections', stamp, messages.detections(types, result))
    out.write_output('grasps', stamp, messages.grasp_poses(types, result))
    if opts.publish_markers:
        out.write_output('markers', stamp, markers.build(types, result))
    if opts.publish_overlay:
        out.write_output('overlay', stamp, messages.overlay(types, frame, result))
    if opts.publish_points:
        out.write_output(
            'points', stamp, messages.points(types, frame, result, opts.points_stride)
        )


def write_run_file(summary: ReplaySummary, provenance: dict[str, Any]) -> Path:
    """run.json: the summary plus provenance (config, model, command)."""
    data = {
        'schema': RUN_SCHEMA,
        **{k: v for k, v in asdict(summary).items() if k not in ('out_dir', 'input_bag')},
        'input_bag': str(summary.input_bag.resolve()),
        'output_bag': OUTPUT_BAG,
        'copy_inputs': bool(summary.options.get('copy_inputs', True)),
        'results': RESULTS_FILE,
        **provenance,
    }
    path = summary.out_dir / RUN_FILE
    path.write_text(json.dumps(data, indent=2, default=str) + '\n')
    return path


def read_run_file(directory: Path) -> dict[str, Any]:
    """run.json of a replay directory ({} when absent)."""
    path = directory / RUN_FILE
    if not path.is_file():
        return {}
    return dict(json.loads(path.read_text()))


SEGMENTERS = ('model', 'geometric', 'ground-truth')


def build_replay_pipeline(config: Any, segmenter: str | None = None) -> tuple[Any, dict[str, Any]]:
    """The pipeline for `config` with the named segmenter, and its provenance for run.json.

    `segmenter`: 'model' (the configured ONNX model; falls back to the geometric one only
    when segmentation.fallback_to_geometric allows), 'geometric', 'ground-truth' (the
    simulator's masks: scores grasping and tracking alone), or None (as configured).

    Raises:
        ModelError: the model cannot be loaded and the config allows no fallback.
        ConfigError: an unknown segmenter name.
    """
    from pkg_perception.config import build_pipeline, build_segmenter
    from pkg_perception.errors import ConfigError, ModelError

    if segmenter not in (None, *SEGMENTERS):
        raise ConfigError(f'segmenter {segmenter!r} unknown; choose {", ".join(SEGMENTERS)}')
    if segmenter == 'ground-truth':
        from pkg_perception.segmentation.oracle import GroundTruthSegmenter

        seg: Any = GroundTruthSegmenter()
    else:
        if segmenter is not None:
            config = config.with_overrides(
                {'segmentation.use_geometric': segmenter == 'geometric'}, source='--segmenter'
            )
        try:
            seg = build_segmenter(config.segmentation)
        except ModelError as err:
            raise ModelError(f'{err}; or pass --segmenter geometric') from None
    return build_pipeline(config, segmenter=seg), {
        'segmenter': getattr(seg, 'name', ''),
        'provider': getattr(seg, 'provider', ''),
        'model': model_provenance(seg),
        'config': config.to_flat(),
    }


def model_provenance(segmenter: Any) -> dict[str, Any]:
    """File, checksum and metadata of an ONNX segmenter ({} for the others)."""
    import hashlib

    path = getattr(segmenter, 'path', None)
    if path is None:
        return {}
    digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()
    meta = getattr(segmenter, 'metadata', None)
    info: dict[str, Any] = {'path': str(path), 'sha256': digest}
    if meta is not None:
        info.update(
            name=meta.name, version=meta.version, input_size=[meta.spec.width, meta.spec.height]
        )
    return info
