# Copyright 2026 The pkg_perception Authors
# SPDX-License-Identifier: Apache-2.0
"""Shared fixtures: one small simulated bag per test session, recorded by the real writer."""

from __future__ import annotations

from pathlib import Path

import pytest

from pkg_perception.sim.record import RecordResult, record_bag
from pkg_perception.sim.simulator import SimConfig

SMALL = SimConfig(width=320, height=240, scene='mixed')
FRAMES = 10
SEED = 7


@pytest.fixture(scope='session')
def small_bag(tmp_path_factory: pytest.TempPathFactory) -> RecordResult:
    out = tmp_path_factory.mktemp('bags') / 'small'
    return record_bag(out, frames=FRAMES, seed=SEED, config=SMALL, progress=False)


@pytest.fixture(scope='session')
def small_bag_path(small_bag: RecordResult) -> Path:
    return small_bag.path
