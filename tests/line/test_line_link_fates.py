"""Command fates that match physics, and commands that always end (issue 11 items 1-3), simulated time.

The judge in every test is the emulated MCU's own gate timeline (`emulator.swings`, what the
servo did) or the audit's gate model, never the client's bookkeeping.
"""

import numpy as np
import pytest

from fovea.line.actuators import FireCommand, LinkConfig
from fovea.line.fates import DEFAULT, LANE, UNKNOWN, ClockSync, swing_outcome
from _link_helpers import fates, sim_actuator


def swings_of(act, cmd_id):
    return [s for s in act.emulator.swings if cmd_id in s.cmd_ids]


def faults(log, kind):
    return [e for e in log.of_type("fault") if e["kind"] == kind]


# ---------------------------------------------------------------------------- pure helpers
def audit_state(t, t_open, t_close, act):
    """The physical audit's gate model at one instant: full / partial / closed (fovea.line.audit)."""
    if t_open + act <= t <= t_close:
        return "full"
    if t_open <= t <= t_close + act:
        return "partial"
    return "closed"


def test_swing_outcome_never_claims_what_the_gate_model_denies():
    rng = np.random.default_rng(0)
    act = 0.1
    seen = set()
    for _ in range(3000):
        t_from, t_to = sorted(rng.uniform(0, 1, 2))
        tc, tol = rng.uniform(-0.2, 1.2), rng.uniform(0.0, 0.1)
        got = swing_outcome(tc, tol, t_from, t_to, act)
        states = {audit_state(t, t_from, t_to, act) for t in np.linspace(tc - tol, tc + tol, 201)}
        seen.add(got)
        if got == LANE:
            assert states == {"full"}, (tc, tol, t_from, t_to)
        elif got == DEFAULT:
            assert states == {"closed"}, (tc, tol, t_from, t_to)
        else:                      # unknown only when the window really mixes states (or touches an edge)
            assert states != {"full"} or min(abs(tc - tol - t_from - act), abs(tc + tol - t_to)) < 1e-2
    assert seen == {LANE, DEFAULT, UNKNOWN}


def test_clock_sync_bounds_and_ignores_delayed_exchanges():
    rng = np.random.default_rng(1)
    true_offset = 12.3456
    sync = ClockSync(window=10)
    for k in range(10):
        t_send = 100.0 + 0.1 * k
        up = rng.uniform(0.0005, 0.002) + (0.4 if k == 3 else 0.0)      # one PING delayed 0.4 s on the wire
        down = rng.uniform(0.0005, 0.002) + (0.3 if k == 6 else 0.0)    # one PONG delayed
        t_mcu = t_send + up - true_offset
        sync.add(t_send, t_send + up + down, t_mcu)
    # the estimate is the best exchange's lower bound: never above the truth, at most the best one-way latency below
    assert true_offset - 0.002 <= sync.offset_s <= true_offset


# ---------------------------------------------------------------------------- item 1: fates
def test_reset_mid_swing_reports_cut_never_started_and_completed_from_the_journal():
    clock, act, log = sim_actuator()
    t0 = clock.now()
    a = act.submit(FireCommand("done_lost", gate=1, t_open=t0 + 0.10, hold_s=0.20))   # its DONE (0.30) is lost
    b = act.submit(FireCommand("cut", gate=2, t_open=t0 + 0.20, hold_s=0.40))
    c = act.submit(FireCommand("queued", gate=1, t_open=t0 + 0.90, hold_s=0.10))
    act.link_port.faults.drop_next("rx", 1, verb="DONE")
    clock.call_at(t0 + 0.35, lambda: act.emulator.reset(clock.now()))               # gate 2 open since 0.20
    clock.advance_to(t0 + 2.0)
    f = fates(act)
    assert act.in_flight() == 0
    # physics: a's swing ran its course, b's was cut at the reset, c never moved a gate
    (sa,), (sb,) = swings_of(act, a), swings_of(act, b)
    assert swings_of(act, c) == []
    assert (f["done_lost"].kind, f["done_lost"].t_from, f["done_lost"].t_to) == ("done", pytest.approx(sa.t_open),
                                                                                pytest.approx(sa.t_close))
    assert f["cut"].kind == "cut" and f["cut"].t_from == pytest.approx(sb.t_open)
    assert f["cut"].t_to == pytest.approx(sb.t_close) and sb.t_close == pytest.approx(t0 + 0.35)
    assert (f["queued"].kind, f["queued"].reason) == ("lost", "mcu_reset")
    (reset,) = faults(log, "mcu_reset")
    assert reset["journal"] == "kept" and reset["records"] == ["cut", "done_lost", "queued"]
    assert [e["reason"] for e in faults(log, "mcu_safe")] == ["RESET"]


