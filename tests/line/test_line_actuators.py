"""Actuator clients against the firmware emulator: in-process on simulated time, and a real
pyserial `socket://` link in real time (handshake, reconnect with backoff, MCU reset)."""

import threading
import time

import pytest

from fovea.errors import ConfigError
from fovea.line.actuators import FireCommand, LinkConfig, SerialActuator, SimulatedActuator
from fovea.line.clock import SimClock
from fovea.line.events import EventLog
from _link_helpers import wait_for


def sim_actuator(**kw):
    clock = SimClock()
    log = EventLog()
    act = SimulatedActuator(clock=clock, emit=log.emit, **kw)
    clock.call_every(0.01, act.poll)
    return clock, act, log


def drain(act):
    out = []
    while not act.events.empty():
        out.append(act.events.get())
    return out


def test_bytes_on_the_wire_and_fate_reported_once():
    clock, act, log = sim_actuator()
    clock.advance_to(0.1)
    assert act.ready and act.boot_id == act.emulator.boot_id
    act.submit(FireCommand("r1", gate=1, t_open=clock.now() + 0.3, hold_s=0.2))
    clock.advance_to(1.0)
    wire = b"".join(act.link_port.bytes_written).decode().splitlines()
    assert wire[:2] == ["HELLO", "ARM"]
    fires = [w for w in wire if w.startswith("FIRE")]
    # the emulator booted at host time 0, so host 0.4 s is MCU millis 400; the FIRE is bound to the boot
    assert fires == [f"FIRE 1 gate=1 due=400 hold=200 boot={act.emulator.boot_id}"]
    assert all(w.startswith("PING ") for w in wire[2:] if not w.startswith("FIRE"))
    evs = drain(act)
    assert [(e.kind, e.record) for e in evs] == [("ack", "r1"), ("done", "r1")]
    assert (round(evs[1].t_from, 6), round(evs[1].t_to, 6)) == (0.4, 0.6)       # the gate's open interval
    (sw,) = act.emulator.swings
    assert (sw.gate, round(sw.t_open, 6), round(sw.t_close, 6)) == (1, 0.4, 0.6)


def test_cut_cable_resolves_in_doubt_command_by_id_without_refiring():
    clock, act, log = sim_actuator()
    clock.advance_to(0.1)
    act.submit(FireCommand("r1", gate=2, t_open=clock.now() + 0.25, hold_s=0.1))
    clock.advance_to(0.15)
    act.link_port.set_down(True)
    clock.advance_to(0.7)       # the fire happened at 0.35 while the host could not hear it
    act.link_port.set_down(False)
    clock.advance_to(3.0)
    kinds = [(e.kind, e.record) for e in drain(act)]
    assert ("done", "r1") in kinds and sum(k == "done" for k, _ in kinds) == 1
    assert len(act.emulator.swings) == 1       # the resend by id was answered, not executed again
    wire = b"".join(act.link_port.bytes_written).decode().splitlines()
    assert sum(w.startswith("FIRE 1 ") for w in wire) == 1 and "STATUS 1" in wire    # asked, never re-sent
    assert act.n_reconnects == 1 and act.ready
    downs = [e for e in log.of_type("fault") if e["kind"] == "link_down"]
    gaps = [round(b["t"] - a["t"], 3) for a, b in zip(downs, downs[1:])]
    # exponential back-off, capped at 50 ms (+ one 10 ms poll tick) while the drop is younger than 1 s:
    # the MCU's 0.5 s watchdog must not run out while the host waits to re-open
    assert gaps[:2] == [0.02, 0.04] and max(gaps) <= 0.06 + 1e-9, gaps


def test_commands_refused_while_safe_are_lost_with_reason():
    clock, act, log = sim_actuator(config=LinkConfig(auto_arm=False))
    clock.advance_to(0.1)
    assert act.link == "ready" and not act.ready
    act.submit(FireCommand("r1", gate=1, t_open=clock.now() + 0.05, hold_s=0.1))
    clock.advance_to(0.5)
    (ev,) = drain(act)
    assert (ev.kind, ev.reason) == ("lost", "link_not_ready")
    assert act.emulator.swings == []


def test_serial_actuator_over_socket_link(server):
    log = EventLog()
    act = SerialActuator(server.url, emit=log.emit, config=LinkConfig(backoff_s=(0.02, 0.2)))
    stop = threading.Event()
    th = threading.Thread(target=act.run_forever, args=(stop,), daemon=True)
    th.start()
    try:
        assert wait_for(lambda: act.ready), "no READY/ARM handshake"
        boot = act.boot_id
        act.submit(FireCommand("a", gate=1, t_open=time.monotonic() + 0.4, hold_s=0.05))
        assert wait_for(lambda: any(e["type"] == "done" for e in log.events))
        # pull the cable: the client notices, backs off, reconnects and re-handshakes
        server.drop()
        assert wait_for(lambda: act.n_reconnects >= 1 and act.ready)
        assert act.boot_id == boot
        act.submit(FireCommand("b", gate=2, t_open=time.monotonic() + 0.4, hold_s=0.05))
        assert wait_for(lambda: sum(e["type"] == "done" for e in log.events) == 2)
        # power-cycle the board with a command pending: it is reported lost, never silently kept
        act.submit(FireCommand("c", gate=1, t_open=time.monotonic() + 1.0, hold_s=0.05))
        assert wait_for(lambda: any(e["type"] == "ack" and e["record"] == "c" for e in log.events))
        server.reset()
        assert wait_for(lambda: any(e.get("reason") == "mcu_reset" for e in log.events))
        assert act.boot_id != boot
        assert wait_for(lambda: act.ready)                     # re-armed explicitly after READY
    finally:
        stop.set()
        th.join(2)
        act.close()
    assert [s.cmd_ids for s in server.emulator.swings] == [[1], [2]]


def test_serial_actuator_needs_a_port():
    with pytest.raises(ConfigError):
        SerialActuator("")


def test_serial_actuator_over_a_pty():
    from fovea.line.emulator import run_pty

    stop_emu = threading.Event()
    path = run_pty(stop=stop_emu)
    log = EventLog()
    act = SerialActuator(path, emit=log.emit)
    stop = threading.Event()
    th = threading.Thread(target=act.run_forever, args=(stop,), daemon=True)
    th.start()
    try:
        assert wait_for(lambda: act.ready)
        act.submit(FireCommand("p", gate=2, t_open=time.monotonic() + 0.4, hold_s=0.05))
        assert wait_for(lambda: any(e["type"] == "done" for e in log.events))
    finally:
        stop.set()
        th.join(2)
        act.close()
        stop_emu.set()


def test_operator_disarm_holds_across_a_reset_and_arm_restores():
    clock, act, log = sim_actuator()
    act.set_armed(False, who="test")
    clock.advance_to(0.4)
    assert act.mcu_state == "SAFE" and not act.ready
    act.emulator.reset(clock.now())  # a power cycle: the host must not re-arm a disarmed line
    clock.advance_to(1.5)
    assert act.mcu_state != "ARMED"
    act.set_armed(True, who="test")
    clock.advance_to(2.0)
    assert act.ready
    details = [e["detail"] for e in log.events if e["type"] == "fault" and e["kind"] in ("arm", "disarm")]
    assert "test disarms" in details and "test arms" in details
