# Copyright 2026 The pkg_perception Authors
# SPDX-License-Identifier: Apache-2.0
"""Grasps and tracks scored against the simulator's ground truth.

A grasp succeeds when it lies on the visible top face of a single parcel that nothing rests
on, at least a cup radius inside that face's edge, with its approach axis within 10 degrees
of the face normal and its position within 5 mm of the face. The face is the ground truth's
plane rectangle; real surfaces (a dented lid, a poly bag's crown) depart from that plane by
up to the face's recorded `flatness`, so the position error is the distance to the plane
beyond that band. "On the visible face" is checked in the image: the grasp point must
project onto a pixel the ground-truth label image gives to that parcel.

Ground truth poses are in the `conveyor` frame; results in any frame the bag's /tf_static
connects to it.
"""

from __future__ import annotations

import itertools
import math
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from pkg_perception.errors import InputError
from pkg_perception.frames import CameraModel, RGBDFrame
from pkg_perception.geometry import project_points
from pkg_perception.grasping import GraspConfig
from pkg_perception.lifting import LiftedParcel
from pkg_perception.pipeline import Pipeline
from pkg_perception.results import GraspCandidate, Parcel, PerceptionResult
from pkg_perception.segmentation.belt import BeltPlane
from pkg_perception.segmentation.instances import Segmentation
from pkg_perception.sim.ground_truth import FrameTruth, GroundTruth, ParcelTruth
from pkg_perception.transforms import Matrix4

CONVEYOR_FRAME = 'conveyor'
PILE_ORDERS = ('estimated', 'truth-in-view')
MAX_NORMAL_ERROR_DEG = 10.0
MAX_POSITION_ERROR = 0.005


@dataclass(frozen=True)
class GraspCheck:
    """The verdict on one grasp and the measurements behind it.

    `reason` is 'ok' or the first rule it broke: 'outside_image', 'off_parcel' (projects
    onto the belt), 'supports_another' (something rests on that parcel), 'near_edge' (less
    than a cup radius inside the face), 'position' or 'normal'.
    """

    success: bool
    reason: str
    parcel_id: int  # ground-truth parcel under the grasp, 0 for none
    normal_error_deg: float = math.nan
    position_error: float = math.nan  # metres beyond the face's flatness band
    edge_margin: float = math.nan  # metres from the grasp to the face's nearest edge


def check_grasp(
    grasp: GraspCandidate,
    truth: FrameTruth,
    instance_ids: npt.NDArray[np.integer],
    camera: CameraModel,
    t_conveyor_grasp: Matrix4,
    t_camera_grasp: Matrix4,
    *,
    cup_radius: float,
    max_normal_error_deg: float = MAX_NORMAL_ERROR_DEG,
    max_position_error: float = MAX_POSITION_ERROR,
) -> GraspCheck:
    """Judge one grasp by the rule in the module docstring.

    Args:
        grasp: the candidate, in its own `frame_id`.
        truth: the frame's ground truth (conveyor frame).
        instance_ids: (H, W) ground-truth parcel id per pixel.
        camera: intrinsics of the image the ids belong to.
        t_conveyor_grasp: T_conveyor_<grasp.frame_id>.
        t_camera_grasp: T_<camera frame>_<grasp.frame_id>.
        cup_radius: how far inside the face's edge the grasp must be, metres.
        max_normal_error_deg: largest angle between approach axis and face normal.
        max_position_error: largest distance from the face beyond its flatness, metres.
    """
    pos = grasp.pose[:3, 3]
    uv = project_points(camera, (t_camera_grasp[:3, :3] @ pos + t_camera_grasp[:3, 3])[None])[0]
    if not np.isfinite(uv).all():
        return GraspCheck(False, 'outside_image', 0)
    u, v = round(float(uv[0])), round(float(uv[1]))
    h, w = instance_ids.shape
    if not (0 <= u < w and 0 <= v < h):
        return GraspCheck(False, 'outside_image', 0)
    pid = int(instance_ids[v, u])
    parcel = truth.by_id().get(pid) if pid else None
    if parcel is None:
        return GraspCheck(False, 'off_parcel', 0)
    face = parcel.top_face
    p = t_conveyor_grasp[:3, :3] @ pos + t_conveyor_grasp[:3, 3]
    approach = t_conveyor_grasp[:3, :3] @ grasp.pose[:3, 2]
    cos_err = float(np.clip(-approach @ face.normal / np.linalg.norm(approach), -1.0, 1.0))
    normal_err = math.degrees(math.acos(cos_err))
    offset = p - face.center
    plane_dist = abs(float(offset @ face.normal))
    position_err = max(0.0, plane_dist - face.flatness)
    y_axis = np.cross(face.normal, face.x_axis)
    margin = float(
        min(
            face.half_extents[0] - abs(offset @ face.x_axis),
            face.half_extents[1] - abs(offset @ y_axis),
        )
    )
    measured = {
        'parcel_id': pid,
        'normal_error_deg': normal_err,
        'position_error': position_err,
        'edge_margin': margin,
    }
    if parcel.supports:
        return GraspCheck(False, 'supports_another', **measured)
    if margin < cup_radius:
        return GraspCheck(False, 'near_edge', **measured)
    if position_err > max_position_error:
        return GraspCheck(False, 'position', **measured)
    if normal_err > max_normal_error_deg:
        return GraspCheck(False, 'normal', **measured)
    return GraspCheck(True, 'ok', **measured)