def test_power_loss_leaves_only_what_timing_proves():
    clock, act, log = sim_actuator()
    t0 = clock.now()
    b = act.submit(FireCommand("open", gate=2, t_open=t0 + 0.20, hold_s=0.40))
    c = act.submit(FireCommand("later", gate=1, t_open=t0 + 0.90, hold_s=0.10))
    clock.call_at(t0 + 0.35, lambda: act.emulator.reset(clock.now(), power_loss=True))
    clock.advance_to(t0 + 2.0)
    f = fates(act)
    assert len(swings_of(act, b)) == 1 and swings_of(act, c) == []
    assert (f["open"].kind, f["open"].reason) == ("unknown", "mcu_reset_journal_lost")
    assert (f["later"].kind, f["later"].reason) == ("lost", "mcu_reset")      # due after the reset: never started
    assert faults(log, "mcu_reset")[0]["journal"] == "lost"


# ---------------------------------------------------------------------------- item 2: every command ends
def test_one_lost_done_line_is_recovered_by_status_after_the_deadline():
    cfg = LinkConfig()
    clock, act, log = sim_actuator(config=cfg)
    t0 = clock.now()
    k = act.submit(FireCommand("r", gate=1, t_open=t0 + 0.1, hold_s=0.2))
    act.link_port.faults.drop_next("rx", 1, verb="DONE")
    resolved_at = None
    while clock.now() < t0 + 3.0 and resolved_at is None:
        clock.advance_to(clock.now() + 0.01)
        if act.in_flight() == 0:
            resolved_at = clock.now()
    f = fates(act)
    (s,) = swings_of(act, k)
    assert f["r"].kind == "done" and (f["r"].t_from, f["r"].t_to) == (pytest.approx(s.t_open), pytest.approx(s.t_close))
    wire = b"".join(act.link_port.bytes_written).decode().splitlines()
    assert wire.count(f"STATUS {k}") == 1
    # deadline = due + hold + done_grace; the answer comes on the next poll
    assert resolved_at <= t0 + 0.1 + 0.2 + cfg.done_grace_s + 0.03


def test_a_swing_extended_by_a_later_command_is_waited_for_not_given_up():
    clock, act, log = sim_actuator()
    t0 = clock.now()
    a = act.submit(FireCommand("a", gate=1, t_open=t0 + 0.1, hold_s=0.1))
    act.submit(FireCommand("b", gate=1, t_open=t0 + 0.15, hold_s=0.6))     # keeps gate 1 open until 0.75
    clock.advance_to(t0 + 2.0)
    f = fates(act)
    (s,) = act.emulator.swings
    assert f["a"].kind == f["b"].kind == "done" and f["a"].t_to == pytest.approx(s.t_close)
    assert s.cmd_ids == [a, a + 1]


def test_delayed_fire_never_fires_late():
    clock, act, log = sim_actuator()
    t0 = clock.now()
    act.link_port.faults.delay_next("tx", 0.3, verb="FIRE")
    k = act.submit(FireCommand("late", gate=1, t_open=t0 + 0.1, hold_s=0.1))
    clock.advance_to(t0 + 1.5)
    f = fates(act)
    assert swings_of(act, k) == []                         # refused, not fired 0.3 s late onto the next item
    assert f["late"].kind == "lost" and f["late"].reason in ("nak_late", "never_received")
    act.link_port.faults.delay_next("tx", 0.03, verb="FIRE")
    k2 = act.submit(FireCommand("on_time", gate=2, t_open=clock.now() + 0.2, hold_s=0.1))
    t_open = clock.now() + 0.2
    clock.advance_to(clock.now() + 1.0)
    (s,) = swings_of(act, k2)
    assert s.t_open == pytest.approx(t_open, abs=0.0011)   # absolute due: the wire delay does not shift it
    assert fates(act)["on_time"].kind == "done"


