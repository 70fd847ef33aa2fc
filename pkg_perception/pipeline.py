# Copyright 2026 The pkg_perception Authors
# SPDX-License-Identifier: Apache-2.0
"""The one code path: segment -> lift to 3D -> plan grasps -> track, timed per stage.

The ROS node, the replay command, the evaluation and the benchmarks all call
`Pipeline.process`; nothing here knows about ROS, files or drawing.
"""

from __future__ import annotations

import time
from dataclasses import replace

import numpy as np
import numpy.typing as npt

from pkg_perception.class_memory import ClassMemory
from pkg_perception.classes import ParcelClass
from pkg_perception.errors import InputError
from pkg_perception.frames import CameraModel, RGBDFrame
from pkg_perception.geometry import project_points
from pkg_perception.grasping import GraspConfig, plan
from pkg_perception.lifting import SOFT_CLASSES, LiftedParcel, lift_all, set_boxes
from pkg_perception.results import GraspCandidate, OrientedBox, Parcel, PerceptionResult
from pkg_perception.segmentation.base import Segmenter
from pkg_perception.segmentation.belt import BeltPlane, estimate_belt_plane
from pkg_perception.segmentation.instances import FLAG_NO_DEPTH, Instance, Segmentation
from pkg_perception.tracking import LabelsAt, Tracker, TrackingConfig
from pkg_perception.transforms import Matrix4, TransformTree, invert, transform_points

CONVEYOR_FRAME = 'conveyor'
FLAG_TF_FALLBACK = 'tf_fallback_camera_frame'
FLAG_BELT_ESTIMATED = 'belt_estimated'
FLAG_NO_BELT = 'no_belt_plane'


def _checked_transform(name: str, t: npt.ArrayLike | None) -> Matrix4 | None:
    if t is None:
        return None
    m = np.asarray(t, dtype=np.float64)
    if m.shape != (4, 4) or not np.all(np.isfinite(m)):
        raise InputError(f'{name} must be a finite 4x4 transform, got shape {m.shape}')
    return m


