# Copyright 2026 The pkg_perception Authors
# SPDX-License-Identifier: Apache-2.0
"""The training loop: seeded, resumable from its last checkpoint, logged as JSON lines."""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from pkg_perception.errors import ConfigError
from pkg_perception.segmentation.inputs import InputSpec
from pkg_perception.training.model import NUM_CLASSES, ParcelNet, Residual
from pkg_perception.training.targets import EDGE_DISTANCE_PX

CHECKPOINT = 'last.pt'
LOG = 'log.jsonl'
PRECISIONS = ('fp32', 'bf16')


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides the result of a run (with the data)."""

    steps: int = 6000
    batch_size: int = 12
    lr: float = 3e-3
    weight_decay: float = 1e-4
    warmup: int = 200
    seed: int = 0
    widths: tuple[int, ...] = (16, 32, 64, 128, 160)
    blocks: tuple[int, ...] = (0, 1, 2, 2)
    output_stride: int = 2  # model input pixels per output pixel, each way
    # Channels of the full-resolution stage (stride 1); 0: half the 1/2 stage's (8).
    full_width: int = 0
    edge_weight: float = 2.0
    # Embedding channels trained with the discriminative loss (0: none, as up to 1.5).
    embed_dims: int = 0
    embed_weight: float = 1.0
    # Extra edge-loss weight on boundaries between touching parcels (no belt within
    # TOUCH_RADIUS output pixels): few pixels, yet the only thing that splits a pile.
    touching_weight: float = 0.0
    # Edge-loss weight of a parcel's pixels goes as (its area / the mean area)**-power,
    # clipped to [1/4, 4]: a sliver's few pixels decide whether it gets a seed, yet at 0 a
    # large lid outweighs them a hundred to one.
    instance_balance: float = 0.0
    # Class weights go as frequency**-class_balance: mailers and envelopes cover a few
    # per cent of the pixels and were drowned out by boxes at 0 (plain cross-entropy).
    class_balance: float = 0.5
    # Share of the loss given to matching the --init model's output averaged with its
    # mirror image's (self-distillation): the mirror pass's steadier output learnt into a
    # single pass, which is all the CPU can afford. 0: the ground truth alone.
    distill_weight: float = 0.0
    checkpoint_every: int = 250
    eval_every: int = 500
    threads: int = 2
    # 'bf16' runs the convolutions in bfloat16 (autocast), weights and losses in float32:
    # on a CPU with AVX512-BF16 or AMX a step takes about 0.7x the time of 'fp32'.
    precision: str = 'fp32'
    spec: InputSpec = field(default_factory=InputSpec)

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch_size < 1:
            raise ConfigError('steps and batch_size must be at least 1')
        if self.precision not in PRECISIONS:
            raise ConfigError(f'precision {self.precision!r}: one of {", ".join(PRECISIONS)}')
        if not 0 < self.lr < 1:
            raise ConfigError(f'lr {self.lr} must be in (0, 1)')
        if not 0 <= self.distill_weight <= 1:
            raise ConfigError(f'distill_weight {self.distill_weight} must be in [0, 1]')


def config_from_dict(d: dict[str, Any]) -> TrainConfig:
    """Inverse of dataclasses.asdict for TrainConfig (tuples and the nested spec)."""
    d = dict(d)
    d.setdefault('output_stride', 2)  # weights written before stride 1 existed
    d.setdefault('precision', 'fp32')  # and before bf16
    d.setdefault('distill_weight', 0.0)  # and before self-distillation
    d.setdefault('full_width', 0)  # and before the full-resolution stage's width was set
    spec = dict(d.pop('spec'))
    spec['height_range'] = tuple(spec['height_range'])
    return TrainConfig(
        **{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()},
        spec=InputSpec(**spec),
    )


@dataclass
class Arrays:
    """A training or validation set in memory (see training.samples)."""

    inputs: np.ndarray  # (N, 5, H, W) float16
    classes: np.ndarray  # (N, h, w) uint8
    edge: np.ndarray  # (N, h, w) uint8
    instances: np.ndarray  # (N, h, w) uint8, 1..k per frame, 0 = belt

    def __len__(self) -> int:
        return len(self.inputs)


def augment(
    x: torch.Tensor,
    cls: torch.Tensor,
    edge: torch.Tensor,
    inst: torch.Tensor,
    gen: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Flips (the camera looks straight down, so both are physical) and colour jitter."""
    n = x.shape[0]
    flip_h = torch.rand(n, generator=gen) < 0.5
    flip_v = torch.rand(n, generator=gen) < 0.5
    for i in range(n):
        dims = [d for d, f in ((-1, flip_h[i]), (-2, flip_v[i])) if f]
        if dims:
            x[i] = x[i].flip(dims)
            cls[i] = cls[i].flip(dims)
            edge[i] = edge[i].flip(dims)
            inst[i] = inst[i].flip(dims)
    gain = 1.0 + 0.25 * (torch.rand(n, 1, 1, 1, generator=gen) * 2 - 1)
    bias = 0.3 * (torch.rand(n, 3, 1, 1, generator=gen) * 2 - 1)
    x[:, :3] = x[:, :3] * gain + bias
    return x, cls, edge, inst