def test_dead_link_resolves_everything_and_says_so():
    clock, act, log = sim_actuator(config=LinkConfig(dead_after_s=2.0))
    t0 = clock.now()
    act.submit(FireCommand("before", gate=1, t_open=t0 + 0.15, hold_s=0.1))
    act.submit(FireCommand("after", gate=2, t_open=t0 + 1.2, hold_s=0.1))
    clock.advance_to(t0 + 0.05)
    act.link_port.set_down(True)                           # and it never comes back
    clock.advance_to(t0 + 6.0)
    f = fates(act)
    assert act.in_flight() == 0
    # physics: the watchdog latched ~0.5 s after the last line, so "after" never moved; "before" ran
    assert act.emulator.n_latches == {"HB_TIMEOUT": 1}
    assert len(act.emulator.swings) == 1
    assert (f["after"].kind, f["after"].reason) == ("lost", "mcu_safe_watchdog")
    assert (f["before"].kind, f["before"].reason) == ("unknown", "link_dead")
    (pres,) = faults(log, "mcu_safe_presumed")
    assert pres["t"] <= t0 + 0.05 + 0.5 + 0.05 and pres["records"] == ["after", "before"]
    assert faults(log, "link_dead")


# ---------------------------------------------------------------------------- item 3: link inside the watchdog
@pytest.mark.parametrize("down_s", [0.2, 0.3])
def test_short_drops_keep_the_mcu_armed(down_s):
    clock, act, log = sim_actuator()
    t0 = clock.now()
    k = act.submit(FireCommand("r", gate=1, t_open=t0 + 0.6, hold_s=0.1))
    clock.advance_to(t0 + 0.1)
    act.link_port.set_down(True)
    clock.advance_to(t0 + 0.1 + down_s)
    act.link_port.set_down(False)
    clock.advance_to(t0 + 2.0)
    assert act.emulator.n_latches == {}                    # the MCU never latched
    assert fates(act)["r"].kind == "done" and len(swings_of(act, k)) == 1
    assert not faults(log, "mcu_safe") and not faults(log, "mcu_safe_presumed")


def test_flapping_link_logs_every_latch_with_its_reason():
    clock, act, log = sim_actuator()
    t0 = clock.now()
    ids = {}
    for i in range(12):
        ids[f"r{i}"] = act.submit(FireCommand(f"r{i}", gate=1 + i % 2, t_open=t0 + 0.3 + 0.25 * i, hold_s=0.12))
    t, down = t0 + 0.05, True
    for dur in (0.7, 0.4, 0.3, 0.4, 0.65, 0.5, 0.25, 0.5):   # down/up alternately
        clock.call_at(t, lambda d=down: act.link_port.set_down(d))
        t, down = t + dur, not down
    clock.call_at(t, lambda: act.link_port.set_down(False))
    clock.advance_to(t + 5.0)
    f = fates(act)
    assert act.in_flight() == 0 and set(f) == set(ids)
    latched = act.emulator.n_latches.get("HB_TIMEOUT", 0)
    assert latched >= 1
    assert sum(e["reason"] == "HB_TIMEOUT" for e in faults(log, "mcu_safe")) == latched
    for rec, k in ids.items():                             # each fate agrees with what the gate did
        sw = swings_of(act, k)
        if f[rec].kind == "lost":
            assert sw == [], rec
        elif f[rec].kind in ("done", "cut"):
            (s,) = sw
            assert (f[rec].t_from, f[rec].t_to) == (pytest.approx(s.t_open), pytest.approx(s.t_close)), rec



