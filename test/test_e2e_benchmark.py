# Copyright 2026 The pkg_perception Authors
# SPDX-License-Identifier: Apache-2.0
"""The end-to-end benchmark: its table and verdicts, and one tiny isolated run."""

from __future__ import annotations

from pathlib import Path

from pkg_perception.e2e_benchmark import Figures, benchmark_pipelines, format_markdown


def _figures(name: str, provider: str, e2e: list[float], peak: float) -> Figures:
    return Figures(
        name,
        segmenter=name,
        provider=provider,
        frames=len(e2e),
        e2e_ms=e2e,
        stages_ms={'segment': [v / 2 for v in e2e]},
        messages_ms=[1.0] * len(e2e),
        peak_rss_mb=peak,
    )


def test_table_and_verdicts() -> None:
    # numpy's linear interpolation: p99 of ninety-nine 10s and one 20 is 10 + 0.01 * 10.
    fast = _figures('geometric', 'numpy', [10.0] * 99 + [20.0], 300.0)
    slow = _figures('model', 'CPUExecutionProvider', [40.0] * 100, 2000.0)
    gpu = _figures('model', 'CUDAExecutionProvider', [6.0] * 100, 900.0)
    broken = Figures('model', error='ModelError: model file x not found')
    text = format_markdown(
        [slow, fast, gpu, broken], machine='test cpu', command='cmd', size=(640, 480), load=(0, 0)
    )
    assert '| geometric | geometric (numpy) | 100 | 10.0 / 10.1 | 99.0 |' in text
    assert 'p50 40.0 ms misses 33 ms by 7.0 ms (1.21x)' in text
    assert 'peak memory 2000.0 MB misses 1536 MB' in text
    assert 'geometric on numpy: p50 10.0 ms meets 33 ms; p99 10.1 ms meets 50 ms' in text
    assert 'model on CUDAExecutionProvider: p50 6.0 ms meets 8 ms' in text
    assert 'not measured (ModelError: model file x not found)' in text


def test_isolated_run_writes_its_section(tmp_path: Path) -> None:
    doc = tmp_path / 'benchmarks.md'
    doc.write_text('# Benchmarks\n\nkept\n')
    _, results = benchmark_pipelines(
        frames=2,
        seed=1,
        width=160,
        height=120,
        segmenters=('geometric',),
        doc=doc,
        progress=False,
    )
    (r,) = results
    assert r.error == '' and r.frames == 2 and r.peak_rss_mb > 0
    assert set(r.stages_ms) >= {'segment', 'lift', 'grasp', 'track'}
    text = doc.read_text()
    assert 'kept' in text and '<!-- e2e:begin -->' in text and '<!-- e2e:end -->' in text
