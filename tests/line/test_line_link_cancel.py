"""CANCEL <id> (protocol v1.2): withdrawing a queued gate command, on the MCU, in the host client and
on the whole line after a belt-speed step.

The judge is the emulated MCU's own gate timeline (`emulator.swings`: what the servo did) and, for
the whole line, the physical audit (`line.audit`: which swings each item met, which bin it fell
in), never the client's or the runner's bookkeeping. The verb's wire answers are also checked on
the g++-built firmware by the shared table (docs/protocol_cases.json, cases `cancel_*`).
"""

import pytest

from fovea.line.actuators import FireCommand, SimulatedActuator
from fovea.line.clock import SimClock
from fovea.line.mcu import FirmwareEmulator
from _link_helpers import fates, sim_actuator


# ---------------------------------------------------------------------------- the MCU (emulator)
def armed_emulator():
    emu = FirmwareEmulator(t0=0.0)
    emu.feed(b"ARM\n", 0.0)
    emu.read_lines()
    return emu


def test_cancelled_command_never_moves_its_gate_and_its_neighbour_still_fires():
    emu = armed_emulator()
    emu.feed(b"FIRE 1 gate=1 at=+200 hold=100\nFIRE 2 gate=1 at=+400 hold=100\n", 0.0)
    emu.feed(b"CANCEL 1\n", 0.1)
    emu.feed(b"PING 1\n", 0.3)
    emu.advance(0.6)
    lines = emu.read_lines()
    assert lines[:2] == ["ACK 1 due=200", "ACK 2 due=400"]
    assert "NAK 1 CANCELLED" in lines and "DONE 2 t=500 from=0 to=100" in lines
    assert "PONG 1 q=1 state=ARMED t=300 latch=0" in lines          # command 1 left the schedule at once
    # the servo's timeline: one swing, 0.4 .. 0.5 s, for command 2 only
    assert [(s.gate, s.t_open, s.t_close, s.cmd_ids) for s in emu.swings] == [(1, 0.4, 0.5, [2])]


def test_a_swing_that_began_is_never_withdrawn():
    emu = armed_emulator()
    emu.feed(b"FIRE 7 gate=2 at=+100 hold=300\n", 0.0)
    emu.feed(b"CANCEL 7\n", 0.1)                            # due this very millisecond: it has begun
    emu.feed(b"CANCEL 7\n", 0.25)
    emu.advance(0.5)
    assert emu.read_lines() == ["ACK 7 due=100", "CANCEL 7 TOO_LATE", "CANCEL 7 TOO_LATE",
                                "DONE 7 t=400 from=0 to=300"]
    assert [(s.t_open, s.t_close) for s in emu.swings] == [(0.1, 0.4)]


def test_cancel_before_the_fire_arrives_refuses_the_late_copy():
    emu = armed_emulator()
    emu.feed(b"CANCEL 9\nFIRE 9 gate=1 at=+100 hold=100\nSTATUS 9\n", 0.0)
    emu.advance(0.4)                                        # inside the 0.5 s watchdog
    assert emu.read_lines() == ["NAK 9 CANCELLED"] * 3
    assert emu.swings == []


# ---------------------------------------------------------------------------- the host client
def test_client_cancel_resolves_the_command_default_and_no_gate_moves():
    clock, act, log = sim_actuator()
    keep = act.submit(FireCommand("keep", 1, 0.8, 0.1))
    drop = act.submit(FireCommand("drop", 1, 0.6, 0.1))
    clock.advance_to(0.3)
    assert act.cancel(drop, "cancelled_speed_change") == "requested"
    clock.advance_to(1.2)
    f = fates(act)
    assert (f["drop"].kind, f["drop"].reason) == ("lost", "cancelled_speed_change")
    assert f["keep"].kind == "done"
    assert [s.cmd_ids for s in act.emulator.swings] == [[keep]]
    assert act.in_flight() == 0
    assert act.cancel(drop) == "unknown"                     # already resolved: nothing to withdraw