def class_weights(classes: np.ndarray, power: float) -> torch.Tensor:
    """Per-class loss weights, frequency**-power, scaled so an average pixel weighs 1.

    Counted a block of frames at a time: bincount widens its input to int64, which over
    the whole set would take eight times its size (10 GB more for 1,000 cells).
    """
    freq = np.zeros(NUM_CLASSES, dtype=np.float64)
    for start in range(0, len(classes), 64):
        freq += np.bincount(classes[start : start + 64].ravel(), minlength=NUM_CLASSES)
    freq = np.maximum(freq / max(freq.sum(), 1.0), 1e-4)
    w = freq**-power
    return torch.tensor(w / (freq * w).sum(), dtype=torch.float32)


# Beyond the band where the edge target is below 1, so no belt edge is taken for one.
TOUCH_RADIUS = math.ceil(EDGE_DISTANCE_PX) + 2


def touching_boundaries(cls: torch.Tensor, edge: torch.Tensor) -> torch.Tensor:
    """(N, h, w) bool: parcel pixels near an edge with no belt within TOUCH_RADIUS.

    Such an edge can only be one between two parcels: the boundary the post-process needs
    to split touching and stacked parcels, as in U-Net's weight map for touching cells.
    """
    belt = (cls == 0).float()[:, None]
    k = 2 * TOUCH_RADIUS + 1
    belt_near = F.max_pool2d(belt, k, stride=1, padding=TOUCH_RADIUS)[:, 0] > 0
    return (cls > 0) & (edge < 255) & ~belt_near


# Discriminative loss margins (De Brabandere et al., 2017): a pixel is pulled only while it
# lies farther than PULL_MARGIN from its parcel's mean, two parcels' means are pushed only
# while closer than 2 * PUSH_MARGIN. The decoder's split threshold lies between the two.
PULL_MARGIN = 0.5
PUSH_MARGIN = 1.5


def _frame_segments(inst: torch.Tensor) -> tuple[torch.Tensor, int, torch.Tensor]:
    """Each pixel's (frame, instance) segment, flat; ids per frame k; pixels per segment.

    Segment f * k + i is instance i of frame f, so one scatter covers the whole batch.
    """
    n = inst.shape[0]
    k = int(inst.max().item()) + 1
    seg = (inst.long() + k * torch.arange(n, device=inst.device)[:, None, None]).reshape(-1)
    return seg, k, torch.bincount(seg, minlength=n * k).float()


