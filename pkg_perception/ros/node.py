# Copyright 2026 The pkg_perception Authors
# SPDX-License-Identifier: Apache-2.0
"""perception_node: the rclpy lifecycle node, a thin adapter over NodeCore.

The only module that imports rclpy. configure reads and validates the parameters, loads
and warms the model and creates the publishers; activate subscribes; deactivate
unsubscribes and clears the markers; cleanup releases the model. Processing runs on its own
thread, one frame at a time, always the newest (see policy.LatestSlot), so the executor
stays free for subscriptions, TF, parameters and lifecycle services.

Uses only rclpy API present in both Humble and Jazzy: rclpy.lifecycle, message_filters'
ApproximateTimeSynchronizer, add_on_set_parameters_callback (validation before a change is
accepted; the change is applied on the next frame), MultiThreadedExecutor.
"""

from __future__ import annotations

import array
import importlib
import threading
import traceback
from typing import Any

import message_filters
import numpy as np
import rclpy
from rcl_interfaces.msg import (
    FloatingPointRange,
    IntegerRange,
    ParameterDescriptor,
    SetParametersResult,
)
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.duration import Duration
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from rclpy.time import Time
from sensor_msgs.msg import CameraInfo
from tf2_ros import Buffer, TransformException, TransformListener

from pkg_perception.config import (
    NODE_NAME,
    PerceptionConfig,
    build_pipeline,
    build_segmenter,
    parameter_specs,
)
from pkg_perception.errors import PerceptionError
from pkg_perception.params import ParamSpec
from pkg_perception.ros import messages
from pkg_perception.ros.conversions import stamp_to_ns
from pkg_perception.ros.messages import MessageTypes
from pkg_perception.ros.policy import ClockJumpDetector
from pkg_perception.ros.runner import NodeCore, Outputs
from pkg_perception.transforms import make_transform, matrix_from_quaternion

OUTPUTS = ('detections', 'grasps', 'markers', 'overlay', 'points')
WORKER_POLL_S = 0.5  # how often an idle worker checks for shutdown


def ros_message_types() -> MessageTypes:
    """The generated rclpy message classes; uint8[] fields as array('B') (fast path)."""

    def lookup(full: str) -> Any:
        package, _, name = full.split('/')
        return getattr(importlib.import_module(f'{package}.msg'), name)

    return MessageTypes.resolve(
        lookup, lambda a: array.array('B', np.ascontiguousarray(a).tobytes())
    )


def descriptor(spec: ParamSpec) -> ParameterDescriptor:
    """A ParameterDescriptor from a ParamSpec.

    Floating-point settings use dynamic typing so that `30` in a parameter file is accepted
    where `30.0` is meant; PerceptionConfig checks every type and range itself anyway.
    """
    d = ParameterDescriptor(
        name=spec.name,
        description=spec.description,
        additional_constraints='; '.join(spec.constraints(full=False)),
        read_only=spec.read_only,
        dynamic_typing=spec.kind.startswith('float') or spec.optional,
    )
    if spec.range is not None and spec.kind == 'int':
        d.integer_range = [
            IntegerRange(from_value=int(spec.range[0]), to_value=int(spec.range[1]), step=1)
        ]
    elif spec.range is not None and spec.kind == 'float':
        d.floating_point_range = [
            FloatingPointRange(
                from_value=float(spec.range[0]), to_value=float(spec.range[1]), step=0.0
            )
        ]
    return d


def plain(value: Any) -> Any:
    """A parameter value as plain Python (rclpy gives arrays as array.array)."""
    if value is None:
        return []
    if isinstance(value, (array.array, tuple, list)):
        return list(value)
    return value


class RosLog:
    """NodeCore's log calls on the node's rcutils logger."""

    def __init__(self, logger: Any) -> None:
        self._logger = logger

    def info(self, msg: str) -> None:
        self._logger.info(msg)

    def warning(self, msg: str) -> None:
        self._logger.warning(msg)

    def error(self, msg: str) -> None:
        self._logger.error(msg)


