# Copyright 2026 The pkg_perception Authors
# SPDX-License-Identifier: Apache-2.0
"""Everything the node does between its subscriptions and its publishers, without rclpy.

`NodeCore` turns synchronized colour + depth messages into output messages with
`Pipeline.process`, the same call the offline commands make. It decides which frame to
process, reports faults once, resets tracking on a clock jump and keeps the figures for
/diagnostics. The rclpy node (node.py) only moves messages in and out; the tests drive this
class with the `rosbags` typestore's message classes.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from pkg_perception.config import PerceptionConfig
from pkg_perception.errors import InputError, PerceptionError
from pkg_perception.frames import CameraModel, RGBDFrame
from pkg_perception.pipeline import CONVEYOR_FRAME
from pkg_perception.results import PerceptionResult
from pkg_perception.ros import messages
from pkg_perception.ros.conversions import (
    camera_info_to_model,
    image_to_depth_m,
    image_to_rgb,
    stamp_to_ns,
)
from pkg_perception.ros.messages import DiagnosticReport, MarkerState, MessageTypes
from pkg_perception.ros.policy import (
    ClockJumpDetector,
    FaultLog,
    LatestSlot,
    RunningStats,
    Throttle,
)
from pkg_perception.transforms import Matrix4, TransformTree

# (target, source) -> T_target_source; raises LookupError when TF has no answer.
TransformLookup = Callable[[str, str], Matrix4]
LIVE_SECTIONS = ('grasping.', 'tracking.', 'frames.')


class PipelineLike(Protocol):
    """What the node runs: Pipeline, or a stand-in in tests."""

    def process(self, frame: RGBDFrame) -> PerceptionResult: ...


class Log(Protocol):
    """The logging calls the core makes (Python's logger and the node's adapter have them)."""

    def info(self, msg: str) -> Any: ...
    def warning(self, msg: str) -> Any: ...
    def error(self, msg: str) -> Any: ...


@dataclass
class Outputs:
    """Messages of one processed frame; None where that output is switched off."""

    result: PerceptionResult
    detections: Any
    grasps: Any
    markers: Any | None = None
    overlay: Any | None = None
    points: Any | None = None


class NodeCore:
    """The node's behaviour; thread-safe between one producer and one processing thread.

    Args:
        config: the validated settings.
        pipeline: anything with `process(RGBDFrame) -> PerceptionResult` (and `reset()`).
        types: message classes to build outputs with.
        log: a logger (rclpy's, adapted, or Python's).
        lookup: TF lookup; None when there is no TF (outputs stay in the camera frame).
        rebuild: makes a new pipeline for changed live settings, keeping the loaded model.
        clock: monotonic seconds, for rates and warning throttles.
    """

    def __init__(
        self,
        config: PerceptionConfig,
        pipeline: PipelineLike,
        types: MessageTypes,
        *,
        log: Log | None = None,
        lookup: TransformLookup | None = None,
        rebuild: Callable[[PerceptionConfig], PipelineLike] | None = None,
        clock: Callable[[], float] = time.monotonic,
        segmenter_name: str = '',
        provider: str = '',
    ) -> None:
        self.config = config
        self.pipeline = pipeline
        self.types = types
        self.log: Log = log or logging.getLogger('pkg_perception.node')
        self.lookup = lookup
        self.rebuild = rebuild
        self.clock = clock
        self.segmenter_name = segmenter_name
        self.provider = provider
        self.slot: LatestSlot[tuple[Any, Any]] = LatestSlot()
        self.faults = FaultLog()
        self.stats = RunningStats()
        self.markers = MarkerState()
        self.jumps = ClockJumpDetector(config.tracking.max_gap_s)
        self.info_warning = Throttle(config.node.camera_info_warn_period_s)
        self.camera: CameraModel | None = None
        self.skipped = 0
        self.tracker_resets = 0
        self.output_frame = ''
        self._pending: PerceptionConfig | None = None
        self._lock = threading.Lock()

    # --- inputs (called from subscription callbacks) ----------------------------------------

    def on_camera_info(self, msg: Any) -> None:
        """Keep the newest intrinsics; a broken CameraInfo is reported, the old one kept."""
        try:
            camera = camera_info_to_model(msg)
        except InputError as err:
            if self.faults.report('camera_info:invalid', f'camera_info rejected: {err}'):
                self.log.error(f'camera_info rejected: {err}')
            return
        self.faults.resolve('camera_info')
        self.camera = camera

    def on_frame(self, color: Any, depth: Any) -> None:
        """A synchronized pair: replaces any pair still waiting (counted as dropped)."""
        self.slot.put((color, depth))

    def request_config(self, config: PerceptionConfig) -> None:
        """New settings (parameters changed); applied before the next frame."""
        with self._lock:
            self._pending = config

    # --- processing (called from the processing thread) -------------------------------------

    def step(self, timeout: float | None = None, **want: bool) -> Outputs | None:
        """Process the newest waiting pair, if one arrives within `timeout` seconds."""
        pair = self.slot.take(timeout)
        if pair is None:
            return None
        return self.process(*pair, **want)

    def process(
        self, color: Any, depth: Any, *, overlay: bool = True, points: bool = True
    ) -> Outputs | None:
        """One pair of messages -> output messages, or None when the frame is skipped.

        `overlay` and `points` let the caller skip outputs nobody subscribes to.
        """
        self._apply_pending()
        t0 = self.clock()
        frame = self._frame(color, depth)
        if frame is None:
            self.skipped += 1
            return None
        jump = self.jumps.observe(frame.stamp_ns)
        if jump is not None:
            self.reset_tracking(jump.describe())
        t1 = self.clock()
        try:
            result = self.pipeline.process(frame)
        except PerceptionError as err:
            self.skipped += 1
            if self.faults.report(f'pipeline:{type(err).__name__}', str(err)):
                self.log.error(f'frame skipped: {err}')
            return None
        self.faults.resolve('input:')
        self.faults.resolve('pipeline:')
        t2 = self.clock()
        out = self._outputs(frame, result, overlay=overlay, points=points)
        t3 = self.clock()
        timings = {'convert': (t1 - t0) * 1e3, **result.timings_ms, 'messages': (t3 - t2) * 1e3}
        self.stats.add(timings, t3)
        self.output_frame = result.frame_id
        if result.segmenter:
            self.segmenter_name, self.provider = result.segmenter, result.provider or self.provider
        return out

    def reset_tracking(self, reason: str) -> None:
        """Start tracking afresh (bag loop, long gap): old ids and velocities are void."""
        reset = getattr(self.pipeline, 'reset', None)
        if callable(reset):
            reset()
        elif self.rebuild is not None:
            self.pipeline = self.rebuild(self.config)
        self.markers.reset()
        self.tracker_resets += 1
        self.log.warning(f'{reason}: tracking reset')

    def clear_markers(self, stamp_ns: int) -> Any:
        """DELETEALL for ~/markers (on deactivate)."""
        return self.markers.clear(self.types, stamp_ns, self.output_frame)

    def _apply_pending(self) -> None:
        with self._lock:
            new, self._pending = self._pending, None
        if new is None:
            return
        changed = self.config.changed(new)
        if not changed:
            return
        self.config = new
        self.info_warning = Throttle(new.node.camera_info_warn_period_s)
        self.jumps.max_gap_ns = int(new.tracking.max_gap_s * 1e9)
        if self.rebuild is not None and any(n.startswith(LIVE_SECTIONS) for n in changed):
            self.pipeline = self.rebuild(new)
            self.markers.reset()
        self.log.info('settings changed: ' + ', '.join(changed))

    def _frame(self, color: Any, depth: Any) -> RGBDFrame | None:
        camera = self.camera
        if camera is None:
            ns = self.config.node.camera_namespace.rstrip('/')
            text = (
                f'no camera_info on {ns}/{self.config.node.camera_info_topic} yet; '
                'frames are skipped until it arrives'
            )
            self.faults.report('camera_info:missing', text)
            if self.info_warning.ready(self.clock()):
                self.log.warning(text)
            return None
        try:
            frame_id = str(color.header.frame_id) or camera.frame_id
            if frame_id != camera.frame_id:
                camera = dataclasses.replace(camera, frame_id=frame_id)
            return RGBDFrame(
                color=image_to_rgb(color),
                depth=image_to_depth_m(depth),
                camera=camera,
                stamp_ns=stamp_to_ns(color.header.stamp),
                transforms=self._transforms(frame_id),
            )
        except InputError as err:
            if self.faults.report(f'input:{err}', str(err)):
                self.log.error(f'frame skipped (reported once, counted in diagnostics): {err}')
            return None

    def _transforms(self, camera_frame: str) -> TransformTree:
        """The target and belt frames relative to the camera, as far as TF knows them.

        The belt frame goes into the tree under the pipeline's name for it, whatever
        frames.conveyor_frame calls it in this cell's TF tree.
        """
        tree = TransformTree()
        frames = self.config.frames
        wanted = (
            ('tf:target', frames.target_frame, frames.target_frame, 'publishing in {camera}'),
            ('tf:conveyor', frames.conveyor_frame, CONVEYOR_FRAME, 'belt plane from depth'),
        )
        for key, source_name, tree_name, fallback in wanted:
            if not source_name or source_name == camera_frame or self.lookup is None:
                continue
            try:
                tree.add(tree_name, camera_frame, self.lookup(source_name, camera_frame))
            except LookupError as err:
                text = f'no transform {source_name} <- {camera_frame} ({err}); ' + fallback.format(
                    camera=camera_frame
                )
                if self.faults.report(key, text):
                    self.log.warning(text)
                continue
            if self.faults.resolve(key):
                self.faults.forget(key)
                self.log.info(f'transform {source_name} <- {camera_frame} available again')
        return tree

    def _outputs(
        self, frame: RGBDFrame, result: PerceptionResult, *, overlay: bool, points: bool
    ) -> Outputs:
        types, node = self.types, self.config.node
        out = Outputs(
            result=result,
            detections=messages.detections(types, result),
            grasps=messages.grasp_poses(types, result),
        )
        if node.publish_markers:
            out.markers = self.markers.build(types, result)
        if node.publish_overlay and overlay:
            out.overlay = messages.overlay(types, frame, result)
        if node.publish_points and points:
            out.points = messages.points(types, frame, result, node.points_stride)
        return out

    # --- /diagnostics -----------------------------------------------------------------------

    def report(self, *, name: str, state: str = 'active') -> DiagnosticReport:
        """What /diagnostics shows now: rates, counters, latency per stage, faults."""
        now = self.clock()
        rate = self.stats.rate_hz(now)
        faults = self.faults.active()
        values: list[tuple[str, str]] = [
            ('state', state),
            ('rate_hz', f'{rate:.2f}'),
            ('frames_received', str(self.slot.received)),
            ('frames_processed', str(self.stats.processed)),
            ('frames_dropped', str(self.slot.dropped)),
            ('frames_skipped', str(self.skipped)),
            ('tracker_resets', str(self.tracker_resets)),
            ('segmenter', self.segmenter_name),
            ('provider', self.provider),
            ('target_frame', self.config.frames.target_frame),
            ('output_frame', self.output_frame),
        ]
        for stage, (mean, peak) in self.stats.latency_ms().items():
            values.append((f'latency_{stage}_ms', f'{mean:.1f} mean, {peak:.1f} max'))
        for key, fault in faults.items():
            values.append((f'fault {key.split(":", 1)[0]}', f'{fault.message} (x{fault.count})'))
        if faults:
            level = 'WARN'
            message = '; '.join(f.message for f in faults.values())[:200]
        elif state != 'active':
            level, message = 'OK', state
        elif not self.stats.processed:
            level, message = 'WARN', 'waiting for the first frame'
        elif self.stats.idle(now):
            level, message = 'WARN', 'no frames processed recently; is the camera publishing?'
        else:
            level, message = 'OK', f'{rate:.1f} Hz, {self.slot.dropped} dropped'
        return DiagnosticReport(
            name=name,
            hardware_id=self.config.node.camera_namespace,
            level=level,
            message=message,
            values=tuple(values),
        )
