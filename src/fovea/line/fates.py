"""Pure parts of the host's link client: its timing, the MCU clock estimate, a command's physical fate.

`ClockSync` maps the MCU's millis() to host time from PING/PONG exchanges. `swing_outcome` says
whether an item whose centre crosses a gate at a predicted time went through a gate swing with a
known open interval: into the lane, past it (default route), or cannot be told (`unknown`).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

LANE, DEFAULT, UNKNOWN = "lane", "default", "unknown"
WRAP_S = 2 ** 32 / 1000.0          # the MCU's millis() wraps after this many seconds (49.7 days)


def swing_outcome(t_cross_s: float, tol_s: float, t_from_s: float, t_to_s: float, actuation_s: float) -> str:
    """Where an item went, given the gate's open interval [t_from_s, t_to_s] (host seconds).

    The item's centre crosses the gate at t_cross_s +- tol_s. The gate is fully open from
    t_from_s + actuation_s (the servo's travel) until t_to_s, and fully closed before t_from_s
    and after t_to_s + actuation_s (the physical audit uses the same model). Fully open over the
    whole crossing window -> LANE; fully closed over it -> DEFAULT; anything else -> UNKNOWN.
    """
    lo, hi = t_cross_s - tol_s, t_cross_s + tol_s
    if t_from_s + actuation_s <= lo and hi <= t_to_s:
        return LANE
    if hi < t_from_s or lo > t_to_s + actuation_s:
        return DEFAULT
    return UNKNOWN


class ClockSync:
    """Estimate of offset = host time - MCU time (seconds) for one MCU boot, from PING/PONG.

    A PONG stamped `t_mcu` was written between the PING's send time and the PONG's receipt, so
    each exchange bounds the offset: t_send - t_mcu <= offset <= t_recv - t_mcu. The estimate is
    the tightest lower bound over the last `window` exchanges (that is the one-way host -> MCU
    latency of the best exchange: a FIRE scheduled on it fires as late as one sent with a
    relative delay, and delayed lines never pull it). Older exchanges are dropped so that a
    drifting MCU clock (ceramic resonators: up to 0.5 %) is followed.
    """

    def __init__(self, window: int = 10):
        self._samples: deque[tuple[float, float]] = deque(maxlen=window)    # (low bound, high bound)

    def reset(self) -> None:
        self._samples.clear()

    def add(self, t_send_s: float, t_recv_s: float, t_mcu_s: float) -> None:
        if t_recv_s < t_send_s:
            return
        lo, hi = t_send_s - t_mcu_s, t_recv_s - t_mcu_s
        if self._samples:                      # millis() wrapped (49.7 days): keep one continuous offset
            ref = self._samples[-1][0]
            k = round((ref - lo) / WRAP_S)
            lo, hi = lo + k * WRAP_S, hi + k * WRAP_S
        self._samples.append((lo, hi))

    @property
    def known(self) -> bool:
        return bool(self._samples)

    @property
    def offset_s(self) -> float:
        """Host time minus MCU time; raises if no exchange has been seen on this boot."""
        if not self._samples:
            raise ValueError("no PING/PONG exchange yet on this MCU boot")
        lo = max(s[0] for s in self._samples)
        hi = min(s[1] for s in self._samples)
        return min(lo, hi)

    def to_mcu_ms(self, t_host_s: float) -> int:
        """The MCU's millis() at host time t, wrapped as the MCU counts."""
        return int(round((t_host_s - self.offset_s) * 1000)) % 2 ** 32


@dataclass
class LinkConfig:
    """Timing of the host side of the link (seconds)."""

    heartbeat_s: float = 0.1
    heartbeat_misses: int = 4
    ack_timeout_s: float = 0.05
    max_resends: int = 3
    ready_timeout_s: float = 2.0
    hello_every_s: float = 0.1            # well inside the MCU watchdog, so a lost READY costs little
    backoff_s: tuple[float, float] = (0.02, 1.0)
    young_drop_s: float = 1.0             # while a drop is younger than this ...
    young_backoff_cap_s: float = 0.05     # ... re-open at least this often (watchdog 0.5 s)
    mcu_watchdog_s: float = 0.5           # the firmware's WATCHDOG_MS
    done_grace_s: float = 0.1             # DONE expected by due + hold + this, else STATUS
    status_every_s: float = 0.1
    max_queries: int = 5                  # STATUS unanswered this often -> the link is lost
    dead_after_s: float = 3.0             # link down this long: commands past their deadline -> unknown
    link_p99_floor_s: float = 0.01
    auto_arm: bool = True