def test_a_latch_after_an_unconfirmed_arm_is_logged_from_the_latch_number():
    """After a latch the host re-arms; the MCU arms but its STATE ARMED reply and the PONGs are lost
    before the link drops again past the watchdog. The MCU latched twice (its own count); the host,
    which never saw it ARMED again, logs the second latch from READY's `latch=` number (the flapping
    benchmark's 16 latches / 15 logged)."""
    clock, act, log = sim_actuator()
    t0 = clock.now()
    blind = (t0 + 0.8, t0 + 1.3)                    # rx lines that would show the MCU ARMED are lost

    def lose(direction, line, t):
        hides_arm = line.startswith("STATE ARMED") or line.startswith("PONG")
        return "drop" if direction == "rx" and hides_arm and blind[0] <= t <= blind[1] else None

    act.link_port.faults.line_filter = lose
    for t, down in ((t0 + 0.05, True), (t0 + 0.8, False), (t0 + 1.0, True), (t0 + 1.9, False)):
        clock.call_at(t, lambda d=down: act.link_port.set_down(d))
    clock.advance_to(t0 + 4.0)
    assert act.emulator.n_latches.get("HB_TIMEOUT", 0) == 2
    logged = [e for e in faults(log, "mcu_safe") if e["reason"] == "HB_TIMEOUT"]
    assert len(logged) == 2, [(e["t"], e["source"], e["detail"]) for e in faults(log, "mcu_safe")]


def test_absolute_due_across_the_millis_wrap():
    """millis() wraps after 2**32 ms (49.7 days): a FIRE due just after the wrap fires on time, the clock
    estimate stays continuous, and a due just before 'now' is still refused LATE."""
    from fovea.line.mcu import FirmwareEmulator

    emu = FirmwareEmulator(t0=0.0)
    t = 2 ** 32 / 1000 - 0.3                       # 300 ms before the wrap
    emu.feed(b"ARM\n", t - 0.1)
    emu.read_lines()
    emu.feed(b"FIRE 1 gate=1 due=200 hold=100\n", t)          # 500 ms ahead, after the wrap
    emu.feed(f"FIRE 2 gate=2 due={2 ** 32 - 301} hold=100\n".encode(), t)   # 1 ms in the past
    emu.feed(b"PING 1\n", t + 0.45)
    emu.advance(t + 0.7)
    lines = emu.read_lines()
    assert lines[:2] == ["ACK 1 due=200", "NAK 2 LATE"]
    assert lines[2] == "PONG 1 q=1 state=ARMED t=150 latch=0"
    assert lines[3] == "DONE 1 t=300 from=0 to=100"
    (s,) = emu.swings
    assert s.t_open == pytest.approx(t + 0.5) and s.t_close == pytest.approx(t + 0.6)
    sync = ClockSync()
    for k, t_mcu_ms in enumerate((2 ** 32 - 200, 2 ** 32 - 100, 0, 100)):
        sync.add(10.0 + 0.1 * k, 10.0 + 0.1 * k + 0.001, t_mcu_ms / 1000)
    assert sync.offset_s == pytest.approx(10.2 - 2 ** 32 / 1000)
    assert sync.to_mcu_ms(10.5) == 300


def test_close_gives_every_command_its_fate():
    clock, act, log = sim_actuator()
    t0 = clock.now()
    k1 = act.submit(FireCommand("runs", gate=1, t_open=t0 + 0.1, hold_s=0.1))
    k2 = act.submit(FireCommand("too_far", gate=2, t_open=t0 + 5.0, hold_s=0.1))
    clock.advance_to(t0 + 0.05)
    act.close(wait_s=1.0)           # "runs" completes while close waits; "too_far" is stopped by SAFE
    f = fates(act)
    assert f["runs"].kind == "done" and len(swings_of(act, k1)) == 1
    assert (f["too_far"].kind, f["too_far"].reason) == ("lost", "nak_safe") and swings_of(act, k2) == []
    assert act.in_flight() == 0 and act.emulator.n_latches == {"HOST": 1}
    assert not faults(log, "mcu_safe")          # the host's own SAFE at shutdown is not a fault

    clock, act, log = sim_actuator()
    t0 = clock.now()
    act.submit(FireCommand("in_doubt", gate=1, t_open=t0 + 0.1, hold_s=0.3))
    clock.advance_to(t0 + 0.15)
    act.link_port.set_down(True)
    act.close(wait_s=1.0)
    f = fates(act)
    assert (f["in_doubt"].kind, f["in_doubt"].reason) == ("unknown", "link_dead_at_shutdown")