class Pipeline:
    """Frames in, ranked grasps out; keeps the tracker's state between frames.

    Args:
        segmenter: anything with `segment(frame, belt) -> Segmentation`.
        grasping: tool geometry and limits.
        tracking: tracker settings.
        target_frame: frame of every output pose (REP 105 `base_link` by default).
        t_target_camera: T_target_camera used when the frame's transforms lack the target.
        t_conveyor_camera: T_conveyor_camera used when the frame's transforms lack the belt;
            without either the belt plane is estimated from depth every frame.
    """

    def __init__(
        self,
        segmenter: Segmenter,
        grasping: GraspConfig | None = None,
        tracking: TrackingConfig | None = None,
        *,
        target_frame: str = 'base_link',
        t_target_camera: npt.ArrayLike | None = None,
        t_conveyor_camera: npt.ArrayLike | None = None,
    ) -> None:
        self.segmenter = segmenter
        self.grasping = grasping or GraspConfig()
        self.tracker = Tracker(tracking)
        self.class_memory = ClassMemory(self.tracker.config.class_memory)
        self.target_frame = target_frame
        self.t_target_camera = _checked_transform('t_target_camera', t_target_camera)
        self.t_conveyor_camera = _checked_transform('t_conveyor_camera', t_conveyor_camera)
        self._lookups: dict[tuple[str, str], Matrix4 | None] = {}
        self._lookup_tree: TransformTree | None = None
        self._output_frame: str | None = None

    def reset(self) -> None:
        """Forget tracks (a new recording, a loop)."""
        self.tracker.reset()
        self.class_memory.reset()

    def _lookup(self, frame: RGBDFrame, target: str) -> Matrix4 | None:
        """T_target_camera from the frame's static transforms, cached per tree."""
        tree = frame.transforms
        if tree is None:
            return None
        if tree is not self._lookup_tree:
            self._lookup_tree, self._lookups = tree, {}
        key = (target, frame.frame_id)
        if key not in self._lookups:
            try:
                self._lookups[key] = _checked_transform('transform', tree.lookup(*key))
            except KeyError:
                self._lookups[key] = None
        return self._lookups[key]

    def belt_plane(self, frame: RGBDFrame) -> tuple[BeltPlane, tuple[str, ...]]:
        """The belt in the optical frame: from TF, else the config, else estimated.

        Raises:
            InputError: when it has to be estimated and the depth shows no plane.
        """
        t = self._conveyor_camera(frame)
        if t is not None:
            return BeltPlane.from_extrinsics(t), ()
        return estimate_belt_plane(frame.depth, frame.camera), (FLAG_BELT_ESTIMATED,)

    def output_transform(self, frame: RGBDFrame) -> tuple[str, Matrix4, tuple[str, ...]]:
        """(frame id, T_output_camera, flags): the target frame, or the camera's if unknown."""
        if self.target_frame == frame.frame_id:
            return frame.frame_id, np.eye(4), ()
        t = self._lookup(frame, self.target_frame)
        if t is None:
            t = self.t_target_camera
        if t is None:
            return frame.frame_id, np.eye(4), (FLAG_TF_FALLBACK,)
        return self.target_frame, t, ()

    def _conveyor_camera(self, frame: RGBDFrame) -> Matrix4 | None:
        """T_conveyor_camera from the frame's /tf_static, else the config's, else None."""
        t = self._lookup(frame, CONVEYOR_FRAME)
        return self.t_conveyor_camera if t is None else t

    def _conveyor_rotation(self, frame: RGBDFrame, t_out_cam: Matrix4) -> Matrix4 | None:
        t_conv_cam = self._conveyor_camera(frame)
        if t_conv_cam is None:
            return None
        return t_out_cam[:3, :3] @ t_conv_cam[:3, :3].T

    def lift(self, frame: RGBDFrame, seg: Segmentation, belt: BeltPlane) -> list[LiftedParcel]:
        """Every instance in 3D with its pile order; evaluation may swap the order for truth."""
        return lift_all(seg, frame.depth, frame.camera, belt, self.grasping.lift)

    def process(self, frame: RGBDFrame) -> PerceptionResult:
        """Run every stage on one frame.

        Raises:
            InputError: for a segmentation that does not match the frame, or bad extrinsics.
        """
        t0 = time.perf_counter()
        out_frame, t_out_cam, flags = self.output_transform(frame)
        if out_frame != self._output_frame:
            self.reset()  # positions in another frame do not compare
            self._output_frame = out_frame
        h, w = frame.depth.shape
        try:
            belt, belt_flags = self.belt_plane(frame)
        except InputError:
            empty = Segmentation.empty(h, w, flags=(FLAG_NO_BELT,))
            return self._result(frame, out_frame, empty, [], [], (*flags, FLAG_NO_BELT), {})
        flags += belt_flags
        t1 = time.perf_counter()
        rot = self._conveyor_rotation(frame, t_out_cam)
        velocity = self.tracker.known_velocity(rot)  # in the output frame
        if velocity is not None:
            velocity = t_out_cam[:3, :3].T @ velocity  # the segmenter's optical frame
        seg = self.segmenter.segment(frame, belt, velocity)
        if seg.labels.shape != (h, w):
            raise InputError(
                f'segmenter {self.segmenter.name} returned labels of shape {seg.labels.shape} '
                f'for a {w}x{h} frame; masks must be at the frame resolution'
            )
        t2 = time.perf_counter()
        lifted = self.lift(frame, seg, belt)
        if seg.instances and not lifted and not np.isfinite(frame.depth).any():
            flags += (FLAG_NO_DEPTH,)
        t3 = time.perf_counter()
        parcels = [_parcel(p, t_out_cam) for p in lifted]
        whole = [_whole(p.instance.box, w, h) for p in lifted]
        centroids = np.array([p.centroid for p in lifted]).reshape(-1, 3)
        parcels = self.tracker.update(
            parcels,
            frame.stamp_ns,
            frame_from_conveyor=rot,
            whole=whole,
            positions=centroids @ t_out_cam[:3, :3].T + t_out_cam[:3, 3],
            labels_at=labels_at(seg.labels, frame.camera, t_out_cam),
        )
        frame_classes = [lp.instance.parcel_class for lp in lifted]
        seg, parcels = self._pool_classes(seg, lifted, parcels)
        moved = {
            lp.label
            for c, lp in zip(frame_classes, lifted, strict=True)
            if _crowned(c) != _crowned(lp.instance.parcel_class)
        }
        if moved:
            lifted, parcels = self._relift(frame, seg, belt, lifted, parcels, t_out_cam, moved)
        for lp, p in zip(lifted, parcels, strict=True):
            lp.covered = len(p.supports) > len(lp.over)
        t4 = time.perf_counter()
        grasp_plan = plan(lifted, seg.labels, frame.depth, frame.camera, belt, self.grasping)
        grasps = grasp_plan.candidates(
            lifted,
            frame_id=out_frame,
            stamp_ns=frame.stamp_ns,
            transform=t_out_cam,
            parcel_ids=[p.track_id for p in parcels],
            boxes=[p.box for p in parcels],
            velocities=[p.velocity for p in parcels],
        )
        t5 = time.perf_counter()
        timings = {
            'belt': (t1 - t0) * 1e3,
            'segment': (t2 - t1) * 1e3,
            'lift': (t3 - t2) * 1e3,
            'track': (t4 - t3) * 1e3,
            'grasp': (t5 - t4) * 1e3,
        }
        flags += tuple(f for f in seg.flags if f not in flags)
        return self._result(frame, out_frame, seg, parcels, grasps, flags, timings, t0)

    def _pool_classes(
        self, seg: Segmentation, lifted: list[LiftedParcel], parcels: list[Parcel]
    ) -> tuple[Segmentation, list[Parcel]]:
        """Classes and scores pooled over each parcel's track (`ClassMemory`).

        Lifting has used this frame's classes (`_relift` redoes the parcels where that
        matters); the grasp ranking, the published parcels, the segmentation and the
        tracker's next match get the pooled ones. Masks without a track (too little depth to
        lift) keep theirs.
        """
        pooled: dict[int, Instance] = {}  # label -> instance with its pooled class
        out = []
        for lp, p in zip(lifted, parcels, strict=True):
            inst = self.class_memory.fuse(lp.instance, p.track_id)
            if inst is not lp.instance:
                lp.instance = pooled[inst.label] = inst
                p = replace(p, parcel_class=inst.parcel_class, score=float(inst.score))
            out.append(p)
        self.class_memory.forget(self.tracker.track_ids)
        if not pooled:
            return seg, out
        self.tracker.set_classes({p.track_id: p.parcel_class for p in out if p.label in pooled})
        instances = [pooled.get(i.label, i) for i in seg.instances]
        return replace(seg, instances=instances), out

    def _relift(
        self,
        frame: RGBDFrame,
        seg: Segmentation,
        belt: BeltPlane,
        lifted: list[LiftedParcel],
        parcels: list[Parcel],
        t_out_cam: Matrix4,
        moved: set[int],
    ) -> tuple[list[LiftedParcel], list[Parcel]]:
        """The parcels whose pooled class lifts differently, lifted again with it.

        A soft top's surface is a fitted crown, a box's an upper plane (`_crowned`). Only
        those parcels are lifted again, alone; their pile order, track, velocity and
        supports stay those of the first lift, the surface and box are the second's.
        """
        sub = replace(seg, instances=[i for i in seg.instances if i.label in moved])
        params = self.grasping.lift
        first = {lp.label: lp for lp in lifted}
        again = lift_all(sub, frame.depth, frame.camera, belt, params, settle=False)
        for new in again:
            old = first[new.label]
            new.over, new.beside_higher = old.over, old.beside_higher
            new.support_height = old.support_height
        set_boxes(again, params)
        by_label = {new.label: new for new in again}
        out_lifted, out_parcels = [], []
        for lp, p in zip(lifted, parcels, strict=True):
            new = by_label.get(lp.label)
            if new is not None:
                q = _parcel(new, t_out_cam)
                lp = new
                p = replace(
                    p, box=q.box, top_center=q.top_center, top_normal=q.top_normal,
                    height=q.height,
                )  # fmt: skip
            out_lifted.append(lp)
            out_parcels.append(p)
        return out_lifted, out_parcels

    def _result(
        self,
        frame: RGBDFrame,
        out_frame: str,
        seg: Segmentation,
        parcels: list[Parcel],
        grasps: list[GraspCandidate],
        flags: tuple[str, ...],
        timings: dict[str, float],
        t0: float | None = None,
    ) -> PerceptionResult:
        timings = dict(timings)
        if t0 is not None:
            timings['total'] = (time.perf_counter() - t0) * 1e3
        return PerceptionResult(
            stamp_ns=frame.stamp_ns,
            frame_id=out_frame,
            camera_frame_id=frame.frame_id,
            segmentation=seg,
            parcels=parcels,
            grasps=grasps,
            timings_ms=timings,
            flags=flags,
            segmenter=getattr(self.segmenter, 'name', ''),
            provider=getattr(self.segmenter, 'provider', ''),
        )


