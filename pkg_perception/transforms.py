# Copyright 2026 The pkg_perception Authors
# SPDX-License-Identifier: Apache-2.0
"""Rigid transforms as 4x4 float64 matrices; quaternions in ROS order (x, y, z, w)."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from scipy.spatial.transform import Rotation

Matrix4 = npt.NDArray[np.float64]


def make_transform(rotation: npt.ArrayLike, translation: npt.ArrayLike) -> Matrix4:
    """Build T = [R t; 0 1] from a (3, 3) rotation and a (3,) translation in metres."""
    t = np.eye(4)
    t[:3, :3] = np.asarray(rotation, dtype=np.float64)
    t[:3, 3] = np.asarray(translation, dtype=np.float64)
    return t


def invert(t: Matrix4) -> Matrix4:
    """Inverse of a rigid transform, without a general matrix inverse."""
    r = t[:3, :3]
    return make_transform(r.T, -r.T @ t[:3, 3])


def transform_points(t: Matrix4, points: npt.NDArray[np.floating]) -> npt.NDArray[np.float64]:
    """Apply T to (N, 3) points."""
    return points @ t[:3, :3].T + t[:3, 3]


def quaternion_from_matrix(r: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """(x, y, z, w) unit quaternion, w >= 0, of a (3, 3) rotation."""
    q = Rotation.from_matrix(np.asarray(r, dtype=np.float64)).as_quat()
    return -q if q[3] < 0 else q


def matrix_from_quaternion(q: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """(3, 3) rotation of an (x, y, z, w) quaternion (normalised first)."""
    return Rotation.from_quat(np.asarray(q, dtype=np.float64)).as_matrix()


def rotation_z(angle: float) -> npt.NDArray[np.float64]:
    """Rotation by `angle` radians about +z."""
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def rotation_between(a: npt.ArrayLike, b: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """Smallest rotation taking unit vector a onto unit vector b."""
    a = np.asarray(a, dtype=np.float64) / np.linalg.norm(a)
    b = np.asarray(b, dtype=np.float64) / np.linalg.norm(b)
    v = np.cross(a, b)
    c = float(np.dot(a, b))
    if c < -1.0 + 1e-12:  # opposite: rotate pi about any axis orthogonal to a
        axis = np.cross(a, [1.0, 0.0, 0.0])
        if np.linalg.norm(axis) < 1e-6:
            axis = np.cross(a, [0.0, 1.0, 0.0])
        return Rotation.from_rotvec(np.pi * axis / np.linalg.norm(axis)).as_matrix()
    vx = np.array([[0.0, -v[2], v[1]], [v[2], 0.0, -v[0]], [-v[1], v[0], 0.0]])
    return np.eye(3) + vx + vx @ vx / (1.0 + c)


class TransformTree:
    """Static transforms between named frames (what /tf_static carries), chained on lookup.

    Stores T_parent_child (maps child coordinates into the parent frame).
    """

    def __init__(self) -> None:
        self._edges: dict[str, dict[str, Matrix4]] = {}

    def add(self, parent: str, child: str, t_parent_child: Matrix4) -> None:
        """Record parent <- child; the reverse edge is derived."""
        self._edges.setdefault(parent, {})[child] = t_parent_child
        self._edges.setdefault(child, {})[parent] = invert(t_parent_child)

    @property
    def frames(self) -> list[str]:
        """All frame names known."""
        return sorted(self._edges)

    def lookup(self, target: str, source: str) -> Matrix4:
        """T_target_source: maps points in `source` coordinates into `target`.

        Raises:
            KeyError: when no chain of transforms connects the two frames.
        """
        if target == source:
            return np.eye(4)
        seen = {source}
        stack: list[tuple[str, Matrix4]] = [(source, np.eye(4))]
        while stack:
            frame, t_frame_source = stack.pop()
            for nxt, t_frame_nxt in self._edges.get(frame, {}).items():
                if nxt in seen:
                    continue
                t_nxt_source = invert(t_frame_nxt) @ t_frame_source
                if nxt == target:
                    return t_nxt_source
                seen.add(nxt)
                stack.append((nxt, t_nxt_source))
        raise KeyError(
            f'no transform from {source!r} to {target!r}; known frames: {", ".join(self.frames)}'
        )