def embedding_loss(emb: torch.Tensor, inst: torch.Tensor) -> torch.Tensor:
    """Pull each parcel's pixels to their mean, push the means of a frame's parcels apart.

    Vectorized over the batch: every (frame, instance) pair is one segment of a scatter.
    """
    n, e = emb.shape[:2]
    seg, k, counts = _frame_segments(inst)
    if k < 2:
        return emb.sum() * 0.0
    flat = emb.permute(0, 2, 3, 1).reshape(-1, e)
    means = torch.zeros(n * k, e, dtype=emb.dtype).index_add_(0, seg, flat)
    means = means / counts.clamp(min=1)[:, None]
    present = (counts > 0).reshape(n, k)
    present[:, 0] = False  # the belt is no instance
    fg = inst.reshape(-1) > 0
    dist = (flat[fg] - means[seg[fg]]).norm(dim=1)
    pull_px = F.relu(dist - PULL_MARGIN) ** 2
    pull_seg = torch.zeros(n * k, dtype=emb.dtype).index_add_(0, seg[fg], pull_px)
    pull = (pull_seg / counts.clamp(min=1))[present.reshape(-1)].mean()
    mu = means.reshape(n, k, e)
    pair = present[:, :, None] & present[:, None, :]
    pair &= ~torch.eye(k, dtype=torch.bool)[None]
    push = torch.zeros((), dtype=emb.dtype)
    if pair.any():
        gap = torch.cdist(mu, mu)
        push = (F.relu(2 * PUSH_MARGIN - gap[pair]) ** 2).mean()
    reg = mu[present].norm(dim=1).mean()
    return pull + push + 0.001 * reg


def instance_weights(inst: torch.Tensor, power: float) -> torch.Tensor:
    """(N, h, w) pixel weights: 1 on the belt, (area / mean area)**-power on a parcel."""
    seg, _, area = _frame_segments(inst)
    parcel = (inst > 0).reshape(-1)
    mean_area = area[seg[parcel]].mean() if parcel.any() else torch.tensor(1.0)
    w = (area.clamp(min=1) / mean_area) ** -power
    return torch.where(inst > 0, w.clamp(0.25, 4.0)[seg].reshape(inst.shape), torch.ones(()))


def _pixel_weights(
    cls: torch.Tensor, edge: torch.Tensor, config: TrainConfig, inst: torch.Tensor | None
) -> torch.Tensor | None:
    """Edge-loss weight of each pixel: touching boundaries and small parcels count more."""
    pixel_weight = None
    if config.touching_weight > 0:
        pixel_weight = 1.0 + config.touching_weight * touching_boundaries(cls, edge).float()
    if config.instance_balance > 0:
        assert inst is not None
        balance = instance_weights(inst, config.instance_balance)
        pixel_weight = balance if pixel_weight is None else pixel_weight * balance
    return pixel_weight