def graspable(parcel: ParcelTruth, cup_radius: float, slack: float = MAX_POSITION_ERROR) -> bool:
    """Whether a parcel counts for recall.

    Ground truth says it can be picked (face mostly visible, nothing on it, not too steep)
    and its face is wide enough to host the cup with the rule's own position tolerance to
    spare: a face less than a cup radius plus `slack` wide on either side of its middle
    (the closed half of a box with an open flap, the narrow crown of a tall bag) leaves no
    room for any planner's error. `recall_any_face` counts those too.
    """
    return parcel.graspable and float(np.min(parcel.top_face.half_extents)) >= cup_radius + slack


def truth_ids_of_instances(
    seg: Segmentation, instance_ids: npt.NDArray[np.integer]
) -> dict[int, tuple[int, int]]:
    """Segmentation label -> (ground-truth id covering most of its mask, pixels it covers).

    Belt-only masks are left out.
    """
    out: dict[int, tuple[int, int]] = {}
    for inst in seg.instances:
        x0, y0, x1, y1 = inst.box
        mask = seg.labels[y0:y1, x0:x1] == inst.label
        ids = np.asarray(instance_ids[y0:y1, x0:x1])[mask]
        if ids.size:
            values, counts = np.unique(ids, return_counts=True)
            k = int(np.argmax(counts))
            if values[k]:
                out[int(inst.label)] = (int(values[k]), int(counts[k]))
    return out


@dataclass
class FrameGrasps:
    """One frame's verdicts: the top grasp, each candidate, and which parcels were served."""

    stamp_ns: int
    top: GraspCheck | None
    checks: list[GraspCheck]
    graspable: set[int]
    served: set[int]  # graspable parcels with at least one successful candidate


