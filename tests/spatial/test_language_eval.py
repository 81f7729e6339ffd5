"""Unit parser, rounding, metrics (hand-computed), and the CLI end to end."""

import json

import numpy as np
import pytest

from fovea.spatial.evaluate import evaluate, mra
from fovea.spatial.language import (
    format_area, format_length, parse_area, parse_clock, parse_count, parse_length, parse_yes_no,
)


@pytest.mark.parametrize("text, metres", [
    ("3 feet 4 inches", 40 * 0.0254), ("two and a half meters", 2.5), ("About 35 cm.", 0.35), ("1,5 m", 1.5),
    ("roughly 12 inches", 0.3048), ("It is 850 millimetres away", 0.85), ("one point five metres", 1.5),
    ("a dozen centimeters", 0.12), ("6'", 6 * 0.3048), ("twenty five cm", 0.25),
])
def test_parse_length(text, metres):
    assert parse_length(text) == pytest.approx(metres)


def test_parse_refuses_to_guess_a_unit_and_reads_other_answers():
    assert parse_length("about 3") is None and parse_length("no idea") is None
    assert parse_area("48 square centimeters") == pytest.approx(48e-4)
    assert parse_area("0.3 m^2") == pytest.approx(0.3) and parse_area("2 sq ft") == pytest.approx(2 * 0.3048**2)
    assert parse_clock("It's at three o'clock.") == 3 and parse_clock("At 11 o'clock") == 11
    assert parse_count("I count seven.") == 7 and parse_count("There are 12.") == 12
    assert parse_yes_no("Incorrect, it is not.") == "no" and parse_yes_no("That's right: x") == "yes"
    assert parse_yes_no("They are at about the same height.") == "same"


def test_rounding_round_trips_within_three_percent():
    for v in np.geomspace(0.004, 40, 60):
        for imperial in (False, True):
            got = parse_length(format_length(v, imperial))
            assert got == pytest.approx(v, rel=0.03, abs=0.0013), (v, format_length(v, imperial))
    for a in np.geomspace(1e-4, 5, 30):
        for imperial in (False, True):
            assert parse_area(format_area(a, imperial)) == pytest.approx(a, rel=0.03)


def test_metrics_by_hand():
    # |1.1 - 1| / 1 = 0.1 < 1 - theta for theta in 0.50 .. 0.85 (8 of 10 thresholds)
    assert mra(1.1, 1.0) == pytest.approx(0.8)
    assert mra(1.0, 1.0) == 1.0 and mra(3.0, 1.0) == 0.0
    truth = [{"qid": "q1", "type": "width", "kind": "quantity", "unit": "m", "truth": 1.0},
             {"qid": "q2", "type": "width", "kind": "quantity", "unit": "m", "truth": 1.0},
             {"qid": "q3", "type": "direction_clock", "kind": "clock", "unit": "hour", "truth": 12},
             {"qid": "q4", "type": "direction_clock", "kind": "clock", "unit": "hour", "truth": 12},
             {"qid": "q5", "type": "left_predicate", "kind": "predicate", "truth": "yes", "truth_sign": "yes"},
             {"qid": "q6", "type": "left_predicate", "kind": "predicate", "truth": "same", "truth_sign": "yes"}]
    pred = [{"qid": "q1", "answer": "1.2 meters"}, {"qid": "q2", "answer": "about 190 cm"},
            {"qid": "q3", "answer": "1 o'clock"}, {"qid": "q4", "answer": "at 2 o'clock"},
            {"qid": "q5", "answer": "No."}, {"qid": "q6", "answer": "They are about the same."}]
    r = evaluate(pred, truth)
    w = r["types"]["width"]
    assert w["within25"] == 0.5 and w["ratio2"] == 1.0 and w["mean_rel_err"] == pytest.approx((0.2 + 0.9) / 2)
    assert r["types"]["direction_clock"]["within_1h"] == 0.5
    lp = r["types"]["left_predicate"]
    assert lp["accuracy"] == 0.5 and lp["wrong_sign"] == 1 and lp["same"] == 1


def test_cli_synth_from_folder_and_eval(tmp_path):
    from click.testing import CliRunner

    from fovea.cli.main import cli
    from fovea.synth.scenes3d import random_scene

    sc = random_scene(3, "tabletop", size_wh=(320, 240), focal_px=262.5)
    frames = tmp_path / "frames"
    frames.mkdir()
    names = np.array([sc.names[k] for k in sorted(sc.names)])
    np.savez(frames / "f0.npz", depth=np.where(np.isfinite(sc.depth), sc.depth, np.nan).astype(np.float32),
             labels=sc.labels, K=sc.K, names=names)
    run = CliRunner().invoke(cli, ["spatial", "synth", "--from", str(frames), "--out", str(tmp_path / "o")])
    assert run.exit_code == 0, run.output
    recs = [json.loads(x) for x in (tmp_path / "o" / "questions.jsonl").read_text().splitlines()]
    assert len({r["type"] for r in recs}) >= 20 and all("truth" not in r for r in recs)
    llava = json.loads((tmp_path / "o" / "llava.json").read_text())
    assert llava[0]["conversations"][0]["value"].startswith("<image>\n")
    assert (tmp_path / "o" / "pictures" / "f0.png").is_file()
    # a generated scene carries truth; its own answers, read back as text, score as answered
    run = CliRunner().invoke(cli, ["spatial", "synth", "--scenes", "1", "--kind", "room", "--out", str(tmp_path / "g")])
    assert run.exit_code == 0, run.output
    truth = tmp_path / "g" / "questions.jsonl"
    pred = tmp_path / "pred.jsonl"
    pred.write_text("\n".join(json.dumps({"qid": json.loads(x)["qid"], "answer": json.loads(x)["answer"]})
                              for x in truth.read_text().splitlines()))
    run = CliRunner().invoke(cli, ["spatial", "eval", str(pred), str(truth), "--json", str(tmp_path / "s.json")])
    assert run.exit_code == 0, run.output
    s = json.loads((tmp_path / "s.json").read_text())
    assert s["counts"]["unparsed"] == 0 and s["overall"]["wrong_sign"] == 0
