"""Pure helpers of the host's link client: the MCU clock estimate and a command's physical fate.

`ClockSync` maps the MCU's millis() to host time from PING/PONG exchanges. `swing_outcome` says
whether an item whose centre crosses a gate at a predicted time went through a gate swing with a
known open interval: into the lane, past it (default route), or cannot be told (`unknown`).
"""

from __future__ import annotations

from collections import deque

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
