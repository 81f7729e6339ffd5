"""Clocks and bounded queues: the two primitives every line stage shares.

`RealClock` is `time.monotonic`. `SimClock` is a discrete-event clock: `sleep(dt)` advances
simulated time and runs every timer due on the way, so a single thread can emulate concurrent
stages (capture at the frame rate, deadline checks, heartbeats) while a model "computes".
"""

from __future__ import annotations

import heapq
import threading
import time
from collections import deque
from typing import Any, Callable

from fovea.errors import ConfigError

DROP_POLICIES = ("drop_oldest", "drop_newest", "block")


class RealClock:
    """Wall monotonic time; timers are not supported (stages run in threads instead)."""

    simulated = False

    def now(self) -> float:
        return time.monotonic()

    def sleep(self, dt: float) -> None:
        if dt > 0:
            time.sleep(dt)


class SimClock:
    """Simulated monotonic time with timers; deterministic and as fast as the CPU allows."""

    simulated = True

    def __init__(self, t0: float = 0.0):
        self._t = t0
        self._heap: list[tuple[float, int, Callable[[], Any], tuple | None]] = []
        self._seq = 0
        self._running_timer = False

    def now(self) -> float:
        return self._t

    def call_at(self, t: float, fn: Callable[[], Any], period: tuple[float, float, int] | None = None) -> None:
        """Run fn at simulated time t (periodic timers carry (start, period, n))."""
        self._seq += 1
        heapq.heappush(self._heap, (t, self._seq, fn, period))

    def call_every(self, period: float, fn: Callable[[], Any], start: float | None = None) -> None:
        """Run fn at start + n * period for n = 0, 1, ... (no accumulated rounding)."""
        if period <= 0:
            raise ConfigError(f"SimClock.call_every period must be > 0, got {period}")
        t0 = self._t if start is None else start
        self.call_at(t0, fn, (t0, period, 0))

    def next_timer(self) -> float | None:
        return self._heap[0][0] if self._heap else None

    def advance_to(self, t: float) -> None:
        """Move time to t, running due timers in time order (timers must not sleep)."""
        if self._running_timer and t > self._t:
            raise ConfigError("a SimClock timer tried to sleep; timers must return without sleeping "
                              "(a stage that waits belongs in the main loop of run_simulated)")
        while self._heap and self._heap[0][0] <= t:
            te, _, fn, period = heapq.heappop(self._heap)
            self._t = max(self._t, te)
            if period is not None:
                t0, dt, n = period
                self.call_at(t0 + (n + 1) * dt, fn, (t0, dt, n + 1))
            self._running_timer = True
            try:
                fn()
            finally:
                self._running_timer = False
        self._t = max(self._t, t)

    def sleep(self, dt: float) -> None:
        self.advance_to(self._t + max(dt, 0.0))


class BoundedQueue:
    """A small FIFO with a named overflow policy, counting what it drops.

    drop_oldest: a new item evicts the oldest (live camera: keep the freshest).
    drop_newest: a new item is refused when full (keep what is already in flight).
    block: the producer waits (files, offline runs); with a SimClock it cannot wait, so it raises.
    """

    def __init__(self, name: str, maxsize: int, policy: str = "drop_oldest"):
        if policy not in DROP_POLICIES:
            raise ConfigError(f"queue {name!r}: unknown drop policy {policy!r}; choose from {DROP_POLICIES}")
        if maxsize < 1:
            raise ConfigError(f"queue {name!r}: maxsize must be >= 1, got {maxsize}")
        self.name, self.maxsize, self.policy = name, maxsize, policy
        self._items: deque = deque()
        self._cv = threading.Condition()
        self.dropped = 0
        self.closed = False

    def __len__(self) -> int:
        return len(self._items)

    def put(self, item: Any, timeout: float | None = None) -> Any | None:
        """Enqueue; returns the item that was dropped (or None)."""
        with self._cv:
            dropped = None
            if len(self._items) >= self.maxsize:
                if self.policy == "drop_oldest":
                    dropped = self._items.popleft()
                elif self.policy == "drop_newest":
                    self.dropped += 1
                    return item
                else:
                    ok = self._cv.wait_for(lambda: len(self._items) < self.maxsize or self.closed, timeout)
                    if not ok:
                        self.dropped += 1
                        return item
            if dropped is not None:
                self.dropped += 1
            self._items.append(item)
            self._cv.notify_all()
            return dropped

    def get(self, timeout: float | None = 0.0) -> Any | None:
        """Dequeue the oldest item, waiting up to `timeout` seconds; None when empty."""
        with self._cv:
            if not self._items and timeout:
                self._cv.wait_for(lambda: bool(self._items) or self.closed, timeout)
            if not self._items:
                return None
            item = self._items.popleft()
            self._cv.notify_all()
            return item

    def close(self) -> None:
        with self._cv:
            self.closed = True
            self._cv.notify_all()
