# Copyright 2026 The pkg_perception Authors
# SPDX-License-Identifier: Apache-2.0
"""ParcelNet-shaped logits of a label image, for tests of the post-process."""

from __future__ import annotations

import numpy as np

from pkg_perception.classes import ParcelClass
from pkg_perception.training.targets import edge_distance


def logits_of(labels: np.ndarray, classes: dict[int, ParcelClass]) -> np.ndarray:
    """Confident logits of a label image: class per label, the edge distance it implies."""
    logits = np.full((6, *labels.shape), -8.0, dtype=np.float32)
    logits[0][labels == 0] = 8.0
    for label, cls in classes.items():
        logits[int(cls)][labels == label] = 8.0
    edge = edge_distance(labels)
    logits[5] = np.log(np.clip(edge, 1e-4, 1 - 1e-4) / np.clip(1 - edge, 1e-4, 1))
    return logits
