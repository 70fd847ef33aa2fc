# Copyright 2026 The pkg_perception Authors
# SPDX-License-Identifier: Apache-2.0
"""Worker processes that are safe to start from a busy, multi-threaded process.

By the time we start workers, this process already runs open3d's ray-casting threads and
torch's thread pool. Forking it copies locks those threads may hold at that instant, and a
child that inherits a held lock waits forever: a rare, timing-dependent hang. Workers are
therefore started from a clean process (forkserver where the platform has it, else spawn).
"""

from __future__ import annotations

import multiprocessing as mp
from multiprocessing.context import BaseContext


def worker_context() -> BaseContext:
    """A multiprocessing context that never forks the calling process."""
    method = 'forkserver' if 'forkserver' in mp.get_all_start_methods() else 'spawn'
    return mp.get_context(method)
