# Copyright 2026 The pkg_perception Authors
# SPDX-License-Identifier: Apache-2.0
"""The model file's own description (ONNX metadata_props), so no side file is needed."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from pkg_perception.classes import ParcelClass
from pkg_perception.errors import ModelError
from pkg_perception.segmentation.inputs import INPUT_CHANNELS, InputSpec
from pkg_perception.segmentation.instance_head import METADATA_KEY, InstanceHead

FORMAT = 'pkg_perception/parcelnet/v1'
CLASSES = ('background', *(c.label for c in ParcelClass))
QUANTIZED_FROM_KEY = 'quantized_from'


@dataclass(frozen=True)
class ModelMetadata:
    """What the runtime must know to feed the model and read its output."""

    name: str
    version: str
    spec: InputSpec
    output_stride: int
    classes: tuple[str, ...] = CLASSES
    embed_dims: int = 0  # embedding channels after the edge distance (none before 1.6)
    instance_head: InstanceHead | None = None  # re-classes and re-scores masks (1.7 on)
    # SHA-256 of the float model an INT8 model was quantized from ('' for a float model),
    # written by `pkg-perception quantize`: the runtime runs an INT8 sibling only in place
    # of that very file.
    quantized_from: str = ''

    def to_props(self, extra: dict[str, Any] | None = None) -> dict[str, str]:
        s = self.spec
        props = {
            'format': FORMAT,
            'name': self.name,
            'version': self.version,
            'classes': json.dumps(list(self.classes)),
            'input_size': json.dumps([s.width, s.height]),
            'input_channels': json.dumps(
                ['red', 'green', 'blue', 'height_above_belt', 'depth_valid']
            ),
            'normalization': json.dumps(
                {
                    'color': f'(rgb / 255 - {s.color_mean}) / {s.color_std}',
                    'color_mean': s.color_mean,
                    'color_std': s.color_std,
                    'height_scale_m': s.height_scale,
                }
            ),
            'depth_range': json.dumps(
                {'height_above_belt_m': list(s.height_range), 'invalid': 'NaN or 0 -> 0'}
            ),
            'output_stride': str(self.output_stride),
            'outputs': json.dumps(
                ['class logits (5)', 'edge distance logit (1)']
                + ([f'instance embedding ({self.embed_dims})'] if self.embed_dims else [])
            ),
            'embed_dims': str(self.embed_dims),
        }
        if self.instance_head is not None:
            props[METADATA_KEY] = self.instance_head.to_json()
        for k, v in (extra or {}).items():
            props[k] = v if isinstance(v, str) else json.dumps(v)
        return props

    @classmethod
    def from_props(cls, props: dict[str, str], where: str) -> ModelMetadata:
        """Parse and check; `where` (the file) goes into every error message."""
        if props.get('format') != FORMAT:
            raise ModelError(
                f'{where}: metadata format {props.get("format")!r}, expected {FORMAT!r}; '
                'export the model with `pkg-perception export`'
            )
        try:
            classes = tuple(json.loads(props['classes']))
            width, height = json.loads(props['input_size'])
            norm = json.loads(props['normalization'])
            rng = json.loads(props['depth_range'])['height_above_belt_m']
            spec = InputSpec(
                width=int(width),
                height=int(height),
                color_mean=float(norm['color_mean']),
                color_std=float(norm['color_std']),
                height_scale=float(norm['height_scale_m']),
                height_range=(float(rng[0]), float(rng[1])),
            )
            meta = cls(
                name=props.get('name', 'parcelnet'),
                version=props.get('version', '?'),
                spec=spec,
                output_stride=int(props['output_stride']),
                classes=classes,
                embed_dims=int(props.get('embed_dims', '0')),
                instance_head=(
                    InstanceHead.from_json(props[METADATA_KEY], where)
                    if METADATA_KEY in props
                    else None
                ),
                quantized_from=props.get(QUANTIZED_FROM_KEY, ''),
            )
        except (KeyError, ValueError, TypeError) as err:
            raise ModelError(
                f'{where}: unreadable metadata ({err}); re-export the model'
            ) from None
        if classes != CLASSES:
            raise ModelError(
                f'{where}: model classes {list(classes)} differ from this package '
                f'{list(CLASSES)}; use a model trained for these classes'
            )
        return meta

    def expected_input(self) -> list[int]:
        return [1, INPUT_CHANNELS, self.spec.height, self.spec.width]

    def expected_output(self) -> list[int]:
        s = self.output_stride
        channels = len(self.classes) + 1 + self.embed_dims
        return [1, channels, self.spec.height // s, self.spec.width // s]
