# Copyright 2026 The pkg_perception Authors
# SPDX-License-Identifier: Apache-2.0
"""PerceptionResult -> the node's output messages, without importing ROS.

Every builder takes a `MessageTypes`: the node fills it with rclpy's classes, the tests with
the `rosbags` typestore's, so the exact code that runs in the node is checked here. Builders
set every field explicitly (the typestore classes have no defaults) and use plain Python
scalars (rclpy's setters reject numpy integers and float32).

Layout for planners (README "Messages"): every output of a frame carries the colour image's
stamp; poses are in `result.frame_id` (the target frame, or the camera's optical frame when
TF failed); a grasp pose has +z along the approach (into the parcel) and +y the closing
direction of a parallel-jaw gripper.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from pkg_perception.classes import ParcelClass
from pkg_perception.frames import RGBDFrame
from pkg_perception.geometry import back_project
from pkg_perception.results import GraspCandidate, Parcel, PerceptionResult
from pkg_perception.ros.conversions import IMAGE_ENCODINGS, ns_to_sec_nanosec
from pkg_perception.sim.preview import CLASS_COLORS_BGR
from pkg_perception.transforms import Matrix4, quaternion_from_matrix

MARKER_NAMESPACES = ('parcels', 'grasps', 'labels')
ARROW_LENGTH_M = 0.12
TEXT_HEIGHT_M = 0.03
BOX_ALPHA = 0.35
INT32_MAX = 2**31 - 1

# PointCloud2 layout of ~/points: RViz reads `rgb` as a float32 holding 0x00RRGGBB bits.
POINT_DTYPE = np.dtype(
    [('x', '<f4'), ('y', '<f4'), ('z', '<f4'), ('rgb', '<u4'), ('track_id', '<u4')]
)
POINT_FIELDS = (('x', 'FLOAT32'), ('y', 'FLOAT32'), ('z', 'FLOAT32'), ('rgb', 'FLOAT32'))
POINT_FIELDS_ALL = (*POINT_FIELDS, ('track_id', 'UINT32'))

_MSG_NAMES = {
    'Header': 'std_msgs/msg/Header',
    'Time': 'builtin_interfaces/msg/Time',
    'Duration': 'builtin_interfaces/msg/Duration',
    'ColorRGBA': 'std_msgs/msg/ColorRGBA',
    'Point': 'geometry_msgs/msg/Point',
    'Quaternion': 'geometry_msgs/msg/Quaternion',
    'Vector3': 'geometry_msgs/msg/Vector3',
    'Pose': 'geometry_msgs/msg/Pose',
    'PoseWithCovariance': 'geometry_msgs/msg/PoseWithCovariance',
    'PoseArray': 'geometry_msgs/msg/PoseArray',
    'ObjectHypothesis': 'vision_msgs/msg/ObjectHypothesis',
    'ObjectHypothesisWithPose': 'vision_msgs/msg/ObjectHypothesisWithPose',
    'BoundingBox3D': 'vision_msgs/msg/BoundingBox3D',
    'Detection3D': 'vision_msgs/msg/Detection3D',
    'Detection3DArray': 'vision_msgs/msg/Detection3DArray',
    'Marker': 'visualization_msgs/msg/Marker',
    'MarkerArray': 'visualization_msgs/msg/MarkerArray',
    'MeshFile': 'visualization_msgs/msg/MeshFile',
    'CompressedImage': 'sensor_msgs/msg/CompressedImage',
    'Image': 'sensor_msgs/msg/Image',
    'PointField': 'sensor_msgs/msg/PointField',
    'PointCloud2': 'sensor_msgs/msg/PointCloud2',
    'DiagnosticArray': 'diagnostic_msgs/msg/DiagnosticArray',
    'DiagnosticStatus': 'diagnostic_msgs/msg/DiagnosticStatus',
    'KeyValue': 'diagnostic_msgs/msg/KeyValue',
}


@dataclass(frozen=True)
class MessageTypes:
    """The message classes the builders use, plus how to fill a `uint8[]` field.

    rosbags wants a numpy uint8 array there; rclpy wants `array.array('B')` (its setter
    checks any other sequence element by element, which costs milliseconds per image).
    """

    Header: Any
    Time: Any
    Duration: Any
    ColorRGBA: Any
    Point: Any
    Quaternion: Any
    Vector3: Any
    Pose: Any
    PoseWithCovariance: Any
    PoseArray: Any
    ObjectHypothesis: Any
    ObjectHypothesisWithPose: Any
    BoundingBox3D: Any
    Detection3D: Any
    Detection3DArray: Any
    Marker: Any
    MarkerArray: Any
    MeshFile: Any
    CompressedImage: Any
    Image: Any
    PointField: Any
    PointCloud2: Any
    DiagnosticArray: Any
    DiagnosticStatus: Any
    KeyValue: Any
    pack_bytes: Callable[[npt.NDArray[Any]], Any]

    @classmethod
    def resolve(
        cls, lookup: Callable[[str], Any], pack_bytes: Callable[[npt.NDArray[Any]], Any]
    ) -> MessageTypes:
        """Look every class up by its full name, e.g. 'sensor_msgs/msg/Image'."""
        return cls(**{k: lookup(v) for k, v in _MSG_NAMES.items()}, pack_bytes=pack_bytes)

    @classmethod
    def from_typestore(cls, store: Any) -> MessageTypes:
        """The classes of a `rosbags` typestore (pkg_perception.bag.types.typestore)."""
        return cls.resolve(
            store.types.__getitem__, lambda a: np.ascontiguousarray(a).reshape(-1).view(np.uint8)
        )

    @staticmethod
    def full_names() -> dict[str, str]:
        """Short name -> 'pkg/msg/Name' of every class needed."""
        return dict(_MSG_NAMES)


# --- small pieces ---------------------------------------------------------------------------


def header(types: MessageTypes, stamp_ns: int, frame_id: str) -> Any:
    sec, nanosec = ns_to_sec_nanosec(int(stamp_ns))
    return types.Header(stamp=types.Time(sec=sec, nanosec=nanosec), frame_id=str(frame_id))


def pose(types: MessageTypes, t: Matrix4) -> Any:
    """4x4 transform -> geometry_msgs/Pose (quaternion x, y, z, w with w >= 0)."""
    q = quaternion_from_matrix(t[:3, :3])
    return types.Pose(
        position=point(types, t[:3, 3]),
        orientation=types.Quaternion(x=float(q[0]), y=float(q[1]), z=float(q[2]), w=float(q[3])),
    )


def point(types: MessageTypes, p: npt.ArrayLike) -> Any:
    x, y, z = (float(v) for v in np.asarray(p, dtype=np.float64).reshape(3))
    return types.Point(x=x, y=y, z=z)


def _vector(types: MessageTypes, v: npt.ArrayLike) -> Any:
    x, y, z = (float(c) for c in np.asarray(v, dtype=np.float64).reshape(3))
    return types.Vector3(x=x, y=y, z=z)


def class_rgb(parcel_class: ParcelClass) -> tuple[float, float, float]:
    """The class colour of the previews, as 0..1 RGB."""
    b, g, r = CLASS_COLORS_BGR.get(parcel_class, (200, 200, 200))
    return r / 255.0, g / 255.0, b / 255.0


def best_grasps(result: PerceptionResult) -> dict[int, GraspCandidate]:
    """Track id -> its best grasp (result.grasps is best first)."""
    best: dict[int, GraspCandidate] = {}
    for g in result.grasps:
        best.setdefault(int(g.parcel_id), g)
    return best


def marker_id(track_id: int) -> int:
    """Marker ids are int32; track ids are non-negative and only need to be stable."""
    return int(track_id) & INT32_MAX


# --- ~/detections and ~/grasps ---------------------------------------------------------------

NO_GRASP_COVARIANCE = np.zeros(36)
NO_GRASP_COVARIANCE[0] = -1.0


def detections(types: MessageTypes, result: PerceptionResult) -> Any:
    """vision_msgs/Detection3DArray: one Detection3D per parcel.

    - `id`: the tracking id (decimal string), stable while the parcel is in view.
    - `bbox`: the parcel's oriented box (centre pose, full extents).
    - `results[0].hypothesis`: class label ('box', 'polybag', 'mailer', 'envelope') and the
      segmentation score; `results[1:]` the other classes the segmenter offers for the mask,
      most likely first, with their scores (`segmentation.decode.alternative_classes`).
    - `results[0].pose.pose`: the parcel's best grasp pose. A parcel without a grasp (one
      lying under another) gets its box centre there and `covariance[0] = -1`, the ROS
      idiom (sensor_msgs/Imu) for "no estimate".

    Detections are ordered like ~/grasps: parcels with the best grasp first.
    """
    hdr = header(types, result.stamp_ns, result.frame_id)
    best = best_grasps(result)
    rank = {pid: i for i, pid in enumerate(best)}
    ordered = sorted(result.parcels, key=lambda p: rank.get(int(p.track_id), len(rank)))
    others = {int(i.label): i.alternatives for i in result.segmentation.instances}
    dets = []
    for parcel in ordered:
        grasp = best.get(int(parcel.track_id))
        centre = pose(types, parcel.box.pose)
        hyp_pose = pose(types, grasp.pose) if grasp is not None else centre
        covariance = np.zeros(36) if grasp is not None else NO_GRASP_COVARIANCE.copy()
        classes = [(parcel.parcel_class, parcel.score), *others.get(int(parcel.label), ())]
        dets.append(
            types.Detection3D(
                header=hdr,
                results=[
                    types.ObjectHypothesisWithPose(
                        hypothesis=types.ObjectHypothesis(class_id=cls.label, score=float(score)),
                        pose=types.PoseWithCovariance(pose=hyp_pose, covariance=covariance),
                    )
                    for cls, score in classes
                ],
                bbox=types.BoundingBox3D(center=centre, size=_vector(types, parcel.box.size)),
                id=str(int(parcel.track_id)),
            )
        )
    return types.Detection3DArray(header=hdr, detections=dets)


def grasp_poses(types: MessageTypes, result: PerceptionResult) -> Any:
    """geometry_msgs/PoseArray of every grasp candidate, best first."""
    return types.PoseArray(
        header=header(types, result.stamp_ns, result.frame_id),
        poses=[pose(types, g.pose) for g in result.grasps],
    )


# --- ~/markers -------------------------------------------------------------------------------


def _marker(
    types: MessageTypes,
    hdr: Any,
    ns: str,
    ident: int,
    *,
    kind: str = 'CUBE',
    action: str = 'ADD',
    t: Matrix4 | None = None,
    scale: Sequence[float] = (1.0, 1.0, 1.0),
    rgba: Sequence[float] = (1.0, 1.0, 1.0, 1.0),
    points: Iterable[Any] = (),
    text: str = '',
) -> Any:
    m = types.Marker
    empty = types.pack_bytes(np.zeros(0, np.uint8))
    return m(
        header=hdr,
        ns=ns,
        id=int(ident),
        type=int(getattr(m, kind)),
        action=int(getattr(m, action)),
        pose=pose(types, np.eye(4) if t is None else t),
        scale=_vector(types, scale),
        color=types.ColorRGBA(
            r=float(rgba[0]), g=float(rgba[1]), b=float(rgba[2]), a=float(rgba[3])
        ),
        lifetime=types.Duration(sec=0, nanosec=0),
        frame_locked=False,
        points=list(points),
        colors=[],
        texture_resource='',
        texture=types.CompressedImage(header=hdr, format='', data=empty),
        uv_coordinates=[],
        text=text,
        mesh_resource='',
        mesh_file=types.MeshFile(filename='', data=empty),
        mesh_use_embedded_materials=False,
    )


def parcel_markers(
    types: MessageTypes, hdr: Any, parcel: Parcel, grasp: GraspCandidate | None
) -> list[Any]:
    """A translucent box, an arrow down the best grasp's approach and a text label."""
    ident = marker_id(parcel.track_id)
    r, g, b = class_rgb(parcel.parcel_class)
    out = [
        _marker(
            types,
            hdr,
            'parcels',
            ident,
            kind='CUBE',
            t=parcel.box.pose,
            scale=[max(float(s), 1e-3) for s in parcel.box.size],
            rgba=(r, g, b, BOX_ALPHA),
        )
    ]
    label = f'#{int(parcel.track_id)} {parcel.parcel_class.label} {parcel.score:.2f}'
    if grasp is not None:
        tip = grasp.pose[:3, 3]
        tail = tip - grasp.pose[:3, 2] * ARROW_LENGTH_M  # +z points into the parcel
        out.append(
            _marker(
                types,
                hdr,
                'grasps',
                ident,
                kind='ARROW',
                scale=(0.012, 0.024, 0.03),  # shaft diameter, head diameter, head length
                rgba=(0.1, 0.9, 0.2, 1.0),
                points=[point(types, tail), point(types, tip)],
            )
        )
        label += f'\n{grasp.kind.value} {grasp.score:.2f}'
    above = np.eye(4)
    above[:3, 3] = np.asarray(parcel.top_center) + np.asarray(parcel.top_normal) * 0.06
    out.append(
        _marker(
            types,
            hdr,
            'labels',
            ident,
            kind='TEXT_VIEW_FACING',
            t=above,
            scale=(0.0, 0.0, TEXT_HEIGHT_M),
            rgba=(1.0, 1.0, 1.0, 1.0),
            text=label,
        )
    )
    return out


