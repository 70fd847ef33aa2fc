# Copyright 2026 The pkg_perception Authors
# SPDX-License-Identifier: Apache-2.0
"""The node's decisions, kept out of rclpy so they are tested directly.

Which frame to process (only the newest), when to warn again, when time went backwards,
which faults were already reported, and the running figures /diagnostics shows. Nothing
here reads a clock: callers pass times in, so tests are deterministic.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar('T')


class LatestSlot(Generic[T]):
    """A one-item mailbox between the subscription callback and the processing thread.

    `put` replaces an item nobody took yet, so the worker always gets the newest frame and
    never works through a queue of stale ones; every replaced item counts as dropped.
    Thread-safe.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._item: T | None = None
        self._closed = False
        self.received = 0
        self.dropped = 0

    def put(self, item: T) -> bool:
        """Offer the newest item; True when it displaced one that was never processed."""
        with self._cond:
            displaced = self._item is not None
            if displaced:
                self.dropped += 1
            self._item = item
            self.received += 1
            self._cond.notify()
            return displaced

    def take(self, timeout: float | None = None) -> T | None:
        """The newest item, waiting up to `timeout` seconds (None: until one arrives).

        Returns None on timeout or once `close` was called.
        """
        with self._cond:
            if self._item is None and not self._closed:
                self._cond.wait(timeout)
            item, self._item = self._item, None
            return None if self._closed else item

    def clear(self) -> None:
        """Forget a pending item (on deactivate) without counting it as dropped."""
        with self._cond:
            self._item = None

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """Wake a waiting `take` for good (deactivate, shutdown)."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def reopen(self) -> None:
        """Accept items again (activate after a deactivate)."""
        with self._cond:
            self._closed = False
            self._item = None


class Throttle:
    """True at most once per `period_s` (for warnings repeated while a condition lasts)."""

    def __init__(self, period_s: float) -> None:
        self.period_s = period_s
        self._last: float | None = None

    def ready(self, now_s: float) -> bool:
        if self._last is None or now_s - self._last >= self.period_s or now_s < self._last:
            self._last = now_s
            return True
        return False

    def reset(self) -> None:
        self._last = None


@dataclass(frozen=True)
class ClockJump:
    """What `ClockJumpDetector.observe` saw: a step back in time, or a long gap."""

    previous_ns: int
    current_ns: int

    @property
    def backwards(self) -> bool:
        return self.current_ns < self.previous_ns

    def describe(self) -> str:
        delta = (self.current_ns - self.previous_ns) * 1e-9
        if self.backwards:
            return f'time went back {-delta:.3f} s (bag loop or clock reset)'
        return f'time jumped ahead {delta:.3f} s (stream paused or frames lost)'


class ClockJumpDetector:
    """Spots a bag loop (stamps go backwards) or a gap too long to track across.

    Tracking predicts parcels forward with the belt velocity; across either event the
    predictions are meaningless, so the tracker is reset rather than fed nonsense.
    """

    def __init__(self, max_gap_s: float) -> None:
        self.max_gap_ns = int(max_gap_s * 1e9)
        self._last: int | None = None

    def observe(self, stamp_ns: int) -> ClockJump | None:
        last, self._last = self._last, stamp_ns
        if last is None:
            return None
        if stamp_ns < last or stamp_ns - last > self.max_gap_ns:
            return ClockJump(last, stamp_ns)
        return None

    def reset(self) -> None:
        self._last = None


@dataclass
class Fault:
    """A problem seen at least once; `count` keeps rising while it repeats."""

    message: str
    count: int = 1


class FaultLog:
    """Each kind of fault is logged once and then only counted, for /diagnostics.

    A camera sending a wrong encoding at 30 Hz would otherwise flood the log; the operator
    sees it once in the log and continuously, with a count, in diagnostics. `resolve` ends
    a fault's active period (diagnostics go back to OK) without logging it again if it
    returns; `forget` also re-arms the log line (for faults worth a line each time).
    """

    def __init__(self) -> None:
        self._active: dict[str, Fault] = {}
        self._logged: set[str] = set()
        self._lock = threading.Lock()  # the worker reports, the diagnostics timer reads

    def report(self, key: str, message: str) -> bool:
        """Record a fault; True when it should be logged (the first time `key` is seen)."""
        with self._lock:
            fault = self._active.get(key)
            if fault is None:
                self._active[key] = Fault(message)
            else:
                fault.count += 1
                fault.message = message
            first = key not in self._logged
            self._logged.add(key)
            return first

    def resolve(self, prefix: str) -> list[str]:
        """End every active fault whose key starts with `prefix`; returns their keys."""
        with self._lock:
            gone = [k for k in self._active if k.startswith(prefix)]
            for k in gone:
                del self._active[k]
            return gone

    def forget(self, key: str) -> None:
        with self._lock:
            self._active.pop(key, None)
            self._logged.discard(key)

    def active(self) -> Mapping[str, Fault]:
        """A snapshot: key -> fault (copies, safe to read while faults keep coming)."""
        with self._lock:
            return {k: Fault(f.message, f.count) for k, f in self._active.items()}

    def __bool__(self) -> bool:
        return bool(self._active)


class RunningStats:
    """Per-stage latency (mean and max over the last `window` frames) and the output rate."""

    def __init__(self, window: int = 100) -> None:
        self.window = window
        self._timings: deque[Mapping[str, float]] = deque(maxlen=window)
        self._done_s: deque[float] = deque(maxlen=window)
        self._lock = threading.Lock()  # the worker adds, the diagnostics timer reads
        self.processed = 0

    def add(self, timings_ms: Mapping[str, float], done_s: float) -> None:
        """One processed frame: its stage timings and when it finished (monotonic seconds)."""
        with self._lock:
            self._timings.append(dict(timings_ms))
            self._done_s.append(done_s)
            self.processed += 1

    def rate_hz(self, now_s: float) -> float:
        """Frames per second over the window; 0 once output has stopped (see `idle`)."""
        with self._lock:
            done = list(self._done_s)
        if len(done) < 2 or _idle(done, now_s):
            return 0.0
        span = done[-1] - done[0]
        return (len(done) - 1) / span if span > 0 else 0.0

    def idle(self, now_s: float) -> bool:
        """No frame for over two frame periods (at least a second) since the last one."""
        with self._lock:
            done = list(self._done_s)
        return _idle(done, now_s)

    def latency_ms(self) -> dict[str, tuple[float, float]]:
        """Stage -> (mean, max) milliseconds over the window, in first-seen stage order."""
        with self._lock:
            window = list(self._timings)
        out: dict[str, list[float]] = {}
        for timings in window:
            for stage, ms in timings.items():
                out.setdefault(stage, []).append(float(ms))
        return {k: (sum(v) / len(v), max(v)) for k, v in out.items()}

    def reset(self) -> None:
        with self._lock:
            self._timings.clear()
            self._done_s.clear()


def _idle(done: list[float], now_s: float) -> bool:
    if not done:
        return False
    period = (done[-1] - done[0]) / (len(done) - 1) if len(done) >= 2 else 0.0
    return now_s - done[-1] > max(2.0 * period, 1.0)
