"""The fault fuzzer and its fault-injecting doubles.

Doubles are checked against closed forms (exposure times on a simulated clock, the firmware's
reported due times) and direct renders of the conveyor; the fuzzer's runs are judged by the
physical audit (conveyor kinematics + the emulated gate timeline), never by the runner's own log.
"""

import numpy as np
import pytest

from fovea.errors import ConfigError
from fovea.line.clock import SimClock
from fovea.line.doubles import FaultyLink, FaultySource, LineFault, OraclePredictor
from fovea.line.emulator import EmulatorLink, FirmwareEmulator
from fovea.line.sources import ConveyorSource
from fovea.synth.conveyor import Conveyor, ConveyorConfig


# ---------------------------------------------------------------------- doubles
def test_faulty_source_stale_frame_keeps_a_fresh_stamp_and_shows_the_old_belt():
    conv = Conveyor(ConveyorConfig(n_objects=6, appearance="simple", seed=2))
    clock = SimClock()
    src = FaultySource(ConveyorSource(conv, clock=clock), stale={30: 3}, stamp_shift_s={40: -0.15},
                       stamp_repeat={50})
    fps = conv.config.fps
    frames = {}
    while True:
        f = src.read()
        if f is None or f.index > 55:
            break
        frames[f.index] = f
    # a camera read on a simulated clock returns frame k right at its exposure, k / fps
    assert frames[30].t_capture == pytest.approx(30 / fps)
    assert np.array_equal(frames[30].image, conv.render(27 / fps)[0])
    assert not np.array_equal(frames[30].image, conv.render(30 / fps)[0])
    assert [t.uid for t in frames[30].meta["truth"]] == [t.uid for t in conv.render(27 / fps)[1]]
    assert frames[40].t_capture == pytest.approx(40 / fps - 0.15)
    assert frames[50].t_capture == frames[49].t_capture == pytest.approx(49 / fps)
    assert frames[51].t_capture == pytest.approx(51 / fps)
    assert set(src.injected) == {30, 40, 50} and "injected" not in frames[31].meta
    with pytest.raises(ConfigError, match="lags"):
        FaultySource(ConveyorSource(conv, clock=clock), stale={3: 0})


def test_every_kth_inference_is_slow():
    clock = SimClock()
    p = OraclePredictor(clock=clock, latency_s=0.01, slow_every=5, slow_s=0.3)
    for _ in range(12):
        p.predict([])
    assert clock.now() == pytest.approx(12 * 0.01 + 2 * 0.3)


def _armed_link(rules):
    clock = SimClock()
    emu = FirmwareEmulator(t0=0.0)
    link = FaultyLink(EmulatorLink(emu, clock.now), clock, rules)
    link.open()
    link.write(b"ARM\n")
    return clock, emu, link


def _read_all(link):
    out = []
    while link.in_waiting:
        out.append(link.readline().decode().strip())
    return out


def test_faulty_link_delays_host_lines_in_order_and_drops_mcu_lines():
    clock, emu, link = _armed_link([LineFault("tx", "FIRE", 0.2, action="delay", delay_s=0.2),
                                    LineFault("rx", "DONE", 0.0)])
    _read_all(link)
    clock.advance_to(0.2)                            # (inside the MCU's 0.5 s heartbeat watchdog)
    link.write(b"FIRE 7 gate=1 at=+100 hold=50\n")
    link.write(b"PING 1\n")
    assert _read_all(link) == []                     # both wait behind the delayed FIRE
    clock.advance_to(0.4)
    got = _read_all(link)
    # the FIRE reached the MCU at 0.4 s: due = 0.4 + 0.1 s after boot; PONG after ACK (FIFO)
    assert got[0] == "ACK 7 due=500" and got[1].startswith("PONG 1 ")
    clock.advance_to(0.8)
    link.advance()
    assert _read_all(link) == []                     # the DONE line was lost on the way
    assert [(s.t_open, s.t_close) for s in emu.swings] == [(pytest.approx(0.5), pytest.approx(0.55))]
    assert [(d, ln.split()[0]) for _, d, ln in link.lost] == [("rx", "DONE")]


def test_line_fault_rule_checks():
    with pytest.raises(ConfigError, match="direction"):
        LineFault("up", "DONE", 0.0)
    r = LineFault("rx", "ACK", 1.0, 2.0, count=2)
    assert not r.applies("ACK 1 due=3", 0.5) and not r.applies("DONE 1 t=3", 1.5)
    assert r.applies("ACK 1 due=3", 1.5) and r.applies("ACK 2 due=3", 1.6) and not r.applies("ACK 3 due=3", 1.7)