class MarkerState:
    """Builds ~/markers and remembers what is on screen, to DELETE parcels that left.

    RViz keeps a marker until told otherwise; lifetimes would depend on RViz's clock, which
    differs from the bag's during playback, so explicit deletes are used instead.
    """

    def __init__(self) -> None:
        self._shown: dict[str, set[int]] = {ns: set() for ns in MARKER_NAMESPACES}
        self._clear_all = False

    def reset(self) -> None:
        """Start the next array with DELETEALL (tracker reset: ids start over)."""
        self._clear_all = True
        for ids in self._shown.values():
            ids.clear()

    def build(self, types: MessageTypes, result: PerceptionResult) -> Any:
        hdr = header(types, result.stamp_ns, result.frame_id)
        markers = []
        if self._clear_all:
            markers.append(_marker(types, hdr, '', 0, action='DELETEALL'))
            self._clear_all = False
        best = best_grasps(result)
        now: dict[str, set[int]] = {ns: set() for ns in MARKER_NAMESPACES}
        for parcel in result.parcels:
            for m in parcel_markers(types, hdr, parcel, best.get(int(parcel.track_id))):
                markers.append(m)
                now[m.ns].add(int(m.id))
        for ns in MARKER_NAMESPACES:
            for gone in sorted(self._shown[ns] - now[ns]):
                markers.append(_marker(types, hdr, ns, gone, action='DELETE'))
        self._shown = now
        return types.MarkerArray(markers=markers)

    def clear(self, types: MessageTypes, stamp_ns: int, frame_id: str) -> Any:
        """DELETEALL, e.g. on deactivate, so RViz shows no stale parcels."""
        for ids in self._shown.values():
            ids.clear()
        self._clear_all = False
        hdr = header(types, stamp_ns, frame_id)
        return types.MarkerArray(markers=[_marker(types, hdr, '', 0, action='DELETEALL')])