def distill_losses(
    logits: torch.Tensor,
    teacher: torch.Tensor,
    cls: torch.Tensor,
    weights: torch.Tensor | None,
    pixel_weight: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Cross-entropy against the teacher's class probabilities, BCE against its edge.

    Weighted as the ground-truth terms are (each pixel's class weight by its true class,
    the edge's pixel weights), so rare classes and slivers keep their say.
    """
    log_p = F.log_softmax(logits[:, :NUM_CLASSES], dim=1)
    soft = -(F.softmax(teacher[:, :NUM_CLASSES], dim=1) * log_p).sum(1)
    if weights is not None:
        w = weights[cls.long()]
        ce = (soft * w).sum() / w.sum()
    else:
        ce = soft.mean()
    bce = F.binary_cross_entropy_with_logits(
        logits[:, NUM_CLASSES], torch.sigmoid(teacher[:, NUM_CLASSES]), weight=pixel_weight
    )
    return ce, bce


def losses(
    logits: torch.Tensor,
    cls: torch.Tensor,
    edge: torch.Tensor,
    config: TrainConfig,
    weights: torch.Tensor | None = None,
    inst: torch.Tensor | None = None,
    teacher: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Cross-entropy on the class map, BCE on the edge distance, the embedding loss.

    With `teacher` logits (and `config.distill_weight`), that share of the class and edge
    terms matches the teacher instead of the ground truth.
    """
    if inst is None and (config.embed_dims > 0 or config.instance_balance > 0):
        raise ConfigError('embed_dims and instance_balance need instance targets')
    ce = F.cross_entropy(logits[:, :NUM_CLASSES], cls.long(), weight=weights)
    pixel_weight = _pixel_weights(cls, edge, config, inst)
    bce = F.binary_cross_entropy_with_logits(
        logits[:, NUM_CLASSES], edge.float() / 255.0, weight=pixel_weight
    )
    total = ce + config.edge_weight * bce
    parts = {'ce': ce.item(), 'edge': bce.item()}
    if teacher is not None and config.distill_weight > 0:
        t_ce, t_bce = distill_losses(logits, teacher, cls, weights, pixel_weight)
        distill = t_ce + config.edge_weight * t_bce
        total = (1 - config.distill_weight) * total + config.distill_weight * distill
        parts.update(distill_ce=t_ce.item(), distill_edge=t_bce.item())
    if config.embed_dims > 0:
        assert inst is not None
        emb = embedding_loss(logits[:, NUM_CLASSES + 1 :], inst)
        total = total + config.embed_weight * emb
        parts['embed'] = emb.item()
    return total, {'loss': total.item(), **parts}


def forward(
    model: ParcelNet,
    x: torch.Tensor,
    precision: str,
    memory_format: torch.memory_format = torch.channels_last,
) -> torch.Tensor:
    """Float32 logits of a batch, the network run channels-last (and in bf16 if asked).

    Channels-last is oneDNN's native layout on the CPU: in the default layout every
    convolution reorders its input and output, which took a third of a training step
    (`pkg-perception benchmark-training`).
    """
    x = x.contiguous(memory_format=memory_format)
    with torch.autocast('cpu', dtype=torch.bfloat16, enabled=precision == 'bf16'):
        return model(x).float()


@torch.no_grad()
def mirror_averaged(model: ParcelNet, x: torch.Tensor, precision: str) -> torch.Tensor:
    """Logits averaged with those of the left-right mirror image, mirrored back.

    What the runtime's mirror pass (`segmentation.mirror_pass`) decodes.
    """
    mirrored = forward(model, x.flip(-1), precision).flip(-1)
    return 0.5 * (forward(model, x, precision) + mirrored)


def train_step(
    model: ParcelNet,
    opt: torch.optim.Optimizer,
    batch: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor],
    config: TrainConfig,
    weights: torch.Tensor | None,
    memory_format: torch.memory_format = torch.channels_last,
    teacher: ParcelNet | None = None,
) -> dict[str, float]:
    """One optimizer step on a batch; returns the losses."""
    x, cls, edge, inst = batch
    soft = None if teacher is None else mirror_averaged(teacher, x, config.precision)
    logits = forward(model, x, config.precision, memory_format)
    loss, parts = losses(logits, cls, edge, config, weights, inst, soft)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return parts


def to_tensors(
    data: Arrays, idx: np.ndarray
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    return (
        torch.from_numpy(data.inputs[idx].astype(np.float32)),
        torch.from_numpy(data.classes[idx]),
        torch.from_numpy(data.edge[idx]),
        torch.from_numpy(data.instances[idx]),
    )


@torch.no_grad()
def validate(
    model: ParcelNet, data: Arrays, config: TrainConfig, weights: torch.Tensor | None = None
) -> dict[str, float]:
    """Mean losses plus pixel accuracy of the class map on the validation set."""
    model.eval()
    sums: dict[str, float] = {}
    hits = np.zeros(NUM_CLASSES)
    seen = np.zeros(NUM_CLASSES)
    for start in range(0, len(data), config.batch_size):
        idx = np.arange(start, min(start + config.batch_size, len(data)))
        x, cls, edge, inst = to_tensors(data, idx)
        # float32 whatever the training precision: the exported model runs in float32.
        logits = forward(model, x, 'fp32')
        _, parts = losses(logits, cls, edge, config, weights, inst)
        for k, v in parts.items():
            sums[k] = sums.get(k, 0.0) + v * len(idx)
        truth = cls.long().ravel().numpy()
        right = (logits[:, :NUM_CLASSES].argmax(1).ravel().numpy() == truth).astype(float)
        hits += np.bincount(truth, weights=right, minlength=NUM_CLASSES)
        seen += np.bincount(truth, minlength=NUM_CLASSES)
    model.train()
    out = {f'val_{k}': v / len(data) for k, v in sums.items()}
    out['val_parcel_pixel_acc'] = float(hits[1:].sum() / max(seen[1:].sum(), 1))
    # Mean over parcel classes of each one's pixel recall: rare classes count equally.
    out['val_class_recall'] = float(np.mean(hits[1:] / np.maximum(seen[1:], 1)))
    return out


def build_model(config: TrainConfig) -> ParcelNet:
    return ParcelNet(
        config.widths, config.blocks, config.output_stride, config.embed_dims, config.full_width
    )


def teacher_model(weights: dict[str, torch.Tensor], config: TrainConfig) -> ParcelNet:
    """The --init model as it stands, for self-distillation (`train` freezes it)."""
    model = build_model(config)
    model.load_state_dict(weights)
    return model


# What a stride-1 model does not share with a stride-2 one: its full-resolution stage.
STRIDE1_STAGES = ('stem1.', 'up1.', 'refine.')


# The 1x1 output convolutions: a model with embedding channels has more rows in them.
OUTPUT_LAYERS = ('head.', 'refine.')


def _grow_layers(
    own: dict[str, torch.Tensor], weights: dict[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """Smaller tensors of the --init weights copied into the leading corner of larger ones.

    Two ways a model grows: its output layers get more rows (embedding channels), and its
    full-resolution stage gets wider. The old output channels take nothing from new input
    channels (those weights start at zero), so the grown model starts with the old one's
    outputs in its old channels, and the new channels learn from there.
    """
    grown = {}
    for k, v in weights.items():
        mine = own.get(k)
        if (
            not k.startswith(OUTPUT_LAYERS + STRIDE1_STAGES)
            or mine is None
            or mine.shape == v.shape
            or mine.dim() != v.dim()
            or any(a < b for a, b in zip(mine.shape, v.shape, strict=True))
        ):
            continue
        w = mine.clone()
        if w.dim() > 1:
            w[: v.shape[0], v.shape[1] :] = 0
        w[tuple(slice(0, n) for n in v.shape)] = v
        grown[k] = w
    return grown


def _growth(key: str, new: torch.Tensor, old: torch.Tensor) -> str:
    """How a layer grew, for the list of what starts fresh."""
    rows_only = new.shape[1:] == old.shape[1:]
    return 'embedding rows' if rows_only and key.startswith(OUTPUT_LAYERS) else 'widened'


def _new_blocks(model: ParcelNet, weights: dict[str, torch.Tensor]) -> dict[str, Residual]:
    """Residual blocks of `model` that the weights hold nothing of (a deeper stage)."""
    return {
        name: mod
        for name, mod in model.named_modules()
        if isinstance(mod, Residual) and not any(k.startswith(name + '.') for k in weights)
    }


def load_init(model: ParcelNet, weights: dict[str, torch.Tensor]) -> list[str]:
    """Start from another run's weights; return the stages that start fresh instead.

    A stride-1 model may start from a stride-2 one: everything below its full-resolution
    stage carries over. A model with embedding channels may start from one without: its
    output layers keep the old rows, the new rows start fresh. A stage with more residual
    blocks may start from one with fewer: the new blocks start as the identity (their last
    batch norm's scale and shift at zero), so the grown model starts exactly where the
    weights left off and training only adds depth. A wider full-resolution stage likewise
    starts from a narrower one. Any other mismatch is refused rather than half loaded.
    """
    own = model.state_dict()
    fits = {k: v for k, v in weights.items() if k in own and own[k].shape == v.shape}
    grown = _grow_layers(own, weights)
    fits.update(grown)
    new_blocks = _new_blocks(model, weights)
    in_new_block = tuple(f'{name}.' for name in new_blocks)
    fresh_ok = in_new_block + (STRIDE1_STAGES if model.output_stride == 1 else ())
    wrong = sorted(
        k for k in set(weights) | set(own) if k not in fits and not k.startswith(fresh_ok)
    )
    if wrong:
        raise ConfigError(
            f'the --init weights do not fit this model ({", ".join(wrong[:4])} differ); '
            'start from weights of the same widths, blocks and output stride (or fewer '
            'residual blocks in a stage)'
        )
    model.load_state_dict(fits, strict=False)
    for block in new_blocks.values():
        torch.nn.init.zeros_(block.b[1].weight)
        torch.nn.init.zeros_(block.b[1].bias)
    fresh = {k.split('.')[0] for k in own if k not in fits and not k.startswith(in_new_block)}
    fresh |= {f'{k.split(".")[0]} ({_growth(k, own[k], weights[k])})' for k in grown}
    fresh |= {f'{name} (identity)' for name in new_blocks}
    return sorted(fresh)


def _lr_at(step: int, config: TrainConfig) -> float:
    if step < config.warmup:
        return config.lr * (step + 1) / config.warmup
    t = (step - config.warmup) / max(1, config.steps - config.warmup)
    return config.lr * (0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * t)))


def train(
    config: TrainConfig,
    train_set: Arrays,
    val_set: Arrays,
    out_dir: Path,
    *,
    init_weights: dict[str, torch.Tensor] | None = None,
    teacher: ParcelNet | None = None,
    progress: bool = True,
) -> ParcelNet:
    """Train, resuming from `out_dir/last.pt` when it exists for the same config.

    `teacher` (with `config.distill_weight` > 0) is the frozen model whose mirror-averaged
    output the run also learns from.
    """
    if config.distill_weight > 0 and teacher is None:
        raise ConfigError('distill_weight needs a teacher model (train with --init)')
    if teacher is not None:
        teacher = teacher.to(memory_format=torch.channels_last).eval().requires_grad_(False)
    torch.manual_seed(config.seed)
    torch.set_num_threads(config.threads)
    out_dir.mkdir(parents=True, exist_ok=True)
    model = build_model(config).to(memory_format=torch.channels_last)
    if init_weights is not None:
        fresh = load_init(model, init_weights)
        if fresh:
            tqdm.write(f'not in the --init weights, starting fresh: {", ".join(fresh)}')
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    gen = torch.Generator().manual_seed(config.seed)
    step = 0
    ckpt_path = out_dir / CHECKPOINT
    if ckpt_path.exists():
        ckpt = torch.load(ckpt_path, weights_only=False)
        if config_from_dict(ckpt['config']) != config:
            raise ConfigError(
                f'{ckpt_path} was written with other settings; use a new --out directory '
                'or the same settings to resume'
            )
        model.load_state_dict(ckpt['model'])
        opt.load_state_dict(ckpt['optimizer'])
        gen.set_state(ckpt['generator'])
        step = ckpt['step']
    # The sample order is a pure function of (seed, step), so a resumed run sees the same data.
    per_epoch = max(1, len(train_set) // config.batch_size)
    orders: dict[int, np.ndarray] = {}

    def indices(s: int) -> np.ndarray:
        epoch, pos = divmod(s, per_epoch)
        if epoch not in orders:
            orders.clear()
            orders[epoch] = np.random.default_rng([config.seed, epoch]).permutation(len(train_set))
        return orders[epoch][pos * config.batch_size : (pos + 1) * config.batch_size]

    weights = class_weights(train_set.classes, config.class_balance)
    model.train()
    log = (out_dir / LOG).open('a')
    bar = tqdm(
        total=config.steps, initial=step, desc='training', unit='step', disable=not progress
    )
    t0 = time.perf_counter()
    try:
        while step < config.steps:
            for g in opt.param_groups:
                g['lr'] = _lr_at(step, config)
            batch = augment(*to_tensors(train_set, indices(step)), gen)
            parts = train_step(model, opt, batch, config, weights, teacher=teacher)
            step += 1
            bar.update()
            bar.set_postfix(loss=f'{parts["loss"]:.3f}')
            record: dict[str, Any] = {'step': step, 'lr': _lr_at(step - 1, config), **parts}
            if step % config.eval_every == 0 or step == config.steps:
                record.update(validate(model, val_set, config, weights))
                tqdm.write(json.dumps({k: round(v, 4) for k, v in record.items()}))
            if step % 10 == 0 or 'val_loss' in record:
                record['elapsed_s'] = round(time.perf_counter() - t0, 1)
                log.write(json.dumps(record) + '\n')
                log.flush()
            if step % config.checkpoint_every == 0 or step == config.steps:
                save_checkpoint(ckpt_path, model, opt, gen, step, config)
    finally:
        bar.close()
        log.close()
    return model


def save_checkpoint(
    path: Path,
    model: ParcelNet,
    opt: torch.optim.Optimizer,
    gen: torch.Generator,
    step: int,
    config: TrainConfig,
) -> None:
    """Written to a temporary file first, so a kill never leaves a half checkpoint."""
    tmp = path.with_suffix('.tmp')
    torch.save(
        {
            'model': model.state_dict(),
            'optimizer': opt.state_dict(),
            'generator': gen.get_state(),
            'step': step,
            'config': asdict(config),
        },
        tmp,
    )
    tmp.replace(path)
