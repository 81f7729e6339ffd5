"""Helpers shared by the protocol-client tests (imported by name: tests/line is on sys.path)."""

import time

from fovea.line.actuators import SimulatedActuator
from fovea.line.clock import SimClock
from fovea.line.events import EventLog


def sim_actuator(**kw):
    """A SimulatedActuator polled every 10 ms on a SimClock, run until the handshake made it ready."""
    clock = SimClock()
    log = EventLog()
    act = SimulatedActuator(clock=clock, emit=log.emit, **kw)
    clock.call_every(0.01, act.poll)
    clock.advance_to(0.2)
    assert act.ready
    return clock, act, log


def fates(act):
    """{record: its one non-ack event}; fails if a record gets two."""
    out = {}
    while not act.events.empty():
        e = act.events.get()
        if e.kind != "ack":
            assert e.record not in out, f"two fates for {e.record}"
            out[e.record] = e
    return out


def wait_for(pred, timeout=5.0):
    """Poll pred on the real clock until it holds (True) or timeout seconds pass (False)."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if pred():
            return True
        time.sleep(0.005)
    return False
