# Copyright 2026 The pkg_perception Authors
# SPDX-License-Identifier: Apache-2.0
"""`pkg-perception train`: data, then the loop, then a weights file the exporter reads."""

from __future__ import annotations

import json
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pkg_perception.errors import ConfigError, ModelError
from pkg_perception.segmentation.inputs import InputSpec
from pkg_perception.training.model import ParcelNet
from pkg_perception.training.simdata import SimDataPlan, build_sim_dataset, load_shards
from pkg_perception.training.train import (
    Arrays,
    TrainConfig,
    config_from_dict,
    teacher_model,
    train,
)

WEIGHTS = 'model.pt'
VAL_SEEDS = 8  # the plan's last seeds are kept for validation losses
# What --init fixes unless the run asks for more: the network's shape.
SHAPE_FROM_INIT = ('output_stride', 'embed_dims', 'blocks', 'full_width')


def load_weights(path: Path) -> dict[str, Any]:
    """A weights file written by `save_weights` (the shipped models/parcelnet.pt is one)."""
    if not path.is_file():
        raise ModelError(f'weights file {path} not found; train one with `pkg-perception train`')
    try:
        blob = torch.load(path, map_location='cpu', weights_only=False)
        if not {'model', 'config'} <= set(blob):
            raise KeyError('model or config')
    except Exception as err:
        raise ModelError(
            f'{path} is not a weights file written by pkg-perception: {err}'
        ) from None
    return blob


def save_weights(path: Path, model: torch.nn.Module, config: TrainConfig, info: dict) -> None:
    # Contiguous: training runs channels-last, but the file should not care how it ran.
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    torch.save({'model': state, 'config': asdict(config), 'info': info}, path)


def sim_arrays(
    cache: Path, plan: SimDataPlan, spec: InputSpec, output_stride: int, workers: int
) -> tuple[Arrays, Arrays]:
    paths = build_sim_dataset(cache, plan, spec, output_stride, workers=workers)
    if plan.seeds <= VAL_SEEDS:
        raise ConfigError(f'--seeds must exceed {VAL_SEEDS} (the validation seeds)')
    train_set = Arrays(**load_shards(paths[:-VAL_SEEDS]))
    val_set = Arrays(**load_shards(paths[-VAL_SEEDS:]))
    return train_set, val_set


def run_training(
    out: Path,
    config: TrainConfig,
    *,
    cache: Path,
    plan: SimDataPlan,
    coco: Path | None = None,
    init: Path | None = None,
    output_stride: int | None = None,
    embed_dims: int | None = None,
    blocks: tuple[int, ...] | None = None,
    full_width: int | None = None,
    workers: int = 2,
) -> Path:
    """Train on simulated frames, or fine-tune on COCO-format RGB-D images; return weights.

    `output_stride` None keeps the --init weights' stride (or the config's without --init);
    1 from stride-2 weights adds the full-resolution stage and trains it from scratch.
    `embed_dims` likewise: None keeps those of --init; more adds embedding channels.
    `blocks` likewise: None keeps those of --init; more in a stage adds residual blocks
    that start as the identity. `full_width` likewise: None keeps that of --init; wider
    starts from its channels.
    """
    init_weights = None
    teacher: ParcelNet | None = None
    if config.distill_weight > 0 and init is None:
        raise ConfigError('--distill learns from the --init model: give --init')
    asked = {
        k: v
        for k, v in zip(
            SHAPE_FROM_INIT, (output_stride, embed_dims, blocks, full_width), strict=True
        )
        if v is not None
    }
    if init is not None:
        blob = load_weights(init)
        base = config_from_dict(blob['config'])
        config = replace(
            config,
            widths=base.widths,
            spec=base.spec,
            **({k: getattr(base, k) for k in SHAPE_FROM_INIT} | asked),
        )
        init_weights = blob['model']
        if config.distill_weight > 0:
            if config.output_stride != base.output_stride:
                raise ConfigError(
                    '--distill needs the --init model at the same --output-stride: distil '
                    'after the stride has changed, from weights trained at it'
                )
            teacher = teacher_model(init_weights, base)
    else:
        config = replace(config, **asked)
    if coco is not None:
        from pkg_perception.training.coco import coco_arrays

        train_set, val_set = coco_arrays(
            coco, config.spec, seed=config.seed, output_stride=config.output_stride
        )
        source: dict[str, Any] = {'coco': str(coco), 'images': len(train_set) + len(val_set)}
    else:
        train_set, val_set = sim_arrays(cache, plan, config.spec, config.output_stride, workers)
        source = {'simulator': asdict(plan), 'validation_seeds': VAL_SEEDS}
    print(f'training on {len(train_set)} frames, validating on {len(val_set)}')
    model = train(config, train_set, val_set, out, init_weights=init_weights, teacher=teacher)
    log = [json.loads(line) for line in (out / 'log.jsonl').read_text().splitlines()]
    last_val = [r for r in log if 'val_loss' in r][-1]
    info = {
        'data': source,
        'init': str(init) if init else None,
        'distilled_from': str(init) if teacher is not None else None,
        'steps': config.steps,
        'train_seconds': log[-1].get('elapsed_s'),
        'validation': {k: v for k, v in last_val.items() if k.startswith('val_')},
        'train_frames': len(train_set),
        'parameters': int(sum(p.numel() for p in model.parameters())),
        'class_pixels': np.bincount(train_set.classes.ravel(), minlength=5).tolist(),
    }
    path = out / WEIGHTS
    save_weights(path, model, config, info)
    return path