# --- ~/overlay -------------------------------------------------------------------------------


def overlay_rgb(frame: RGBDFrame, result: PerceptionResult) -> npt.NDArray[np.uint8]:
    """(H, W, 3) uint8 RGB: masks tinted by class, outlined, labelled with id, class, score."""
    seg = result.segmentation
    out = frame.color.copy()
    if not seg.instances:
        return out
    lut = np.zeros((int(seg.labels.max()) + 1, 3), np.uint8)
    track = {int(p.label): p for p in result.parcels}
    for inst in seg.instances:
        if inst.label < len(lut):
            r, g, b = class_rgb(inst.parcel_class)
            lut[inst.label] = (int(r * 255), int(g * 255), int(b * 255))
    inside = seg.labels > 0
    tint = lut[seg.labels]
    out[inside] = (out[inside].astype(np.uint16) + tint[inside]) // 2
    for inst in seg.instances:
        x0, y0 = inst.box[:2]
        crop = seg.crop(inst).astype(np.uint8)
        if not crop.any():
            continue
        contours, _ = cv2.findContours(
            crop, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE, offset=(x0, y0)
        )
        colour = tuple(int(c) for c in lut[inst.label]) if inst.label < len(lut) else (255,) * 3
        cv2.drawContours(out, contours, -1, colour, 2)
        parcel = track.get(int(inst.label))
        text = f'{inst.parcel_class.label} {inst.score:.2f}'
        if parcel is not None:
            text = f'#{int(parcel.track_id)} ' + text
        org = (x0 + 2, max(y0 + 14, 14))
        cv2.putText(out, text, org, cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 3, cv2.LINE_AA)
        cv2.putText(out, text, org, cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1)
    return out


