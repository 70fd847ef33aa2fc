# Copyright 2026 The pkg_perception Authors
# SPDX-License-Identifier: Apache-2.0
"""ParcelNet: a compact encoder-decoder that labels pixels; instances come from a post-process.

Why this shape: plain 3x3 convolutions, batch norm folded at export, ReLU and bilinear x2
upsampling are all a TensorRT FP16 engine and the ONNX Runtime CPU provider run fast, with
static shapes and no custom ops. Instead of per-instance heads (Mask R-CNN style, whose
ROI ops export poorly), it predicts per pixel a class and a truncated distance to the edge
of its own parcel; thresholding the distance gives one seed per parcel even where parcels
touch, and the post-process grows seeds back into masks (segmentation/decode.py).
Optionally it also predicts a few embedding channels per pixel, pulled together within a
parcel and pushed apart between parcels (a discriminative loss): where a seed covers two
parcels or a sliver was swallowed by its neighbour's mask, the embeddings tell them apart.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pkg_perception.classes import ParcelClass
from pkg_perception.segmentation.inputs import INPUT_CHANNELS

NUM_CLASSES = len(ParcelClass) + 1  # + background
OUTPUT_CHANNELS = NUM_CLASSES + 1  # class logits, then the edge-distance logit (then embeddings)


def conv_bn(cin: int, cout: int, stride: int = 1, dilation: int = 1, k: int = 3) -> nn.Sequential:
    pad = dilation * (k // 2)
    return nn.Sequential(
        nn.Conv2d(cin, cout, k, stride, pad, dilation=dilation, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class Residual(nn.Module):
    """Two 3x3 convolutions with an identity shortcut."""

    def __init__(self, channels: int, dilation: int = 1) -> None:
        super().__init__()
        self.a = conv_bn(channels, channels, dilation=dilation)
        self.b = nn.Sequential(
            nn.Conv2d(channels, channels, 3, 1, dilation, dilation=dilation, bias=False),
            nn.BatchNorm2d(channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(x + self.b(self.a(x)))


class Up(nn.Module):
    """Upsample x2, concatenate the skip, mix with 1x1 then 3x3."""

    def __init__(self, cin: int, cskip: int, cout: int) -> None:
        super().__init__()
        self.mix = conv_bn(cin + cskip, cout, k=1)
        self.conv = conv_bn(cout, cout)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, size=skip.shape[-2:], mode='bilinear', align_corners=False)
        return self.conv(self.mix(torch.cat([x, skip], dim=1)))


class ParcelNet(nn.Module):
    """(N, 5, H, W) -> (N, 6 + e, H/s, W/s): 5 class logits, edge distance, e embeddings.

    Most compute sits at 1/8 and 1/16 scale where it is cheap; the 1/2 and 1/4 stages are
    thin and only sharpen edges. A fifth width adds a 1/32 stage: telling a mailer from a
    box needs the whole parcel in view, and a 1/16 stage alone sees less than a large one.
    Output stride s = 1 adds a thin full-resolution stage whose head refines the upsampled
    stride-2 logits: a parcel showing only a strip a few pixels wide gets twice as many
    output pixels across, so it can hold a seed. The refinement starts at zero, so a
    stride-1 model grown from stride-2 weights starts exactly where those left off.
    `full_width` is that stage's width (0: half the 1/2 stage's, as up to 1.9).
    """

    def __init__(
        self,
        widths: tuple[int, ...] = (16, 32, 64, 128, 160),
        blocks: tuple[int, ...] = (0, 1, 2, 2),
        output_stride: int = 2,
        embed_dims: int = 0,
        full_width: int = 0,
    ) -> None:
        super().__init__()
        if len(widths) not in (4, 5) or len(blocks) != len(widths) - 1:
            raise ValueError(f'widths {widths} / blocks {blocks}: 4 or 5 widths, one block less')
        if output_stride not in (1, 2):
            raise ValueError(f'output_stride {output_stride}: 1 or 2')
        if embed_dims < 0:
            raise ValueError(f'embed_dims {embed_dims}: 0 or more')
        if full_width < 0:
            raise ValueError(f'full_width {full_width}: 0 (the default) or more')
        c2, c4, c8, c16 = widths[:4]
        self.widths, self.blocks, self.output_stride = widths, blocks, output_stride
        self.embed_dims = embed_dims
        out_channels = OUTPUT_CHANNELS + embed_dims
        self.stem = nn.Sequential(conv_bn(INPUT_CHANNELS, c2, stride=2), conv_bn(c2, c2))
        self.down4 = self._stage(c2, c4, blocks[0])
        self.down8 = self._stage(c4, c8, blocks[1])
        self.down16 = self._stage(c8, c16, blocks[2], dilated=True)
        self.down32: nn.Module | None = None
        self.up16: Up | None = None
        if len(widths) == 5:
            self.down32 = self._stage(c16, widths[4], blocks[3])
            self.up16 = Up(widths[4], c16, c16)
        self.up8 = Up(c16, c8, c8)
        self.up4 = Up(c8, c4, c4)
        self.up2 = Up(c4, c2, c2)
        self.head = nn.Conv2d(c2, out_channels, 1)
        self.stem1: nn.Module | None = None
        self.up1: Up | None = None
        self.refine: nn.Conv2d | None = None
        self.full_width = full_width or c2 // 2
        if output_stride == 1:
            # By default half the width of the 1/2 stage: at full resolution every channel
            # costs four times as much, and training time is what limits this model.
            c1 = self.full_width
            self.stem1 = conv_bn(INPUT_CHANNELS, c1)
            self.up1 = Up(c2, c1, c1)
            self.refine = nn.Conv2d(c1, out_channels, 1)
            nn.init.zeros_(self.refine.weight)
            nn.init.zeros_(self.refine.bias)

    @staticmethod
    def _stage(cin: int, cout: int, blocks: int, dilated: bool = False) -> nn.Sequential:
        layers: list[nn.Module] = [conv_bn(cin, cout, stride=2)]
        if blocks == 0:
            layers.append(conv_bn(cout, cout))
        layers += [Residual(cout, dilation=2 if dilated and i % 2 else 1) for i in range(blocks)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f2 = self.stem(x)
        f4 = self.down4(f2)
        f8 = self.down8(f4)
        f16 = self.down16(f8)
        if self.down32 is not None and self.up16 is not None:
            f16 = self.up16(self.down32(f16), f16)
        y = self.up2(self.up4(self.up8(f16, f8), f4), f2)
        logits = self.head(y)
        if self.stem1 is None or self.up1 is None or self.refine is None:
            return logits
        coarse = F.interpolate(logits, size=x.shape[-2:], mode='bilinear', align_corners=False)
        return coarse + self.refine(self.up1(y, self.stem1(x)))
