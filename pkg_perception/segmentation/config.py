# Copyright 2026 The pkg_perception Authors
# SPDX-License-Identifier: Apache-2.0
"""Segmentation settings (config section `segmentation`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from pkg_perception.errors import ConfigError
from pkg_perception.segmentation.decode import DecodeParams

PROVIDER_NAMES = ('tensorrt', 'cuda', 'cpu')
MirrorPass = Literal['gpu', 'always', 'never']


@dataclass(frozen=True)
class SegmentationConfig:
    """Which segmenter, on which ONNX Runtime providers, with which thresholds."""

    model_path: str = ''  # '' = the shipped models/parcelnet.onnx
    providers: tuple[str, ...] = PROVIDER_NAMES  # tried in this order
    threads: int = 2  # ONNX Runtime intra-op threads on the CPU provider
    trt_fp16: bool = True
    # On the CPU provider, run the model's INT8 sibling (`<model>.int8.onnx`, written by
    # `pkg-perception quantize` from that very file) when there is one: its 1/8 and 1/16
    # stages in 8-bit: about 0.65x the inference time on a 2-core CPU (models/README.md).
    cpu_int8: bool = True
    trt_cache_dir: str = '~/.cache/pkg_perception/trt'
    warmup_runs: int = 3
    fallback_to_geometric: bool = False  # when the model cannot be loaded
    use_geometric: bool = False  # run the depth-only baseline instead of the model
    min_valid_depth: float = 0.02  # below this share of valid depth pixels: empty + flag
    # Let the model's instance head (when its file has one) set each mask's class and score;
    # false = the mean class probabilities in the mask, as models before 1.7 do.
    instance_head: bool = True
    # A second pass on the mirror image (left-right), averaged with the first: steadier
    # classes and edges (validation AP +0.014 to +0.030) for a second inference run, nearly
    # free on a GPU, +10-20 ms a frame on a 2-core CPU. 'gpu': when a GPU provider runs.
    mirror_pass: MirrorPass = 'gpu'
    # Share of the previous frame's output, moved with the belt, in this frame's (0 = off):
    # a second look at each parcel for a remap (segmentation/temporal.py). Off: 0.3 gains
    # mask AP on five bags but loses it on the 24-frame regression bag (models/README.md).
    temporal_weight: float = 0.0
    decode: DecodeParams = field(default_factory=DecodeParams)

    def __post_init__(self) -> None:
        bad = [p for p in self.providers if p not in PROVIDER_NAMES]
        if bad or not self.providers:
            raise ConfigError(
                f'segmentation.providers {list(self.providers)}: use a non-empty list of '
                f'{", ".join(PROVIDER_NAMES)}'
            )
        if not 1 <= self.threads <= 64:
            raise ConfigError(f'segmentation.threads {self.threads} must be in 1..64')
        if not 0 <= self.temporal_weight <= 0.9:
            raise ConfigError(
                f'segmentation.temporal_weight {self.temporal_weight} must be in [0, 0.9]'
            )
        if not 0 <= self.min_valid_depth < 1:
            raise ConfigError(
                f'segmentation.min_valid_depth {self.min_valid_depth} must be in [0, 1)'
            )
