# Copyright 2026 The pkg_perception Authors
# SPDX-License-Identifier: Apache-2.0
"""The interface every segmenter offers to the pipeline."""

from __future__ import annotations

from typing import Protocol

import numpy as np
import numpy.typing as npt

from pkg_perception.frames import RGBDFrame
from pkg_perception.segmentation.belt import BeltPlane
from pkg_perception.segmentation.instances import Segmentation


class Segmenter(Protocol):
    """Frame in, instances out.

    `belt` is the belt plane in the camera's optical frame; `belt_velocity` (m/s, same
    frame) is how fast it moves, when known: a segmenter that looks back at the previous
    frame moves what it saw there by it. The others ignore it.
    """

    name: str  # shown in diagnostics and reports, e.g. 'parcelnet-1.0' or 'geometric'
    provider: str  # e.g. 'CUDAExecutionProvider', 'CPUExecutionProvider', 'numpy'

    def segment(
        self,
        frame: RGBDFrame,
        belt: BeltPlane,
        belt_velocity: npt.NDArray[np.float64] | None = None,
    ) -> Segmentation: ...
