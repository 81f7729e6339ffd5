"""The predict thread governor (fovea.engine.threads): /proc/stat arithmetic, the decision rule, and a real busy process."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
import torch

from fovea.engine import threads as T
from fovea.errors import ConfigError

STAT = """cpu  900 9 900 9000 90 9 9 9 0 0
cpu0 100 1 200 3000 10 2 3 4 0 0
cpu1 300 2 100 2000 20 1 1 1 0 0
cpu2 500 6 600 4000 60 6 5 4 0 0
intr 12345
ctxt 678
"""


def test_read_cpu_ticks_sums_the_allowed_cpus_only(tmp_path):
    p = tmp_path / "stat"
    p.write_text(STAT)
    # cpu0: busy 100+1+200+2+3+4 = 310, total 310+3000+10 = 3320; cpu1: busy 300+2+100+1+1+1 = 405, total 2425
    assert T.read_cpu_ticks(frozenset({0}), str(p)) == (310, 3320)
    assert T.read_cpu_ticks(frozenset({0, 1}), str(p)) == (715, 5745)
    assert T.read_cpu_ticks(frozenset({7}), str(p)) is None  # no such CPU: no sample, not zeros
    assert T.read_cpu_ticks(frozenset({0}), str(tmp_path / "missing")) is None


def test_others_busy_cores_subtracts_own_cpu():
    # 2 CPUs, a 1 s window at 100 ticks/s: 200 total ticks; 150 busy of which this process 0.5 s = 50 ticks
    assert T.others_busy_cores((0, 0, 0.0), (150, 200, 0.5), n_cpus=2, ticks_per_s=100) == pytest.approx(1.0)
    # own CPU above the busy ticks (tick sampling error): clipped at 0
    assert T.others_busy_cores((10, 10, 1.0), (60, 210, 2.0), n_cpus=2, ticks_per_s=100) == 0.0
    assert T.others_busy_cores((5, 5, 0.0), (5, 5, 0.0), n_cpus=2) == 0.0


@pytest.mark.parametrize("free,current,cap,want", [
    (2.0, 2, 2, 2), (1.0, 2, 2, 1), (1.3, 2, 2, 1), (1.4, 2, 2, 2),  # down only below 2 - 0.5 - 0.15
    (1.6, 1, 2, 1), (1.7, 1, 2, 2),  # up only above 1 + 0.5 + 0.15
    (0.2, 2, 2, 1), (7.9, 2, 4, 4), (3.0, 1, 8, 3), (0.0, 1, 1, 1)])
def test_target_threads_rounds_with_hysteresis_within_1_and_cap(free, current, cap, want):
    assert T.target_threads(free, current, cap) == want


class FakeGovernor(T.Governor):
    """A governor reading a scripted sequence of (busy, total, own CPU s, time) samples."""

    def __init__(self, samples, **kw):
        super().__init__(cpus=frozenset({0, 1}), interval=0.0, **kw)
        self.samples = iter(samples)

    def sample(self):
        return next(self.samples)


def test_governor_follows_the_free_cores_and_keeps_the_cap():
    before = torch.get_num_threads()
    try:
        # 100 ticks per CPU per window (2 CPUs: 200 total); other processes' busy ticks 0, 100, 100, 0
        own = 0.0
        samples, busy, total = [], 0, 0
        for others in (0, 0, 100, 100, 0, 0):
            busy, total = busy + others, total + 200
            samples.append((busy, total, own, 0.0))
        g = FakeGovernor(samples, cap=2)
        got = [g() for _ in range(6)]
        assert got == [2, 2, 1, 1, 2, 2]
        assert torch.get_num_threads() == 2
        assert [d[2] for d in g.decisions] == [1, 2]
        fixed = FakeGovernor(iter(samples), cap=2, adaptive=False)
        assert [fixed() for _ in range(3)] == [2, 2, 2]
    finally:
        torch.set_num_threads(before)


def test_policy_errors_name_the_value_and_the_fix(monkeypatch):
    monkeypatch.setattr(T, "_GOVERNOR", None)
    monkeypatch.setenv(T.POLICY_ENV, "greedy")
    with pytest.raises(ConfigError, match="greedy.*adaptive"):
        T.governor()
    monkeypatch.setenv(T.POLICY_ENV, "fixed")
    assert T.governor().adaptive is False
    with pytest.raises(ConfigError, match="below 1"):
        T.set_policy(cap=0)


@pytest.mark.skipif(not os.path.exists("/proc/stat") or len(T.allowed_cpus()) < 2, reason="needs Linux, 2 CPUs")
def test_a_busy_process_on_one_of_two_cpus_takes_a_thread_away():
    cpus = sorted(T.allowed_cpus())[:2]
    hog = subprocess.Popen([sys.executable, "-c", f"import os; os.sched_setaffinity(0, {{{cpus[0]}}})\nwhile True: pass"])
    before = torch.get_num_threads()
    try:
        time.sleep(0.5)
        g = T.Governor(cap=2, interval=0.2, cpus=frozenset(cpus))
        seen = []
        for _ in range(4):
            seen.append(g())
            time.sleep(0.25)
        # the first call has no window yet (cap); once a window has been read, the hog's core is not free
        assert seen[0] == 2 and seen[-1] == 1, (seen, g.decisions)
    finally:
        hog.kill()
        hog.wait()
        torch.set_num_threads(before)


def test_a_bad_threads_variable_is_an_error(monkeypatch):
    monkeypatch.setattr(T, "_GOVERNOR", None)
    monkeypatch.delenv(T.POLICY_ENV, raising=False)
    monkeypatch.setenv("FOVEA_THREADS", "two")
    with pytest.raises(ConfigError, match="FOVEA_THREADS='two'.*whole number"):
        T.governor()
    monkeypatch.setenv("FOVEA_THREADS", "3")
    assert T.governor().cap == 3
