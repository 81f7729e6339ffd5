"""Threads that behave on a shared machine: use no more intra-op threads than there are free cores.

A batch-1 predict is a chain of short OpenMP parallel regions that split their work evenly over the
threads. When another process holds one of two cores, the thread that shares that core runs at half
speed and every region waits for it, so 2 threads are slower than 1 (benchmarks/threads.py measures
it). `govern()` fixes that at its cause: before each batch it reads how much CPU the *other*
processes took on this process's allowed CPUs since the last look (from `/proc/stat`, minus this
process's own CPU time) and sets torch's thread count to the free cores, never above the cap (the
`--threads` option, `FOVEA_THREADS`, or torch's thread count at the first call).

- Looks at most every `interval` s (the decision needs a window: /proc/stat counts in 10 ms ticks);
  between looks a batch pays a clock read and a lock, and a look reads /proc/stat once.
- Hysteresis: the count moves only when the free cores are 0.15 past the rounding point, so noise
  around a half-busy core does not flap it.
- Every other process counts, whatever its priority (a nice-19 job makes fovea give way too).
- `FOVEA_THREAD_POLICY=fixed` (or `set_policy(adaptive=False)`) keeps the cap always; so does a
  machine without `/proc/stat` (the governor then never changes anything).
- torch's thread count is per calling thread (OpenMP's nthreads ICV), so `govern()` is called by the
  thread that runs the model, right before it does.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field

import torch

from fovea.errors import ConfigError

POLICY_ENV = "FOVEA_THREAD_POLICY"
_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def read_cpu_ticks(cpus: frozenset[int], stat_path: str = "/proc/stat") -> tuple[int, int] | None:
    """(busy, total) clock ticks summed over `cpus` since boot, or None where /proc/stat is missing.

    busy = user + nice + system + irq + softirq + steal; total adds idle and iowait. Guest time is
    already inside user / nice, so it is not added twice.
    """
    busy = total = 0
    try:
        with open(stat_path, "rb") as fh:
            for line in fh:
                if not line.startswith(b"cpu") or line[3:4] == b" ":
                    continue
                name, *vals = line.split()
                if int(name[3:]) not in cpus:
                    continue
                v = [int(x) for x in vals[:8]] + [0] * max(0, 8 - len(vals))
                user, nice, system, idle, iowait, irq, softirq, steal = v[:8]
                b = user + nice + system + irq + softirq + steal
                busy += b
                total += b + idle + iowait
    except (OSError, ValueError):
        return None
    return (busy, total) if total else None


def others_busy_cores(before: tuple, after: tuple, n_cpus: int, ticks_per_s: int = _TICKS) -> float:
    """Cores' worth of CPU the other processes used between two samples of (busy ticks, total ticks, own CPU s).

    The window is total ticks / n_cpus ticks long; the other processes' busy ticks are the busy ticks
    less this process's own CPU seconds in ticks. Never below 0.
    """
    d_busy, d_total, d_own = after[0] - before[0], after[1] - before[1], after[2] - before[2]
    if d_total <= 0:
        return 0.0
    return max(0.0, d_busy - d_own * ticks_per_s) / (d_total / n_cpus)


def allowed_cpus() -> frozenset[int]:
    """The CPUs this process may run on (its affinity mask; all CPUs where the OS has none)."""
    try:
        return frozenset(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return frozenset(range(os.cpu_count() or 1))


def target_threads(free: float, current: int, cap: int, hysteresis: float = 0.15) -> int:
    """Threads for `free` idle cores: free rounded, moving from `current` only past +-hysteresis, in [1, cap]."""
    want = int(free + 0.5)
    if want > current and free < current + 0.5 + hysteresis:
        want = current
    elif want < current and free > current - 0.5 - hysteresis:
        want = current
    return max(1, min(cap, want))


@dataclass
class Governor:
    """Sets torch's intra-op threads to the free cores before each batch (see the module docstring)."""

    cap: int | None = None  # None: torch's thread count at the first call
    adaptive: bool = True
    interval: float = 0.1
    cpus: frozenset[int] = field(default_factory=allowed_cpus)
    _last: tuple | None = None
    _threads: int | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)
    decisions: list = field(default_factory=list)  # (time, others' cores, threads) of each change, newest last

    def sample(self) -> tuple[int, int, float, float] | None:
        ticks = read_cpu_ticks(self.cpus)
        if ticks is None:
            return None
        return (*ticks, time.process_time(), time.monotonic())

    def __call__(self) -> int:
        """Apply the policy now; returns the thread count in force for the calling thread."""
        with self._lock:
            if self.cap is None:
                self.cap = max(1, torch.get_num_threads())
            if self._threads is None:
                self._threads = self.cap
            if not self.adaptive or self.cap == 1:
                threads = self.cap
            else:
                now = time.monotonic()
                if self._last is None or now - self._last[3] >= self.interval:
                    s = self.sample()
                    if s is not None and self._last is not None:
                        others = others_busy_cores(self._last, s, len(self.cpus))
                        new = target_threads(len(self.cpus) - others, self._threads, self.cap)
                        if new != self._threads:
                            self.decisions.append((now, round(others, 2), new))
                            del self.decisions[:-32]
                        self._threads = new
                    self._last = s
                threads = self._threads
        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)
        return threads


_GOVERNOR: Governor | None = None


def governor() -> Governor:
    """The process's governor (created on first use, from FOVEA_THREAD_POLICY and FOVEA_THREADS)."""
    global _GOVERNOR
    if _GOVERNOR is None:
        policy = os.environ.get(POLICY_ENV, "adaptive").strip().lower()
        if policy not in ("adaptive", "fixed"):
            raise ConfigError(f"{POLICY_ENV}={policy!r} is not a thread policy. Fix: 'adaptive' (default) or 'fixed'.")
        cap = os.environ.get("FOVEA_THREADS", "").strip()
        if cap and not (cap.isdigit() and int(cap) > 0):
            raise ConfigError(f"FOVEA_THREADS={cap!r} is not a thread count. Fix: a whole number of 1 or more, "
                              "or unset it (torch's count).")
        _GOVERNOR = Governor(cap=int(cap) if cap else None, adaptive=policy == "adaptive")
    return _GOVERNOR


def set_policy(cap: int | None = None, adaptive: bool | None = None) -> Governor:
    """Change the cap (threads at most) and/or whether the count follows the free cores."""
    g = governor()
    with g._lock:
        if cap is not None:
            if cap < 1:
                raise ConfigError(f"threads cap {cap} is below 1. Fix: a thread count of 1 or more.")
            g.cap, g._threads, g._last = cap, cap, None
        if adaptive is not None:
            g.adaptive = adaptive
    return g


def govern() -> int:
    """Apply the process's thread policy for the calling thread before it runs a model; returns the count."""
    return governor()()
