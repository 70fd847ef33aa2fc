# Copyright 2026 The pkg_perception Authors
# SPDX-License-Identifier: Apache-2.0
"""Training samples from any labelled RGB-D frame: model input plus its three targets."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields

import numpy as np
import numpy.typing as npt

from pkg_perception.frames import CameraModel
from pkg_perception.segmentation.belt import BeltPlane
from pkg_perception.segmentation.inputs import InputSpec, prepare_input
from pkg_perception.training.targets import (
    class_map,
    downsample_labels,
    edge_distance,
    instance_index,
)


@dataclass(frozen=True)
class Sample:
    """One frame, stored compactly: float16 input, uint8 targets."""

    inputs: npt.NDArray[np.float16]  # (5, H, W)
    classes: npt.NDArray[np.uint8]  # (H / output stride, W / output stride), 0 = background
    edge: npt.NDArray[np.uint8]  # same size, edge distance * 255
    instances: npt.NDArray[np.uint8]  # same size, instances numbered 1..k in the frame, 0 = belt


SHARD_KEYS = tuple(f.name for f in fields(Sample))  # the arrays of a shard on disk


def make_sample(
    spec: InputSpec,
    color: npt.NDArray[np.uint8],
    depth: npt.NDArray[np.float32],
    camera: CameraModel,
    belt: BeltPlane,
    instance_ids: npt.NDArray[np.integer],
    class_of: Mapping[int, int],
    output_stride: int,
) -> Sample:
    """Build the sample exactly as inference will see the frame."""
    x = prepare_input(spec, color, depth, camera, belt).tensor[0]
    labels = downsample_labels(
        instance_ids, spec.width // output_stride, spec.height // output_stride
    )
    edge = np.round(edge_distance(labels) * 255).astype(np.uint8)
    return Sample(x.astype(np.float16), class_map(labels, class_of), edge, instance_index(labels))


def stack(samples: list[Sample]) -> dict[str, np.ndarray]:
    """Samples -> arrays with a leading frame axis (the shard format on disk)."""
    return {k: np.stack([getattr(s, k) for s in samples]) for k in SHARD_KEYS}
