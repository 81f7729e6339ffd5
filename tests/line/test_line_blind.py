"""Blind intervals counted: objects that passed while no frame was usable, against the physical truth."""

import math

import pytest

from fovea.line.blind import estimate_unseen
from fovea.line.sim import line_config_for, simulate
from fovea.synth.conveyor import Conveyor, ConveyorConfig


def test_estimate_unseen_closed_forms():
    # the belt moved less than the view plus an item: nothing can have passed unseen
    e = estimate_unseen(travel_mm=430.0, seen_mm=460.0, pitch_mm=200.0, min_pitch_mm=150.0)
    assert (e.unseen_est, e.unseen_max, e.method) == (0.0, 0, "none")
    # 1000 mm unseen at a 250 mm pitch: 4 items expected, at most ceil(1000 / 150) = 7
    e = estimate_unseen(travel_mm=1460.0, seen_mm=460.0, pitch_mm=250.0, min_pitch_mm=150.0)
    assert e.unseen_est == pytest.approx(4.0) and e.unseen_max == 7
    # bracketing items 700 mm apart: at most floor(700 / 150) - 1 = 3 fit between them
    e = estimate_unseen(travel_mm=1460.0, seen_mm=460.0, pitch_mm=250.0, min_pitch_mm=150.0, gap_mm=700.0)
    assert e.unseen_max == 4 and e.unseen_est == pytest.approx(4.0)      # max never below the estimate


@pytest.mark.parametrize("slow_s", [1.5, 3.0])
def test_items_passing_during_slow_inference_are_counted(slow_s):
    """Every 5th inference overruns by slow_s: the logged estimate of unseen items matches the items
    that truly got no record (physical audit), and every one of them lies in a logged interval."""
    conv = Conveyor(ConveyorConfig(n_objects=120, appearance="simple", seed=5))
    r = simulate(conv, config=line_config_for(conv.config, measure_speed=True),
                 predictor_kw=dict(slow_every=5, slow_s=slow_s))
    a = r.audit
    blind = [e for e in r.log.of_type("fault") if e["kind"] == "blind_interval"]
    est = sum(e["unseen_est"] for e in blind)
    most = sum(e["unseen_max"] for e in blind)
    assert a.items_without_record >= 10                      # the scenario really hides items
    assert a.unseen_uncounted == 0 and a.unrecorded_in_lane == 0
    # the estimate is an expectation; the realised count varies with the random spacing (about
    # Poisson: sd ~ sqrt(n)), so allow two sd plus rounding
    n = a.items_without_record
    assert abs(est - n) <= 2 * math.sqrt(n) + 2, (est, a.lines())
    assert most >= a.items_without_record
    assert r.runner.n_unseen_est == pytest.approx(est, abs=0.01 * len(blind) + 1e-6)
    assert math.isfinite(r.runner.pitch_mm())
