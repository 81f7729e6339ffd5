"""Speed measurement off (`measure_speed: false`): gates are timed on the configured speed, and the
measured belt speed only checks it, so a belt that visibly runs at another speed sends items to
the default route (`speed_uncertain`) instead of timing gates on a guess.

Why (benchmarks/line.py, steps 400 -> 250 -> 550 mm/s, speed off, 3 x 300 items): committing
0.3 s before the deadline (`commit_lead_s`, from the last sighting at the image edge) instead of
at the decision line shortened the dead-reckoned travel from ~400 to ~300 mm, so at an
unmeasured 550 mm/s items came 0.2 s early instead of 0.27 s: into the overlap of their own
opening swing and the previous item's closing one (double actuations 9 -> 41, partial hits 168
-> 216; with commit_lead_s=None the old counts came back: 8 and 167). No timing is right on a
speed nobody measures; the check removes the guess.
"""

import numpy as np
import pytest

from fovea.core import ClassResult, Detections
from fovea.line.config import LineConfig
from fovea.line.policy import decide
from fovea.line.tracker import BeltTracker, ObjectRecord

W_PX, MM_PX, FPS = 160, 2.5, 10.0


def _frame(t, v, pitch_mm=250.0):
    boxes = []
    for k in range(10):
        x = 20 + v * t - pitch_mm * k
        x0, x1 = max(round((x - 35) / MM_PX), 0), min(round((x + 35) / MM_PX), W_PX)
        if x1 - x0 >= 3:
            boxes.append([x0, 30, x1, 58])
    xyxy = np.asarray(boxes, np.float32).reshape(-1, 4)
    return Detections(xyxy=xyxy, data={"solidity": np.ones(len(xyxy), np.float32)})


@pytest.mark.parametrize("v_belt", [250.0, 400.0, 550.0])
def test_the_configured_speed_is_checked_against_the_belt(v_belt):
    cfg = LineConfig(mm_per_px=MM_PX, fps=FPS, belt_speed_mm_s=400.0, measure_speed=False)
    tr = BeltTracker(cfg)
    assert tr.configured_speed_check(0.0).rel_err == 0.0         # nothing measured yet: as configured
    for k in range(20):
        d = _frame(k / FPS, v_belt)
        tr.update(k / FPS, d, W_PX, [None] * len(d))
    assert tr.speed_mm_s == 400.0                                 # gates are still timed on 400 mm/s
    trust = tr.configured_speed_check(1.9)
    # closed form: the belt is |v - 400| / 400 off the configured speed (+- 1 px in 0.3 s)
    assert trust.known and trust.rel_err == pytest.approx(abs(v_belt - 400.0) / 400.0, abs=0.03)
    rec = ObjectRecord("o1", 1.9, 1.9, 300.0, 100.0, 35.0, sightings=5)
    rec.votes = [ClassResult(probs=np.array([0.95, 0.04, 0.01], np.float32), class_names=("good", "damaged", "box"))] * 3
    d = decide(rec, [], 1.9, 400.0, cfg, 0.01, trust)
    assert d.reason == ("evidence" if v_belt == 400.0 else "speed_uncertain")
    assert tr.configured_speed_check(1.9 + cfg.speed_max_age_s + 0.1).rel_err == 0.0   # too old: as configured


def test_unmeasured_speed_steps_no_longer_hit_items_twice():
    """A short run with the belt stepping 400 -> 550 mm/s while the host times gates for 400: before
    the check, items came early into two swings (their own and the previous item's)."""
    from fovea.line.fuzz import FaultSchedule, run_schedule

    s = FaultSchedule(seed=0, n_items=40, conveyor={"speed_profile": ((8.0, 550.0, 0.0),)},
                      line={"measure_speed": False})
    r = run_schedule(s, keep_run=True)
    c = r.counts
    assert c["double_actuations"] == 0 and c["wrong_lane"] == 0 and c["partial_hits"] <= 1, r.line()
    late = [e for e in r.run.log.events if e["type"] == "decision" and e["t"] > 10.0]
    assert late and all(e["lane"] == "default" for e in late)   # the belt runs at 550: nothing is timed
    assert {e["reason"] for e in late} & {"speed_uncertain"}
