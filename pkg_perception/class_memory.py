# Copyright 2026 The pkg_perception Authors
# SPDX-License-Identifier: Apache-2.0
"""A parcel's class pooled over the frames its track has seen.

A parcel does not change class as it rides the belt, but one view of it can mislead the
segmenter: a flat box half hidden under an envelope looks like an envelope, a mailer seen
at the image's edge like a box. Each track keeps the mean log-probability of every class
over its earlier frames; a frame's class distribution is multiplied by the geometric mean of
those earlier ones (to the power `weight`) and normalized. With weight 1 the past counts as
much as the present, however long the track: a new view still moves the class, and a track
that jumps onto another parcel is outvoted after a frame or two.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import replace

import numpy as np
import numpy.typing as npt

from pkg_perception.classes import ParcelClass
from pkg_perception.segmentation.instances import Instance

_CLASSES = tuple(ParcelClass)
_FLOOR = 1e-6  # probabilities are clipped here before the log: one 0 must not veto a class


class ClassMemory:
    """Per track: how many frames, and the sum of their class log-probabilities."""

    def __init__(self, weight: float = 1.0) -> None:
        self.weight = weight
        self._evidence: dict[int, tuple[int, npt.NDArray[np.float64]]] = {}

    def reset(self) -> None:
        self._evidence.clear()

    def fuse(self, instance: Instance, track_id: int) -> Instance:
        """The instance with its classes and scores pooled over its track; records this frame.

        Instances without a class distribution (`class_probs`), or without a track, come
        back unchanged. The score keeps its other factors (for the model: P(a parcel) and
        the expected overlap); only the class probability in it changes.
        """
        probs = np.asarray(instance.class_probs, dtype=np.float64)
        if track_id <= 0 or probs.shape != (len(_CLASSES),) or self.weight <= 0:
            return instance
        log_p = np.log(np.maximum(probs, _FLOOR))
        count, total = self._evidence.get(track_id, (0, np.zeros(len(_CLASSES))))
        self._evidence[track_id] = (count + 1, total + log_p)
        if count == 0:
            return instance
        pooled = log_p + self.weight * total / count
        fused = np.exp(pooled - pooled.max())
        fused /= fused.sum()
        factor = instance.score / max(float(probs[_CLASSES.index(instance.parcel_class)]), _FLOOR)
        order = np.argsort(-fused, kind='stable')
        scores = [(_CLASSES[i], float(fused[i] * factor)) for i in order]
        return replace(
            instance,
            parcel_class=scores[0][0],
            score=scores[0][1],
            alternatives=tuple(scores[1 : 1 + len(instance.alternatives)]),
            class_probs=tuple(float(v) for v in fused),
        )

    def forget(self, live: Collection[int]) -> None:
        """Drop the evidence of tracks that ended."""
        for track_id in [t for t in self._evidence if t not in live]:
            del self._evidence[track_id]
