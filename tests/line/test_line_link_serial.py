"""The reset, flapping and lost-line families over the serial transport with the real clock.

pyserial `socket://` to `EmulatorServer` (the firmware emulator in real time). First the protocol
client alone (about a second each), then the whole threaded line (a few seconds each), judged
by the emulated MCU's gate timeline and the physical audit, never by the host's bookkeeping.
"""

import threading
import time

import pytest

from fovea.line.actuators import FireCommand, LinkConfig, SerialActuator
from fovea.line.audit import audit
from fovea.line.clock import RealClock
from fovea.line.doubles import OraclePredictor
from fovea.line.emulator import EmulatorServer, GateSwing
from fovea.line.events import EventLog, summarize
from fovea.line.runner import LineRunner
from fovea.line.sim import line_config_for
from fovea.line.sources import ConveyorSource
from fovea.synth.conveyor import Conveyor, ConveyorConfig
from _link_helpers import wait_for


class Client:
    """A SerialActuator on its own thread; fates collected by record."""

    def __init__(self, server, **cfg):
        self.log = EventLog()
        self.act = SerialActuator(server.url, emit=self.log.emit, config=LinkConfig(**cfg))
        self.stop = threading.Event()
        self.th = threading.Thread(target=self.act.run_forever, args=(self.stop,), daemon=True)
        self.th.start()
        assert wait_for(lambda: self.act.ready), "no READY/ARM handshake"
        self.fates = {}

    def drain(self):
        while not self.act.events.empty():
            e = self.act.events.get()
            if e.kind != "ack":
                assert e.record not in self.fates, f"two fates for {e.record}"
                self.fates[e.record] = e
        return self.fates

    def close(self):
        self.stop.set()
        self.th.join(2)
        self.act.close(wait_s=0.5)


def swings(server, cmd_id):
    with server.lock:
        return [GateSwing(s.gate, s.t_open + server.t0, s.t_close + server.t0, s.cmd_ids)
                for s in server.emulator.swings if cmd_id in s.cmd_ids]


def at_swing(server, into_s, fn, timeout=3.0):
    """Call fn() `into_s` seconds after the next gate opening (a reset mid-swing), from a thread."""
    def run():
        t_end = time.monotonic() + timeout
        while time.monotonic() < t_end:
            with server.lock:
                opened = [s.t_open for s in server.emulator._open_swing.values()]
            if opened:
                time.sleep(max(0.0, opened[0] + into_s - server.now()))
                fn()
                return
            time.sleep(0.002)
    th = threading.Thread(target=run, daemon=True)
    th.start()
    return th


# ---------------------------------------------------------------------------- the client alone
@pytest.mark.parametrize("power_loss", [False, True])
def test_serial_reset_mid_swing(server, power_loss):
    c = Client(server)
    try:
        now = time.monotonic()
        a = c.act.submit(FireCommand("open", gate=1, t_open=now + 0.15, hold_s=0.4))
        b = c.act.submit(FireCommand("queued", gate=2, t_open=now + 0.9, hold_s=0.1))
        at_swing(server, 0.1, lambda: server.reset(power_loss=power_loss)).join()
        assert wait_for(lambda: len(c.drain()) == 2 and c.act.in_flight() == 0, 3.0)
        f = c.fates
        (sa,) = swings(server, a)
        assert swings(server, b) == []
        assert (f["queued"].kind, f["queued"].reason) == ("lost", "mcu_reset")
        if power_loss:
            assert (f["open"].kind, f["open"].reason) == ("unknown", "mcu_reset_journal_lost")
        else:          # the journal says when the swing really started and was cut (host clock, +- a few ms)
            assert f["open"].kind == "cut"
            assert abs(f["open"].t_from - sa.t_open) < 0.02 and abs(f["open"].t_to - sa.t_close) < 0.02
        assert [e["journal"] for e in c.log.of_type("fault") if e["kind"] == "mcu_reset"] == \
            ["lost" if power_loss else "kept"]
        assert wait_for(lambda: c.act.ready)
    finally:
        c.close()


def test_serial_flapping_link(server):
    c = Client(server)
    try:
        t0 = time.monotonic()
        ids = {f"r{i}": c.act.submit(FireCommand(f"r{i}", gate=1 + i % 2, t_open=t0 + 0.3 + 0.2 * i, hold_s=0.1))
               for i in range(8)}
        for down, dur in ((True, 0.25), (False, 0.3), (True, 0.7), (False, 0.3), (True, 0.2)):
            server.set_down(down)
            time.sleep(dur)
        server.set_down(False)
        assert wait_for(lambda: len(c.drain()) == len(ids) and c.act.in_flight() == 0, 6.0), c.fates
        for rec, k in ids.items():                 # each fate agrees with what the gate did
            sw, f = swings(server, k), c.fates[rec]
            if f.kind == "lost":
                assert sw == [], (rec, f)
            elif f.kind in ("done", "cut"):
                (s,) = sw
                assert abs(f.t_from - s.t_open) < 0.02 and abs(f.t_to - s.t_close) < 0.02, (rec, f, s)
        latched = server.emulator.n_latches.get("HB_TIMEOUT", 0)
        assert latched >= 1                        # the 0.7 s drop outlasts the 0.5 s watchdog
        safe = [e for e in c.log.of_type("fault") if e["kind"] == "mcu_safe" and e["reason"] == "HB_TIMEOUT"]
        assert len(safe) == latched and all(e["source"] in ("READY", "STATE", "PONG") for e in safe)
    finally:
        c.close()


