"""The threaded runner on the real clock, belt-speed measurement, and the CLI end to end."""

import json

import numpy as np

from click.testing import CliRunner

from fovea.cli.line import line
from fovea.line.actuators import SimulatedActuator
from fovea.line.audit import audit
from fovea.line.clock import RealClock
from fovea.line.doubles import OraclePredictor
from fovea.line.events import EventLog, summarize
from fovea.line.runner import LineRunner
from fovea.line.sim import line_config_for, simulate
from fovea.line.sources import ConveyorSource
from fovea.synth.conveyor import Conveyor, ConveyorConfig


def test_threaded_runner_real_time_keeps_the_invariants():
    conv = Conveyor(ConveyorConfig(n_objects=4, appearance="simple", seed=5, belt_speed_mm_s=500.0, fps=20.0,
                                   gap_mm=(120.0, 200.0), lead_in_mm=200.0, p_box=0.0))
    cfg = line_config_for(conv.config)
    clock = RealClock()
    log = EventLog()
    src = ConveyorSource(conv, clock=clock, driver_buffer=1, x_end_mm=900.0)
    act = SimulatedActuator(clock=clock, emit=log.emit)
    runner = LineRunner(src, OraclePredictor(clock=clock, latency_s=0.005), act, cfg, clock=clock, log=log)
    runner.run_threaded(max_time_s=30.0)
    s = summarize(log.events)
    rep = audit(conv, src.t0, act.emulator.swings, cfg, runner.finished)
    assert s["records_with_multiple_outcomes"] == 0 and s["decisions_after_deadline"] == 0
    assert rep.items_without_record == 0 and rep.records == s["records"] == 4
    assert rep.wrong_in_lane == {} and rep.actuated_twice == 0 and rep.host_vs_physical_mismatch == 0
    assert s["frames_processed"] > 0 and s["latency"]["infer"]["p50_ms"] >= 5.0


def test_measured_belt_speed_rescues_a_miscalibrated_line():
    """The belt runs 30 % faster than configured: with measurement the gates still hit their items."""
    conv = Conveyor(ConveyorConfig(n_objects=30, appearance="simple", seed=8, belt_speed_mm_s=520.0))
    wrong = dict(mm_per_px=conv.config.mm_per_px, fps=conv.config.fps, belt_speed_mm_s=400.0)
    from fovea.line.config import LineConfig

    blind = simulate(conv, config=LineConfig(**wrong))
    seeing = simulate(conv, config=LineConfig(**wrong, measure_speed=True))
    assert abs(seeing.runner.tracker.speed_mm_s - 520.0) < 5.0
    a = seeing.audit
    assert a.partial_hits == 0 and a.host_vs_physical_mismatch == 0 and a.wrong_in_lane == {}
    assert a.accuracy > 0.9
    # without measurement the gates are timed for 400 mm/s; the measured speed only checks that, so the
    # miscalibrated line fails safe (every item to the default route, `speed_uncertain`) and sorts nothing
    b = blind.audit
    assert b.partial_hits == 0 and b.actuated_twice == 0 and b.wrong_in_lane == {} and b.accuracy < a.accuracy
    reasons = {e["reason"] for e in blind.log.events if e["type"] == "decision"}
    assert "speed_uncertain" in reasons and "evidence" not in reasons


def test_cli_run_and_replay(tmp_path):
    ev = tmp_path / "ev.jsonl"
    res = CliRunner().invoke(line, ["run", "--n-objects", "6", "--events", str(ev), "--video",
                                    str(tmp_path / "a.mp4")])
    assert res.exit_code == 0, res.output
    assert "physical audit" in res.output and "host outcome vs physics mismatches 0" in res.output
    assert (tmp_path / "a.mp4").stat().st_size > 0
    res = CliRunner().invoke(line, ["replay", str(ev), "--json"])
    assert res.exit_code == 0, res.output
    s = json.loads(res.output)
    assert s["records"] == 6 and s["records_with_multiple_outcomes"] == 0
    res = CliRunner().invoke(line, ["replay", str(tmp_path / "missing.jsonl")])
    assert res.exit_code != 0 and "does not exist" in str(res.exception)
    res = CliRunner().invoke(line, ["run", "--source", "0", "--clock", "sim"])
    assert res.exit_code != 0


def colour_backend(images):
    """(N, H, W, 3) uint8 crops -> (N, 3) probs over (good, damaged, box) from pixel colours only."""
    x = images.astype(np.float32)
    r, g, b = x[..., 0], x[..., 1], x[..., 2]
    fg = (r > 80) | (g > 80)
    n = np.maximum(fg.reshape(len(x), -1).sum(1), 1)
    tan = ((g > 120) & (r > 150)).reshape(len(x), -1).sum(1) / n
    brown = ((r > 70) & (r < 130) & (g > 40) & (g < 90)).reshape(len(x), -1).sum(1) / n
    logits = np.stack([np.full(len(x), 3.0), 80 * brown, 10 * tan], 1)
    e = np.exp(logits - logits.max(1, keepdims=True))
    return (e / e.sum(1, keepdims=True)).astype(np.float32)


def test_a_pixel_based_classifier_predictor_drives_the_line():
    """The line with fovea.classify's ClassifierPredictor (colour backend, no ground truth used)."""
    from fovea.classify.predictor import ClassifierPredictor

    conv = Conveyor(ConveyorConfig(n_objects=30, appearance="simple", seed=4))
    pred = ClassifierPredictor.from_function(colour_backend, ("good", "damaged", "box"))
    r = simulate(conv, predictor=pred)
    a = r.audit
    assert a.wrong_in_lane == {} and a.host_vs_physical_mismatch == 0 and a.items_without_record == 0
    assert a.accuracy > 0.9, a.lines()