def _crowned(parcel_class: ParcelClass) -> bool:
    """Lifting fits a soft top's crown, a box's or envelope's upper plane.

    Poly bags' crown fits start elsewhere than mailers', but lifting a parcel again for that
    changed no grasp on the bags measured (A-F, G-Q, the model's masks) and cost a relift in
    half again as many frames.
    """
    return parcel_class in SOFT_CLASSES


def _whole(box: tuple[int, int, int, int], width: int, height: int) -> bool:
    """The mask does not touch the image border: the parcel is wholly in view."""
    x0, y0, x1, y1 = box
    return x0 > 0 and y0 > 0 and x1 < width and y1 < height


def _box(box: OrientedBox, t: Matrix4) -> OrientedBox:
    return OrientedBox(pose=t @ box.pose, size=box.size)


def _parcel(p: LiftedParcel, t: Matrix4) -> Parcel:
    """A lifted parcel in the output frame; supports hold labels until the tracker maps them."""
    rot = t[:3, :3]
    assert p.box is not None
    return Parcel(
        track_id=0,
        label=p.label,
        parcel_class=p.instance.parcel_class,
        score=float(p.instance.score),
        box=_box(p.box, t),
        top_center=rot @ p.top_center + t[:3, 3],
        top_normal=rot @ p.top_normal,
        height=float(p.height),
        supports=tuple(sorted(p.over)),
        velocity=np.zeros(3),
        point_count=len(p.points),
    )


def labels_at(
    labels: npt.NDArray[np.integer], camera: CameraModel, t_out_cam: Matrix4
) -> LabelsAt:
    """The tracker's view of the masks: the label under output-frame points, -1 off the image."""
    h, w = labels.shape

    def at(points: npt.NDArray[np.float64]) -> npt.NDArray[np.int64]:
        u, v = np.round(project_points(camera, transform_points(invert(t_out_cam), points))).T
        inside = (u >= 0) & (u < w) & (v >= 0) & (v < h)  # NaN (behind the camera) is not
        out = np.full(len(u), -1, dtype=np.int64)
        out[inside] = labels[v[inside].astype(np.int64), u[inside].astype(np.int64)]
        return out

    return at