@dataclass
class GraspScorer:
    """Accumulates grasp and tracking figures over the frames of a bag.

    Args:
        cup_radius: the rule's edge distance; GraspConfig's cup radius by default.
    """

    cup_radius: float = field(default_factory=lambda: GraspConfig().cup_radius)
    max_normal_error_deg: float = MAX_NORMAL_ERROR_DEG
    max_position_error: float = MAX_POSITION_ERROR
    frames: int = 0
    frames_with_grasp: int = 0
    top1_successes: int = 0
    top1_failures: Counter[str] = field(default_factory=Counter)
    best_per_parcel: int = 0
    best_per_parcel_successes: int = 0
    candidates: int = 0
    candidate_successes: int = 0
    graspable_parcel_frames: int = 0
    served_parcel_frames: int = 0
    frames_missing_grasp: int = 0  # graspable parcels in view, no candidate at all
    any_face_parcel_frames: int = 0  # ground truth's graspable, whatever the face's width
    any_face_served: int = 0
    split_parcel_frames: int = 0  # parcel-frames whose parcel is cut into several masks
    # Pile order per parcel-frame: (something rests on it in truth, the pipeline says so).
    pile_order: Counter[tuple[bool, bool]] = field(default_factory=Counter)
    track_ids: dict[int, Counter[int]] = field(default_factory=lambda: defaultdict(Counter))
    # Per parcel, frame after frame: (its track id, how many masks covered it).
    track_sequences: dict[int, list[tuple[int, int]]] = field(
        default_factory=lambda: defaultdict(list)
    )
    # The same, over frames where at least half the parcel's top face is visible.
    visible_track_ids: dict[int, Counter[int]] = field(
        default_factory=lambda: defaultdict(Counter)
    )

    def add(self, result: PerceptionResult, frame: RGBDFrame) -> FrameGrasps | None:
        """Score one frame's result; None (and nothing counted) without ground truth.

        Raises:
            InputError: when the frame's transforms cannot relate the result to the
                conveyor frame or the camera.
        """
        gt = frame.ground_truth
        if gt is None:
            return None
        t_conv, t_cam = _transforms(frame, result.frame_id)
        truth, ids = gt.truth, np.asarray(gt.instance_ids)
        self.frames += 1
        checks = [
            check_grasp(
                g, truth, ids, frame.camera, t_conv, t_cam,
                cup_radius=self.cup_radius,
                max_normal_error_deg=self.max_normal_error_deg,
                max_position_error=self.max_position_error,
            )
            for g in result.grasps
        ]  # fmt: skip
        wanted = {p.parcel_id for p in truth.parcels if graspable(p, self.cup_radius)}
        any_face = {p.parcel_id for p in truth.parcels if p.graspable}
        hit = {c.parcel_id for c in checks if c.success}
        served = hit & wanted
        self.graspable_parcel_frames += len(wanted)
        self.served_parcel_frames += len(served)
        self.any_face_parcel_frames += len(any_face)
        self.any_face_served += len(hit & any_face)
        self.candidates += len(checks)
        self.candidate_successes += sum(c.success for c in checks)
        top = checks[0] if checks else None
        if top is not None:
            self.frames_with_grasp += 1
            self.top1_successes += top.success
            if not top.success:
                self.top1_failures[top.reason] += 1
        elif wanted:
            self.frames_missing_grasp += 1
        seen: set[int] = set()
        for g, c in zip(result.grasps, checks, strict=True):
            if g.parcel_id not in seen:  # best first: the first per parcel is its best
                seen.add(g.parcel_id)
                self.best_per_parcel += 1
                self.best_per_parcel_successes += c.success
        # One id per parcel and frame: that of the mask covering most of it. A parcel split
        # into two masks is a segmentation error (mask AP counts it, and so does
        # `split_parcel_frames`); counted per fragment it would add parcel-frames that are
        # not there.
        truth_of = truth_ids_of_instances(result.segmentation, ids)
        main: dict[int, tuple[Parcel, int]] = {}  # truth id -> (main mask's parcel, pixels)
        fragments: Counter[int] = Counter()
        for p in result.parcels:
            tid, pixels = truth_of.get(p.label, (0, 0))
            if tid:
                fragments[tid] += 1
                if pixels > (main[tid][1] if tid in main else -1):
                    main[tid] = (p, pixels)
        self.split_parcel_frames += sum(1 for n in fragments.values() if n > 1)
        by_id = truth.by_id()
        for tid, (parcel, _) in main.items():
            track_id = parcel.track_id
            self.pile_order[(bool(by_id[tid].supports), bool(parcel.supports))] += 1
            self.track_ids[tid][track_id] += 1
            self.track_sequences[tid].append((track_id, fragments[tid]))
            if by_id[tid].top_face.visible_fraction >= 0.5:
                self.visible_track_ids[tid][track_id] += 1
        return FrameGrasps(result.stamp_ns, top, checks, wanted, served)

    def tracking(self) -> dict[str, Any]:
        """Id consistency: the share of a parcel's tracked frames under its usual id.

        A frame's id for a parcel is that of the mask covering most of it.

        Also over the frames where at least half its top face is visible: a parcel mostly
        hidden in a pile, seen again from another side, is where ids are lost.
        """
        frames = sum(sum(c.values()) for c in self.track_ids.values())
        kept = sum(max(c.values()) for c in self.track_ids.values())
        v_frames = sum(sum(c.values()) for c in self.visible_track_ids.values())
        v_kept = sum(max(c.values()) for c in self.visible_track_ids.values())
        steps = [
            (a != b, fa != fb)
            for seq in self.track_sequences.values()
            for (a, fa), (b, fb) in itertools.pairwise(seq)
        ]
        switches = sum(switch for switch, _ in steps)
        return {
            'id_consistency': kept / frames if frames else math.nan,
            'parcels': len(self.track_ids),
            'parcel_frames': frames,
            'id_switches': switches,
            # Switches on a frame where the count of masks covering the parcel changed: a
            # mask cut in two or joined again, so the segmentation, not the tracker, lost it.
            'id_switches_at_split': sum(switch and cut for switch, cut in steps),
            'split_parcel_frames': self.split_parcel_frames,
            'parcels_with_one_id': sum(1 for c in self.track_ids.values() if len(c) == 1),
            'id_consistency_face_visible': v_kept / v_frames if v_frames else math.nan,
            'face_visible_frames': v_frames,
        }

    def grasping(self) -> dict[str, Any]:
        """Top-1 success, recall of graspable parcels and how the failures failed."""
        return {
            'top1_success': _rate(self.top1_successes, self.frames_with_grasp),
            'frames': self.frames,
            'frames_with_grasp': self.frames_with_grasp,
            'top1_successes': self.top1_successes,
            'frames_missing_grasp': self.frames_missing_grasp,
            'recall': _rate(self.served_parcel_frames, self.graspable_parcel_frames),
            'graspable_parcel_frames': self.graspable_parcel_frames,
            'served_parcel_frames': self.served_parcel_frames,
            'recall_any_face': _rate(self.any_face_served, self.any_face_parcel_frames),
            'best_per_parcel_success': _rate(self.best_per_parcel_successes, self.best_per_parcel),
            'candidate_success': _rate(self.candidate_successes, self.candidates),
            'top1_failures': dict(self.top1_failures),
            **self._pile_order(),
        }

    def _pile_order(self) -> dict[str, Any]:
        """How well "something rests on this parcel" matches the truth, per parcel-frame.

        A false "yes" costs a free parcel its rank (GraspConfig.under_penalty); a false
        "no" lets the pipeline offer a parcel that something lies on.
        """
        c = self.pile_order
        said = c[(True, True)] + c[(False, True)]
        true = c[(True, True)] + c[(True, False)]
        return {
            'pile_order_precision': _rate(c[(True, True)], said),
            'pile_order_recall': _rate(c[(True, True)], true),
            'pile_order_said_under': said,
            'pile_order_truly_under': true,
        }

    def summary(self) -> dict[str, Any]:
        """{'grasping': ..., 'tracking': ...}, JSON-ready."""
        return {'grasping': self.grasping(), 'tracking': self.tracking()}


