# Copyright 2026 The pkg_perception Authors
# SPDX-License-Identifier: Apache-2.0
"""report.html and metrics.json of an evaluation.

The HTML is one self-contained file (plots and overlays as base64 PNG, no scripts, no
external links), so it can be attached to a ticket or opened from CI artefacts offline.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from pkg_perception.classes import ParcelClass
from pkg_perception.evaluation.aggregate import Evaluation, FrameScore

LATENCY_TARGETS_MS = {'p50': 33.0, 'p99': 50.0}  # keeping up with a 30 Hz camera on 2 cores


@dataclass(frozen=True)
class Overlay:
    """A frame drawn for the report."""

    title: str
    image: npt.NDArray[np.uint8]  # (H, W, 3) RGB


def write_metrics(metrics: dict[str, Any], path: Path) -> Path:
    """metrics.json (NaN written as null, so any JSON reader takes it)."""
    path.write_text(json.dumps(_finite(metrics), indent=2, sort_keys=False) + '\n')
    return path


def _finite(x: Any) -> Any:
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_finite(v) for v in x]
    return x


def _png(fig: Any) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format='png', dpi=90, bbox_inches='tight')
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode('ascii')


def _image_png(rgb: npt.NDArray[np.uint8]) -> str:
    import cv2

    ok, buf = cv2.imencode('.png', np.ascontiguousarray(rgb[..., ::-1]))
    return base64.b64encode(buf.tobytes()).decode('ascii') if ok else ''


def plots(evaluation: Evaluation, records: Sequence[dict[str, Any]]) -> list[tuple[str, str]]:
    """(caption, base64 PNG) of every plot in the report."""
    import matplotlib

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    out = []
    lat = evaluation.metrics['latency_ms']
    stages = list(lat)
    if stages:
        fig, ax = plt.subplots(figsize=(7, 3))
        data = [[r['timings_ms'].get(s, np.nan) for r in records] for s in stages]
        ax.boxplot([np.asarray(d)[np.isfinite(d)] for d in data], whis=(1, 99), showfliers=False)
        ax.set_xticks(range(1, len(stages) + 1))
        ax.set_xticklabels(stages)
        for name, v in LATENCY_TARGETS_MS.items():
            ax.axhline(v, ls='--', lw=1, color='tab:red' if name == 'p99' else 'tab:orange')
        ax.set_ylabel('ms')
        ax.set_title(
            'Latency per stage (box: quartiles, whiskers: 1st-99th percentile);\n'
            'dashed: end-to-end targets p50 33 ms, p99 50 ms',
            fontsize=9,
        )
        out.append(('Latency per stage', _png(fig)))

        fig, ax = plt.subplots(figsize=(7, 2.6))
        idx = [r['frame'] for r in records]
        for s in stages:
            ax.plot(idx, [r['timings_ms'].get(s, np.nan) for r in records], lw=1, label=s)
        ax.set_xlabel('frame')
        ax.set_ylabel('ms')
        ax.legend(fontsize=7, ncol=min(len(stages), 6))
        ax.set_title('Latency over the recording')
        out.append(('Latency over the recording', _png(fig)))

    fig, ax = plt.subplots(figsize=(7, 2.4))
    ax.plot([r['frame'] for r in records], [len(r['parcels']) for r in records], label='parcels')
    ax.plot([r['frame'] for r in records], [len(r['grasps']) for r in records], label='grasps')
    if evaluation.metrics.get('ground_truth'):
        ax.plot(
            [f.frame for f in evaluation.frames],
            [f.gt for f in evaluation.frames],
            label='ground-truth parcels',
            ls='--',
        )
    ax.set_xlabel('frame')
    ax.legend(fontsize=7)
    ax.set_title('Found per frame')
    out.append(('Found per frame', _png(fig)))

    seg = evaluation.metrics.get('segmentation')
    if seg:
        fig, (a1, a2) = plt.subplots(1, 2, figsize=(8, 2.6))
        labels = [c.label for c in ParcelClass]
        ap = [seg['per_class'][c]['AP'] for c in labels]
        a1.bar(labels, [max(v, 0) if math.isfinite(v) else 0 for v in ap], color='tab:blue')
        a1.set_ylim(0, 1)
        a1.set_title('Mask AP per class (absent classes: -1 shown as 0)', fontsize=8)
        a2.plot([f.frame for f in evaluation.frames], [f.f1 for f in evaluation.frames])
        a2.set_ylim(0, 1.05)
        a2.set_xlabel('frame')
        a2.set_title(f'Per-frame F1 at mask IoU {0.5}', fontsize=8)
        out.append(('Segmentation quality', _png(fig)))
    if evaluation.metrics.get('grasping'):
        frames = evaluation.frames
        fig, ax = plt.subplots(figsize=(7, 2.4))
        for ok, colour, label in ((True, 'tab:green', 'success'), (False, 'tab:red', 'failure')):
            xs = [f.frame for f in frames if f.top_grasp_ok is ok]
            ax.scatter(xs, [1.05] * len(xs), s=8, color=colour, label=f'best grasp: {label}')
        ax.plot(
            [f.frame for f in frames],
            [f.served / f.graspable if f.graspable else np.nan for f in frames],
            lw=1,
            label='graspable parcels served',
        )
        ax.set_ylim(0, 1.15)
        ax.set_xlabel('frame')
        ax.legend(fontsize=7, ncol=3, loc='upper center', bbox_to_anchor=(0.5, -0.3))
        ax.set_title('Grasps per frame against the grasp rule', fontsize=9)
        out.append(('Grasps per frame', _png(fig)))
    return out


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return 'n/a' if not math.isfinite(v) else f'{v:.3f}' if abs(v) < 100 else f'{v:.1f}'
    return html.escape(str(v))


def _table(rows: Sequence[Sequence[Any]], head: Sequence[str] | None = None) -> str:
    h = ''.join(f'<th>{html.escape(c)}</th>' for c in head) if head else ''
    body = ''.join('<tr>' + ''.join(f'<td>{_fmt(c)}</td>' for c in row) + '</tr>' for row in rows)
    return f'<table>{"<tr>" + h + "</tr>" if h else ""}{body}</table>'


def _flat(d: dict[str, Any], prefix: str = '') -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    for k, v in d.items():
        key = f'{prefix}{k}'
        if isinstance(v, dict):
            out += _flat(v, key + '.')
        else:
            out.append((key, v))
    return out


def _quality_rows(m: dict[str, Any]) -> list[tuple[str, Any]]:
    rows: list[tuple[str, Any]] = []
    seg = m.get('segmentation')
    if seg:
        rows += [
            ('mask AP (COCO, IoU 0.50:0.95)', seg['AP']),
            ('mask AP50', seg['AP50']),
            ('mask AP75', seg['AP75']),
            *(
                [('mask AP, top class only', seg['top_class']['AP'])]
                if 'top_class' in seg  # metrics written before ranked classes
                else []
            ),
            ('mask AP, classes merged (mask quality alone)', seg['class_agnostic']['AP']),
            ('mask AP50, classes merged', seg['class_agnostic']['AP50']),
            (f'mask AP on pile frames ({seg["pile_frames"]})', seg['piles']['AP']),
            ('per-frame F1 at IoU 0.5, pooled', seg['f1_at_50']),
        ]
    for section in ('grasping', 'tracking'):
        for k, v in _flat(m.get(section, {})):
            rows.append((f'{section}: {k}', v))
    return rows


CSS = """
body{font-family:system-ui,sans-serif;margin:1.5em auto;max-width:1100px;color:#222}
h1{font-size:1.4em}h2{font-size:1.15em;margin-top:1.6em;border-bottom:1px solid #ccc}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ddd;padding:2px 8px;
font-size:.85em;text-align:left}th{background:#f3f3f3}.warn{background:#fff3cd;padding:.5em;
border:1px solid #e0c060}.ok{color:#176d2c}.bad{color:#a11}figure{display:inline-block;
margin:.4em}figcaption{font-size:.8em}img{max-width:100%}details{margin:.5em 0}
"""


def render_html(
    evaluation: Evaluation,
    records: Sequence[dict[str, Any]],
    run: dict[str, Any],
    overlays: Sequence[tuple[str, Sequence[Overlay]]],
) -> str:
    """The report as one HTML string."""
    m = evaluation.metrics
    counts, lat = m['counts'], m['latency_ms']
    title = f'pkg_perception evaluation: {Path(str(run.get("input_bag", "results"))).name}'
    parts = [
        f'<!DOCTYPE html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>',
        f'<style>{CSS}</style></head><body><h1>{html.escape(title)}</h1>',
    ]
    if run.get('damage'):
        parts.append(f'<p class="warn">Input damaged: {html.escape(str(run["damage"]))}</p>')
    if run.get('interrupted'):
        parts.append('<p class="warn">The replay was interrupted; results are partial.</p>')
    if not m.get('ground_truth'):
        parts.append(
            '<p>The bag has no simulator ground truth: counts and latency only. '
            'Best and worst frames below are the fastest and slowest.</p>'
        )
    model = run.get('model', {})
    parts.append('<h2>Run</h2>')
    parts.append(
        _table(
            [
                ('input bag', run.get('input_bag', '')),
                ('segmenter', run.get('segmenter', '')),
                ('provider', run.get('provider', '')),
                ('model file', model.get('path', '(none)')),
                ('model sha256', model.get('sha256', '')),
                ('frames processed', counts['frames']),
                ('frames skipped', run.get('skipped', 0)),
                ('frames with ground truth', m.get('frames_with_truth', 0)),
                ('command', run.get('command', '')),
            ]
        )
    )
    quality = _quality_rows(m)
    if quality:
        parts += ['<h2>Quality against ground truth</h2>', _table(quality, ('metric', 'value'))]
    parts.append('<h2>Latency (ms) and throughput</h2>')
    rows = [(s, v['p50'], v['p95'], v['p99'], v['mean'], v['max']) for s, v in lat.items()]
    parts.append(_table(rows, ('stage', 'p50', 'p95', 'p99', 'mean', 'max')))
    total = lat.get('total')
    if total:
        verdict = [
            f'{k} {total[k]:.1f} ms (target {t:.0f} ms: '
            + (
                '<span class="ok">met</span>'
                if total[k] <= t
                else '<span class="bad">not met</span>'
            )
            + ')'
            for k, t in LATENCY_TARGETS_MS.items()
            if math.isfinite(total[k])
        ]
        parts.append(f'<p>End to end: {"; ".join(verdict)}; {m["fps"]:.1f} frames/s.</p>')
    parts += ['<h2>Counts</h2>', _table(_flat(counts), ('count', 'value'))]
    parts.append('<h2>Plots</h2>')
    for caption, png in plots(evaluation, records):
        parts.append(
            f'<figure><img alt="{html.escape(caption)}" src="data:image/png;base64,{png}">'
            f'<figcaption>{html.escape(caption)}</figcaption></figure>'
        )
    for heading, group in overlays:
        parts.append(f'<h2>{html.escape(heading)}</h2>')
        for ov in group:
            parts.append(
                f'<figure><img alt="{html.escape(ov.title)}" '
                f'src="data:image/png;base64,{_image_png(ov.image)}">'
                f'<figcaption>{html.escape(ov.title)}</figcaption></figure>'
            )
    config = run.get('config', {})
    parts.append('<h2>Configuration</h2>')
    if config:
        parts.append(
            '<details><summary>every setting the pipeline ran with</summary>'
            + _table(sorted(config.items()), ('setting', 'value'))
            + '</details>'
        )
    if model:
        parts.append(
            '<details><summary>model metadata</summary>'
            + _table(_flat(model), ('key', 'value'))
            + '</details>'
        )
    parts.append('</body></html>')
    return '\n'.join(parts)


def frame_title(score: FrameScore, ground_truth: bool) -> str:
    """Caption of an overlay."""
    if ground_truth:
        return (
            f'frame {score.frame}: F1 {score.f1:.2f} ({score.matched} of {score.gt} parcels '
            f'matched, {score.detections} detections), {score.total_ms:.1f} ms'
        )
    return f'frame {score.frame}: {score.detections} parcels, {score.total_ms:.1f} ms'


def write_report(
    evaluation: Evaluation,
    records: Sequence[dict[str, Any]],
    run: dict[str, Any],
    overlays: Sequence[tuple[str, Sequence[Overlay]]],
    path: Path,
) -> Path:
    """Write report.html; returns its path."""
    path.write_text(render_html(evaluation, records, run, overlays), encoding='utf-8')
    return path