def image(types: MessageTypes, hdr: Any, array: npt.NDArray[Any], encoding: str) -> Any:
    """(H, W[, C]) array -> sensor_msgs/Image, data filled with `types.pack_bytes`."""
    dtype, channels = IMAGE_ENCODINGS[encoding]
    data = np.ascontiguousarray(array).astype(dtype.newbyteorder('<'), copy=False)
    h, w = array.shape[:2]
    return types.Image(
        header=hdr,
        height=int(h),
        width=int(w),
        encoding=encoding,
        is_bigendian=0,
        step=int(w * channels * dtype.itemsize),
        data=types.pack_bytes(data.reshape(-1).view(np.uint8)),
    )


def overlay(types: MessageTypes, frame: RGBDFrame, result: PerceptionResult) -> Any:
    """~/overlay: rgb8 in the camera's optical frame, stamped like the colour image."""
    hdr = header(types, result.stamp_ns, frame.camera.frame_id)
    return image(types, hdr, overlay_rgb(frame, result), 'rgb8')


# --- ~/points --------------------------------------------------------------------------------


def parcel_points(
    frame: RGBDFrame, result: PerceptionResult, stride: int = 2
) -> npt.NDArray[np.void]:
    """Structured POINT_DTYPE array of parcel pixels (every `stride`-th row and column).

    Points are in the camera's optical frame, back-projected from the aligned depth: exact,
    and RViz moves them with TF like everything else.
    """
    labels = result.segmentation.labels
    lut = np.full(max(int(labels.max()) if labels.size else 0, 0) + 1, -1, np.int64)
    for p in result.parcels:
        if 0 < int(p.label) < len(lut):
            lut[int(p.label)] = int(p.track_id)
    ids_full = lut[labels]
    xyz, pixels = back_project(frame.depth, frame.camera, mask=ids_full >= 0, stride=stride)
    us, vs = pixels[:, 0], pixels[:, 1]
    rgb = frame.color[vs, us].astype(np.uint32)
    out = np.empty(len(xyz), POINT_DTYPE)
    out['x'], out['y'], out['z'] = xyz[:, 0], xyz[:, 1], xyz[:, 2]
    out['rgb'] = (rgb[:, 0] << 16) | (rgb[:, 1] << 8) | rgb[:, 2]
    out['track_id'] = ids_full[vs, us]
    return out