def _rate(num: int, den: int) -> float:
    return num / den if den else math.nan


def _transforms(frame: RGBDFrame, result_frame: str) -> tuple[Matrix4, Matrix4]:
    if frame.transforms is None:
        raise InputError('frame has no transforms; grasp evaluation needs the bag /tf_static')
    try:
        return (
            frame.transforms.lookup(CONVEYOR_FRAME, result_frame),
            frame.transforms.lookup(frame.frame_id, result_frame),
        )
    except KeyError as err:
        raise InputError(f'cannot place results in the ground truth frame: {err}') from err


@dataclass(frozen=True)
class BagEvaluation:
    """What `evaluate_bag` returns: the scorer's figures plus timings per stage."""

    segmenter: str
    summary: dict[str, Any]
    timings_ms: dict[str, list[float]]
    parcels_per_frame: list[int]


def truth_pile_order(
    lifted: list[LiftedParcel], labels: npt.NDArray[np.integer], truth: GroundTruth
) -> None:
    """Set each parcel's `over` to the simulator's pile order among the parcels in view.

    A mask stands for the ground-truth parcel it covers most, belt aside (unlike
    `truth_ids_of_instances`, which gives a mask mostly over the belt no parcel, and so would
    clear the pile order of a loose mask around a parcel). A parcel resting on one out of
    the image stays unknown, as it is to any pile order from this view; so do the pipeline's
    own hints (`beside_higher`, support heights), which this leaves as they are.
    """
    ids = np.asarray(truth.instance_ids)
    parcel_of: dict[int, int] = {}
    for p in lifted:
        covered = ids[labels == p.label]
        counts = np.bincount(covered[covered > 0])
        if counts.any():
            parcel_of[p.label] = int(counts.argmax())
    labels_of: dict[int, set[int]] = defaultdict(set)
    for label, pid in parcel_of.items():
        labels_of[pid].add(label)
    by_id = truth.truth.by_id()
    for p in lifted:
        pid = parcel_of.get(p.label)
        resting = by_id[pid].supports if pid in by_id else ()
        p.over = {q for s in resting for q in labels_of.get(s, ()) if q != p.label}


