# Copyright 2026 The pkg_perception Authors
# SPDX-License-Identifier: Apache-2.0
"""Every Python source file carries the licence header (what ament_copyright checks)."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DIRS = ('pkg_perception', 'test', 'launch', 'scripts')
SOURCES = [*sorted(p for d in DIRS for p in (ROOT / d).rglob('*.py')), ROOT / 'setup.py']


@pytest.mark.parametrize('path', SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_licence_header(path: Path) -> None:
    head = path.read_text().splitlines()[:2]
    assert head == [
        '# Copyright 2026 The pkg_perception Authors',
        '# SPDX-License-Identifier: Apache-2.0',
    ], f'{path} lacks the licence header'