def point_cloud(types: MessageTypes, hdr: Any, points: npt.NDArray[np.void]) -> Any:
    """Structured POINT_DTYPE array -> sensor_msgs/PointCloud2 (unordered, dense)."""
    if points.dtype != POINT_DTYPE:
        raise ValueError(f'points must have dtype {POINT_DTYPE}, got {points.dtype}')
    pf = types.PointField
    field_msgs = [
        pf(
            name=name,
            offset=int(POINT_DTYPE.fields[name][1]),
            datatype=int(getattr(pf, kind)),
            count=1,
        )
        for name, kind in POINT_FIELDS_ALL
    ]
    n = len(points)
    return types.PointCloud2(
        header=hdr,
        height=1,
        width=n,
        fields=field_msgs,
        is_bigendian=False,
        point_step=POINT_DTYPE.itemsize,
        row_step=POINT_DTYPE.itemsize * n,
        data=types.pack_bytes(np.ascontiguousarray(points).view(np.uint8)),
        is_dense=True,
    )


def points(
    types: MessageTypes, frame: RGBDFrame, result: PerceptionResult, stride: int = 2
) -> Any:
    """~/points: parcel points in the camera's optical frame, stamped like the colour image."""
    hdr = header(types, result.stamp_ns, frame.camera.frame_id)
    return point_cloud(types, hdr, parcel_points(frame, result, stride))


def cloud_to_numpy(msg: Any) -> npt.NDArray[np.void]:
    """PointCloud2 written by `point_cloud` -> structured POINT_DTYPE array (for checks)."""
    raw = (
        np.frombuffer(memoryview(msg.data).cast('B'), np.uint8)
        if not isinstance(msg.data, np.ndarray)
        else msg.data
    )
    return raw.view(POINT_DTYPE)[: int(msg.width) * int(msg.height)].copy()


# --- /diagnostics ----------------------------------------------------------------------------


@dataclass(frozen=True)
class DiagnosticReport:
    """One DiagnosticStatus, ROS-free. level: 'OK', 'WARN', 'ERROR' or 'STALE'."""

    name: str
    hardware_id: str
    level: str
    message: str
    values: tuple[tuple[str, str], ...]


def diagnostics(types: MessageTypes, stamp_ns: int, reports: Sequence[DiagnosticReport]) -> Any:
    """diagnostic_msgs/DiagnosticArray of the reports, stamped `stamp_ns`.

    The level constant is taken from the class: rclpy's is a bytes object, rosbags' an int.
    """
    st = types.DiagnosticStatus
    return types.DiagnosticArray(
        header=header(types, stamp_ns, ''),
        status=[
            st(
                level=getattr(st, r.level),
                name=r.name,
                message=r.message,
                hardware_id=r.hardware_id,
                values=[types.KeyValue(key=str(k), value=str(v)) for k, v in r.values],
            )
            for r in reports
        ],
    )
