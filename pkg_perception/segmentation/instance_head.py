# Copyright 2026 The pkg_perception Authors
# SPDX-License-Identifier: Apache-2.0
"""A small per-instance classifier that re-classes and re-scores decoded masks.

It reads one feature row per mask (`instance_features.py`) and gives two things the
per-pixel network cannot: the parcel class judged from the whole mask (size in metres,
thickness, flatness) and the expected overlap of the mask with its parcel. The score that
ranks detections is then P(class) x expected overlap, so a confident fragment ranks below a
whole parcel. It is a small ensemble of two-layer perceptrons (their output logits
averaged: one perceptron's choice between a box and an envelope swings with its seed on
some cells, the average does not), about 30 k weights in all, fitted by
`pkg-perception fit-instance-head` and stored as JSON in the ONNX file's metadata_props, so
the model file stays the only artefact; numpy runs it in well under a millisecond.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from pkg_perception.errors import ModelError
from pkg_perception.segmentation.instance_features import FEATURE_NAMES

METADATA_KEY = 'instance_head'
# Outputs: P(not a parcel, or overlap < 0.5) and P(class) for the four parcel classes, then
# one logit of the mask's expected overlap (IoU) with the parcel it covers most.
OUTPUTS = ('none', 'box', 'polybag', 'mailer', 'envelope', 'iou')


@dataclass(frozen=True)
class Perceptron:
    """Linear-ReLU layers; the last layer is linear."""

    weights: tuple[npt.NDArray[np.float64], ...]  # (out, in) each
    biases: tuple[npt.NDArray[np.float64], ...]

    def __call__(self, x: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        last = len(self.weights) - 1
        for k, (w, b) in enumerate(zip(self.weights, self.biases, strict=True)):
            x = x @ w.T + b
            if k < last:
                x = np.maximum(x, 0.0)
        return x

    def shapes_chain(self, inputs: int, outputs: int) -> bool:
        w, b = self.weights, self.biases
        return (
            len(w) == len(b) >= 1
            and all(a.ndim == 2 and c.shape == (a.shape[0],) for a, c in zip(w, b, strict=True))
            and w[0].shape[1] == inputs
            and w[-1].shape[0] == outputs
            and all(a.shape[0] == c.shape[1] for a, c in itertools.pairwise(w))
        )


@dataclass(frozen=True)
class InstanceHead:
    """Standardize the features, then average the members' output logits."""

    features: tuple[str, ...]
    mean: npt.NDArray[np.float64]
    scale: npt.NDArray[np.float64]
    members: tuple[Perceptron, ...]

    def predict(
        self, rows: npt.NDArray[np.floating]
    ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
        """(n, F) feature rows -> (n, 5) class probabilities and (n,) expected overlap."""
        x = np.asarray(rows, dtype=np.float64).reshape(-1, len(self.features)) - self.mean
        x = x / self.scale
        x = np.mean([m(x) for m in self.members], axis=0)
        logits = x[:, :5]
        e = np.exp(logits - logits.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True), 1.0 / (1.0 + np.exp(-x[:, 5]))

    def to_json(self) -> str:
        return json.dumps(
            {
                'features': list(self.features),
                'outputs': list(OUTPUTS),
                'mean': _rounded(self.mean),
                'scale': _rounded(self.scale),
                'members': [
                    [
                        {'weight': _rounded(w), 'bias': _rounded(b)}
                        for w, b in zip(m.weights, m.biases, strict=True)
                    ]
                    for m in self.members
                ],
            },
            separators=(',', ':'),
        )

    @classmethod
    def from_json(cls, text: str, where: str) -> InstanceHead:
        """Parse and check against this build's features; `where` names the model file."""
        try:
            d = json.loads(text)
            head = cls(
                features=tuple(d['features']),
                mean=np.asarray(d['mean'], dtype=np.float64),
                scale=np.asarray(d['scale'], dtype=np.float64),
                members=tuple(
                    Perceptron(
                        weights=tuple(np.asarray(a['weight'], dtype=np.float64) for a in m),
                        biases=tuple(np.asarray(a['bias'], dtype=np.float64) for a in m),
                    )
                    for m in d['members']
                ),
            )
            outputs = tuple(d['outputs'])
        except (KeyError, TypeError, ValueError, IndexError) as err:
            raise ModelError(
                f'{where}: unreadable {METADATA_KEY} metadata ({err}); refit it with '
                '`pkg-perception fit-instance-head`'
            ) from None
        if head.features != FEATURE_NAMES or outputs != OUTPUTS:
            raise ModelError(
                f'{where}: its instance head reads features {list(head.features)} and gives '
                f'{list(outputs)}; this package computes {list(FEATURE_NAMES)} for '
                f'{list(OUTPUTS)}. Refit it with `pkg-perception fit-instance-head`'
            )
        head.check()
        return head

    def check(self) -> None:
        n = len(self.features)
        shapes_ok = (
            self.mean.shape == (n,)
            and self.scale.shape == (n,)
            and len(self.members) >= 1
            and all(m.shapes_chain(n, len(OUTPUTS)) for m in self.members)
        )
        if not shapes_ok:
            raise ModelError(
                'instance head layer shapes do not chain from '
                f'{n} features to {len(OUTPUTS)} outputs; refit it with '
                '`pkg-perception fit-instance-head`'
            )
        values = [self.mean, self.scale]
        for m in self.members:
            values += [*m.weights, *m.biases]
        if not all(np.isfinite(v).all() for v in values) or (self.scale <= 0).any():
            raise ModelError(
                'instance head has non-finite weights or a non-positive scale; refit it with '
                '`pkg-perception fit-instance-head`'
            )


def _rounded(a: npt.NDArray[np.floating]) -> list:
    """Six decimals: the outputs move by < 1e-5 and the JSON stays small."""
    return np.asarray(a, dtype=np.float64).round(6).tolist()