class PerceptionNode(LifecycleNode):
    """Colour + aligned depth + camera_info in; detections, grasps, markers, overlay out."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(NODE_NAME, **kwargs)
        self._core: NodeCore | None = None
        self._specs: dict[str, ParamSpec] = {}
        self._declare_problems: list[str] = []
        for spec in parameter_specs():
            self._declare(spec)
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self._types = ros_message_types()
        self._segmenter: Any = None
        self._pubs: dict[str, Any] = {}
        self._subs: list[Any] = []
        self._sync: Any = None
        self._tf_buffer: Buffer | None = None
        self._tf_listener: TransformListener | None = None
        self._worker: threading.Thread | None = None
        self._state = 'unconfigured'
        self._io_group = MutuallyExclusiveCallbackGroup()
        self._diag_group = MutuallyExclusiveCallbackGroup()
        self._diag_pub = self.create_publisher(
            self._types.DiagnosticArray, '/diagnostics', 10, callback_group=self._diag_group
        )
        period = float(self.get_parameter('node.diagnostics_period_s').value or 1.0)
        self._diag_timer = self.create_timer(
            period, self._publish_diagnostics, callback_group=self._diag_group
        )
        try:  # report bad settings right away, not only when someone configures
            self._read_config()
        except PerceptionError as err:
            self.get_logger().error(f'invalid parameters (configure will fail): {err}')
        self.get_logger().info(
            'unconfigured; configure and activate it (the launch files do with autostart:=true)'
        )

    # --- parameters -------------------------------------------------------------------------

    def _declare(self, spec: ParamSpec) -> None:
        self._specs[spec.name] = spec
        default = None if spec.optional and spec.default == [] else spec.default
        try:
            self.declare_parameter(spec.name, default, descriptor(spec))
        except Exception as err:  # an override of the wrong type or out of range
            self._declare_problems.append(f'{spec.name}: {err}')
            if not self.has_parameter(spec.name):
                self.declare_parameter(spec.name, default, descriptor(spec), ignore_override=True)

    def _flat_parameters(self) -> dict[str, Any]:
        out = {}
        for name in self._specs:
            try:
                out[name] = plain(self.get_parameter(name).value)
            except Exception:  # declared by type only and never set: unset
                out[name] = []
        return out

    def _read_config(self) -> PerceptionConfig:
        """The validated settings; ConfigError lists every bad parameter by name."""
        if self._declare_problems:
            raise PerceptionError(
                'parameters rejected at declaration:\n  ' + '\n  '.join(self._declare_problems)
            )
        return PerceptionConfig.from_flat(self._flat_parameters(), source=self.get_name())

    def _on_set_parameters(self, params: list[Parameter]) -> SetParametersResult:
        """Validate a change as a whole config; the core applies it before the next frame."""
        ours = {p.name: plain(p.value) for p in params if p.name in self._specs}
        if not ours:
            return SetParametersResult(successful=True)
        try:
            config = PerceptionConfig.from_flat(
                {**self._flat_parameters(), **ours}, source='parameter change'
            )
        except PerceptionError as err:
            return SetParametersResult(successful=False, reason=str(err))
        if self._core is not None:
            self._core.request_config(config)
        return SetParametersResult(successful=True)

    # --- lifecycle --------------------------------------------------------------------------

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        try:
            config = self._read_config()
            self._segmenter = build_segmenter(config.segmentation)
            pipeline = build_pipeline(config, segmenter=self._segmenter)
        except PerceptionError as err:
            self.get_logger().error(f'configure failed: {err}')
            return TransitionCallbackReturn.FAILURE
        except Exception:
            self.get_logger().error(f'configure failed:\n{traceback.format_exc()}')
            return TransitionCallbackReturn.FAILURE
        self._tf_buffer = Buffer()
        self._tf_listener = TransformListener(self._tf_buffer, self)
        self._core = NodeCore(
            config,
            pipeline,
            self._types,
            log=RosLog(self.get_logger()),
            lookup=self._lookup,
            rebuild=lambda c: build_pipeline(c, segmenter=self._segmenter),
            segmenter_name=getattr(self._segmenter, 'name', ''),
            provider=getattr(self._segmenter, 'provider', ''),
        )
        t = self._types
        kinds = {
            'detections': t.Detection3DArray,
            'grasps': t.PoseArray,
            'markers': t.MarkerArray,
            'overlay': t.Image,
            'points': t.PointCloud2,
        }
        for name in OUTPUTS:
            self._pubs[name] = self.create_lifecycle_publisher(kinds[name], f'~/{name}', 5)
        self.get_logger().info(
            f'configured: {self._core.segmenter_name} on {self._core.provider}, '
            f'poses in {config.frames.target_frame}'
        )
        self._state = 'inactive'
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        try:
            self._subscribe()
        except Exception:  # rclpy would turn it into a silent ERROR transition
            self.get_logger().error(f'activate failed:\n{traceback.format_exc()}')
            self._stop()
            return TransitionCallbackReturn.FAILURE
        return super().on_activate(state)

    def _subscribe(self) -> None:
        """Subscriptions and the processing thread."""
        core = self._core
        if core is None:
            raise RuntimeError('activate before configure')
        node = core.config.node
        qos = (
            QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE)
            if node.reliable
            else qos_profile_sensor_data
        )
        t = self._types
        color, depth = (
            message_filters.Subscriber(
                self, t.Image, _topic(node.camera_namespace, name), qos_profile=qos,
                callback_group=self._io_group,
            )
            for name in (node.color_topic, node.depth_topic)
        )  # fmt: skip
        # Registered before the synchronizer, so they see each message first: after a bag
        # loop the synchronizer's queues hold stamps from the loop's end, which are larger
        # than every new one; it would evict each new message as the oldest and never pair
        # again. Emptying the queues on a step back in time avoids that.
        for sub in (color, depth):
            watch = ClockJumpDetector(max_gap_s=1e9)  # only steps back matter here
            sub.registerCallback(self._watch_stamps, watch)
        self._sync = message_filters.ApproximateTimeSynchronizer(
            [color, depth], node.sync_queue_size, node.sync_slop_s
        )
        self._sync.registerCallback(core.on_frame)
        info = self.create_subscription(
            CameraInfo,
            _topic(node.camera_namespace, node.camera_info_topic),
            core.on_camera_info,
            qos,
            callback_group=self._io_group,
        )
        self._subs = [
            s
            for s in (getattr(color, 'sub', None), getattr(depth, 'sub', None), info)
            if s is not None
        ]
        core.slot.reopen()
        self._worker = threading.Thread(target=self._work, name='perception', daemon=True)
        self._worker.start()
        self._state = 'active'
        self.get_logger().info(
            f'active: listening on {_topic(node.camera_namespace, node.color_topic)} and '
            f'{_topic(node.camera_namespace, node.depth_topic)}'
        )

    def _watch_stamps(self, msg: Any, watch: ClockJumpDetector) -> None:
        jump = watch.observe(stamp_to_ns(msg.header.stamp))
        if jump is not None and jump.backwards and self._sync is not None:
            for queue in getattr(self._sync, 'queues', ()):
                queue.clear()

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop()
        if self._core is not None and 'markers' in self._pubs:
            self._pubs['markers'].publish(self._core.clear_markers(self._now_ns()))
        self._state = 'inactive'
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._release()
        self._state = 'unconfigured'
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop()
        self._release()
        self._state = 'finalized'
        return TransitionCallbackReturn.SUCCESS

    def _stop(self) -> None:
        """Unsubscribe and end the worker (it finishes the frame it is on)."""
        for sub in self._subs:
            self.destroy_subscription(sub)
        self._subs, self._sync = [], None
        if self._core is not None:
            self._core.slot.close()
        if self._worker is not None:
            self._worker.join()
            self._worker = None
        if self._core is not None:
            self._core.slot.clear()

    def _release(self) -> None:
        for pub in self._pubs.values():
            self.destroy_lifecycle_publisher(pub)
        self._pubs = {}
        if self._tf_listener is not None:
            self._tf_listener.unregister()
        self._tf_listener = self._tf_buffer = None
        self._core = self._segmenter = None

    # --- work -------------------------------------------------------------------------------

    def _work(self) -> None:
        core = self._core
        assert core is not None
        while not core.slot.closed:
            try:
                out = core.step(
                    timeout=WORKER_POLL_S,
                    overlay=self._pubs['overlay'].get_subscription_count() > 0,
                    points=self._pubs['points'].get_subscription_count() > 0,
                )
            except Exception as err:  # a bug: report once, keep the node alive
                if core.faults.report(f'internal:{type(err).__name__}', str(err)):
                    self.get_logger().error(f'frame failed:\n{traceback.format_exc()}')
                continue
            if out is not None:
                self._publish(out)

    def _publish(self, out: Outputs) -> None:
        for name in OUTPUTS:
            msg = getattr(out, name)
            if msg is not None:
                self._pubs[name].publish(msg)

    def _lookup(self, target: str, source: str) -> np.ndarray:
        """Latest T_target_source from TF (camera mounts are static in a cell)."""
        buffer, core = self._tf_buffer, self._core
        if buffer is None or core is None:
            raise LookupError('TF is not running')
        timeout = Duration(seconds=core.config.frames.tf_timeout_s)
        try:
            tf = buffer.lookup_transform(target, source, Time(), timeout=timeout)
        except TransformException as err:
            raise LookupError(str(err)) from None
        q, p = tf.transform.rotation, tf.transform.translation
        return make_transform(matrix_from_quaternion([q.x, q.y, q.z, q.w]), [p.x, p.y, p.z])

    def _now_ns(self) -> int:
        return int(self.get_clock().now().nanoseconds)

    def _publish_diagnostics(self) -> None:
        name = f'{self.get_name()}: perception'
        if self._core is not None:
            report = self._core.report(name=name, state=self._state)
        else:
            report = messages.DiagnosticReport(
                name=name,
                hardware_id='',
                level='OK' if not self._declare_problems else 'ERROR',
                message=self._state if not self._declare_problems else 'invalid parameters',
                values=(('state', self._state),),
            )
        self._diag_pub.publish(messages.diagnostics(self._types, self._now_ns(), [report]))


def _topic(namespace: str, name: str) -> str:
    """`name` under `namespace` ('' keeps it relative to the node's namespace)."""
    ns = namespace.rstrip('/')
    return f'{ns}/{name.lstrip("/")}' if ns else name


def main(args: list[str] | None = None) -> None:
    """`ros2 run pkg_perception perception_node` (then configure + activate it)."""
    rclpy.init(args=args)
    node = PerceptionNode()
    executor = MultiThreadedExecutor(num_threads=4)
    executor.add_node(node)
    try:
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node._stop()
        node.destroy_node()
        rclpy.try_shutdown()


if __name__ == '__main__':
    main()