def test_client_cancel_too_late_leaves_the_swing_and_its_done():
    clock, act, log = sim_actuator()
    cid = act.submit(FireCommand("late", 2, 0.5, 0.3))
    clock.advance_to(0.6)                                    # the gate opened at 0.5
    assert act.cancel(cid) == "requested"
    clock.advance_to(1.2)
    f = fates(act)
    assert f["late"].kind == "done"
    assert [s.cmd_ids for s in act.emulator.swings] == [[cid]]
    assert [e["cmd"] for e in log.of_type("cancel_refused")] == [cid]


def test_client_cancel_of_an_unsent_command_resolves_at_once():
    clock = SimClock()
    act = SimulatedActuator(clock=clock)                    # not polled: nothing reaches the wire
    cid = act.submit(FireCommand("never", 1, 0.8, 0.1))
    assert act.cancel(cid, "cancelled_swing_conflict") == "unsent"
    e = act.events.get_nowait()
    assert (e.kind, e.record, e.reason) == ("lost", "never", "cancelled_swing_conflict")
    assert act.in_flight() == 0


@pytest.mark.parametrize("direction,verb", [("tx", "CANCEL"), ("rx", "NAK")])
def test_client_cancel_survives_a_lost_line(direction, verb):
    clock, act, log = sim_actuator()
    cid = act.submit(FireCommand("x", 1, 0.7, 0.1))
    clock.advance_to(0.3)
    act.link_port.faults.drop_next(direction, 1, verb=verb)
    act.cancel(cid, "cancelled_speed_change")
    clock.advance_to(1.2)
    f = fates(act)
    assert (f["x"].kind, f["x"].reason) == ("lost", "cancelled_speed_change")
    assert act.emulator.swings == []
    sent = [b for b in act.link_port.bytes_written if b.startswith(b"CANCEL")]
    assert len(sent) >= 2                                    # resent by id (idempotent on the MCU)


# ---------------------------------------------------------------------------- the whole line
# Found by the fuzzer (seed 16): two same-gate items in flight when the belt slows 510 -> 306 mm/s;
# the second command's swing, timed on the old speed, catches the first (late) item.
STEPS = ((20.589, 509.57, 0.0), (40.201, 306.2, 0.0))


def run_speed_step(monkeypatch, cancel: bool):
    from fovea.line.runner import LineRunner
    from fovea.line.sim import line_config_for, simulate
    from fovea.synth.conveyor import Conveyor, ConveyorConfig

    if not cancel:              # the line as it was before CANCEL: commands in flight cannot be withdrawn
        monkeypatch.setattr(LineRunner, "_cancel_in_flight", lambda self, *a: None)
    conv = Conveyor(ConveyorConfig(n_objects=90, appearance="simple", seed=16, speed_profile=STEPS))
    return simulate(conv, config=line_config_for(conv.config, measure_speed=True),
                    predictor_kw={"error_rate": 0.02, "seed": 16}, actuator_seed=16)


def test_speed_step_double_actuation_reproduced_without_cancel(monkeypatch):
    a = run_speed_step(monkeypatch, cancel=False).audit
    assert a.actuated_twice >= 1, a.lines()                  # the defect this verb exists for


def test_speed_step_double_actuation_gone_with_cancel(monkeypatch):
    r = run_speed_step(monkeypatch, cancel=True)
    a = r.audit
    assert a.actuated_twice == 0, a.twice_actuated_items
    assert a.items_with_two_outcomes == 0 and a.host_vs_physical_mismatch == 0, a.mismatches
    outcomes = r.log.of_type("outcome")
    assert len({e["record"] for e in outcomes}) == len(outcomes)          # one outcome per record
    cancels = r.log.of_type("cancel")
    assert cancels, "no command was withdrawn at the step"
    withdrawn = {e["cmd"] for e in cancels} - {e["cmd"] for e in r.log.of_type("cancel_refused")}
    swung = {c for s in r.actuator.emulator.swings for c in s.cmd_ids}
    assert withdrawn and not withdrawn & swung              # a confirmed cancel: its gate never moved
    by_rec = {e["record"]: e for e in outcomes}
    for e in cancels:
        if e["cmd"] in withdrawn:
            assert by_rec[e["record"]]["lane"] in ("default", "unknown")