class TruthPileOrderPipeline(Pipeline):
    """The pipeline with the simulator's pile order among the parcels in view in place of its own.

    Scored like the pipeline, it says how much of the grasp failures a perfect pile order from
    this one view would remove; what it leaves is the surfaces, and parcels resting on others
    out of the image.
    """

    def lift(self, frame: RGBDFrame, seg: Segmentation, belt: BeltPlane) -> list[LiftedParcel]:
        lifted = super().lift(frame, seg, belt)
        if frame.ground_truth is not None:
            truth_pile_order(lifted, seg.labels, frame.ground_truth)
        return lifted


def evaluate_bag(
    path: Path | str,
    segmenter: Any,
    *,
    grasping: GraspConfig | None = None,
    tracking: Any = None,
    target_frame: str = 'base_link',
    max_frames: int | None = None,
    on_frame: Callable[[RGBDFrame, PerceptionResult, FrameGrasps | None], None] | None = None,
    pile_order: str = 'estimated',
) -> BagEvaluation:
    """Run the pipeline over a simulated bag and score every frame.

    Args:
        path: a bag with ground truth (pkg-perception simulate).
        segmenter: e.g. GroundTruthSegmenter() or GeometricSegmenter().
        grasping: tool settings (cup radius for the rule comes from here).
        tracking: TrackingConfig, default settings when None.
        target_frame: frame the pipeline publishes in.
        max_frames: stop after this many frames.
        on_frame: called with each frame, its result and its verdicts (for overlays).
        pile_order: 'estimated' (the pipeline's own) or 'truth-in-view' (the simulator's
            among the parcels in view: the most a better pile order could give).

    Raises:
        BagError: the bag is missing or damaged. InputError: it lacks ground truth, or
        `pile_order` is not one of PILE_ORDERS.
    """
    from pkg_perception.bag.reader import BagFrameReader

    if pile_order not in PILE_ORDERS:
        raise InputError(f'pile_order {pile_order!r} is not one of {", ".join(PILE_ORDERS)}')
    grasping = grasping or GraspConfig()
    kind = TruthPileOrderPipeline if pile_order == 'truth-in-view' else Pipeline
    pipeline = kind(segmenter, grasping, tracking, target_frame=target_frame)
    scorer = GraspScorer(cup_radius=grasping.cup_radius)
    timings: dict[str, list[float]] = defaultdict(list)
    counts: list[int] = []
    with BagFrameReader(path) as reader:
        if not reader.has_ground_truth:
            raise InputError(f'bag {path} has no ground truth; record one with simulate')
        for k, frame in enumerate(_limit(reader.frames(), max_frames)):
            del k
            result = pipeline.process(frame)
            verdict = scorer.add(result, frame)
            for stage, ms in result.timings_ms.items():
                timings[stage].append(ms)
            counts.append(len(result.parcels))
            if on_frame is not None:
                on_frame(frame, result, verdict)
    return BagEvaluation(
        segmenter=getattr(segmenter, 'name', type(segmenter).__name__),
        summary=scorer.summary(),
        timings_ms=dict(timings),
        parcels_per_frame=counts,
    )


def _limit(frames: Iterator[RGBDFrame], count: int | None) -> Iterator[RGBDFrame]:
    for k, f in enumerate(frames):
        if count is not None and k >= count:
            return
        yield f