def test_serial_lost_done_and_ack_lines(server):
    c = Client(server)
    try:
        server.faults.drop_next("rx", 1, verb="DONE")
        server.faults.drop_next("rx", 1, verb="ACK")
        now = time.monotonic()
        a = c.act.submit(FireCommand("a", gate=1, t_open=now + 0.15, hold_s=0.1))
        b = c.act.submit(FireCommand("b", gate=2, t_open=now + 0.2, hold_s=0.1))
        assert wait_for(lambda: len(c.drain()) == 2 and c.act.in_flight() == 0, 2.0)
        assert {k: e.kind for k, e in c.fates.items()} == {"a": "done", "b": "done"}
        assert len(swings(server, a)) == len(swings(server, b)) == 1     # each fired exactly once
        assert [x[3] for x in server.faults.log] == ["drop", "drop"]
    finally:
        c.close()


# ---------------------------------------------------------------------------- the whole line
def run_line(server, fault):
    """A short real-time line (5 items, 600 mm/s) over socket:// with `fault(server)` started at once."""
    conv = Conveyor(ConveyorConfig(n_objects=5, appearance="simple", seed=11, belt_speed_mm_s=600.0, fps=20.0,
                                   gap_mm=(120.0, 180.0), lead_in_mm=300.0, p_box=0.0))
    cfg = line_config_for(conv.config)
    clock = RealClock()
    log = EventLog()
    src = ConveyorSource(conv, clock=clock, driver_buffer=1, x_end_mm=900.0)
    act = SerialActuator(server.url, emit=log.emit, clock=clock)
    runner = LineRunner(src, OraclePredictor(clock=clock, latency_s=0.003), act, cfg, clock=clock, log=log)
    th = threading.Thread(target=fault, args=(server,), daemon=True)
    th.start()
    runner.run_threaded(max_time_s=25.0)
    th.join(5)
    with server.lock:
        sw = [GateSwing(s.gate, s.t_open + server.t0, s.t_close + server.t0, s.cmd_ids)
              for s in server.emulator.swings]
    rep = audit(conv, src.t0, sw, cfg, runner.finished)
    s = summarize(log.events)
    kinds = {e["kind"] for e in log.of_type("fault")}
    assert "run_time_limit" not in kinds and "settle_timeout" not in kinds, "the run did not end by itself"
    assert s["records_with_multiple_outcomes"] == 0 and rep.actuated_twice == 0
    assert all(r.lane is not None for r in runner.finished)
    # an item the camera never saw is the perception side's business (blind intervals), not the link's;
    # it may only happen when frames were lost, and then it is logged
    assert rep.items_without_record == 0 or (s["frames_dropped"] and "blind_interval" in kinds), \
        (rep.lines(), s["frames_dropped"], s["faults"])
    for r in runner.finished:                 # logged outcome == physical bin, unless flagged unknown
        if r.truth and r.lane != "unknown":
            assert rep.item_bins[max(r.truth, key=r.truth.get)] == r.lane, (r, rep.lines())
    return runner, log, rep


def test_line_over_serial_survives_a_reset_mid_swing(server):
    runner, log, rep = run_line(server, lambda srv: at_swing(srv, 0.05, srv.reset, timeout=8.0).join())
    assert server.emulator.n_resets == 1
    assert [e for e in log.of_type("fault") if e["kind"] == "mcu_reset"]


def test_line_over_serial_survives_flapping(server):
    def flap(srv):
        time.sleep(0.8)
        for down, dur in ((True, 0.3), (False, 0.4), (True, 0.6), (False, 0.4), (True, 0.3)):
            srv.set_down(down)
            time.sleep(dur)
        srv.set_down(False)
    runner, log, rep = run_line(server, flap)
    assert runner.actuator.n_reconnects >= 3


def test_line_over_serial_survives_lost_lines(server):
    def lose(srv):
        for verb in ("DONE", "ACK", "PONG"):
            srv.faults.drop_next("rx", 1, verb=verb)
        srv.faults.drop_next("tx", 1, verb="FIRE")
    runner, log, rep = run_line(server, lose)
    assert len(server.faults.log) >= 3
    assert any(e.get("reason") == "done" for e in log.of_type("outcome"))
