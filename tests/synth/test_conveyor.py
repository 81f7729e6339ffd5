"""The synthetic conveyor: determinism, belt kinematics against numerical integration, truth
boxes against the rendered pixels, item spacing, and the `fovea synth conveyor` command."""

import json

import cv2
import numpy as np
import pytest
from click.testing import CliRunner
from scipy.integrate import quad

from fovea.errors import ConfigError
from fovea.cli.synth import conveyor_cmd as cli
from fovea.synth.conveyor import Conveyor, ConveyorConfig


def test_deterministic_by_seed():
    a = Conveyor(ConveyorConfig(n_objects=5, seed=4, appearance="simple")).render(1.7)[0]
    b = Conveyor(ConveyorConfig(n_objects=5, seed=4, appearance="simple")).render(1.7)[0]
    c = Conveyor(ConveyorConfig(n_objects=5, seed=5, appearance="simple")).render(1.7)[0]
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_belt_travel_is_the_integral_of_speed_and_crossing_time_inverts_it():
    conv = Conveyor(ConveyorConfig(n_objects=3, speed_wobble=0.2, wobble_period_s=3.0, appearance="simple"))
    for t in (0.0, 0.4, 2.9, 7.3):
        ref, _ = quad(conv.speed, 0, t)
        assert conv.belt_travel(t) == pytest.approx(ref, abs=1e-6)
    for uid in range(3):
        for x in (-50.0, 123.0, 700.0):
            assert conv.x_mm(uid, conv.crossing_time(uid, x)) == pytest.approx(x, abs=1e-5)


def test_truth_boxes_cover_the_drawn_items():
    cfg = ConveyorConfig(n_objects=20, appearance="realistic", noise_sigma=0.0, seed=2)
    conv = Conveyor(cfg)
    bg = conv.render(0.0)[0]              # lead-in: the belt is still empty
    assert conv.visible(0.0) == []
    for t in (1.5, 2.3, 3.1):
        img, truth = conv.render(t)
        assert truth
        changed = np.abs(img.astype(int) - bg.astype(int)).max(axis=2) > 0
        inside = np.zeros_like(changed)
        for it in truth:
            x0, y0, x1, y1 = it.xyxy
            inside[y0:y1, x0:x1] = True
            assert changed[y0:y1, x0:x1].mean() > 0.5
            if x0 > 0 and x1 < cfg.width_px:   # fully visible: box centre = belt position
                assert (x0 + x1) / 2 * cfg.mm_per_px == pytest.approx(it.x_mm, abs=cfg.mm_per_px)
        assert not changed[~inside].any()


def test_gaps_and_touching_pairs():
    cfg = ConveyorConfig(n_objects=300, p_touching=0.1, gap_mm=(90, 240), appearance="simple", seed=9)
    conv = Conveyor(cfg)
    items = conv.items
    touching = 0
    for prev, it in zip(items, items[1:]):
        gap = (it.s_mm - it.half_len_mm) - (prev.s_mm + prev.half_len_mm)
        if it.touching_prev:
            touching += 1
            assert gap == pytest.approx(-1.5) and it.y_mm == prev.y_mm
        else:
            assert 90 <= gap <= 240
    assert 15 <= touching <= 45
    classes = {it.class_name for it in items}
    assert classes == {"good", "damaged", "box"}


def test_bad_config():
    with pytest.raises(ConfigError):
        ConveyorConfig(appearance="photoreal")
    with pytest.raises(ConfigError):
        ConveyorConfig(gap_mm=(50, 10))


def test_cli_writes_video_and_truth(tmp_path):
    res = CliRunner().invoke(cli, [str(tmp_path), "--n-objects", "2", "--width", "160", "--height", "96",
                                   "--fps", "10", "--appearance", "simple", "--belt-speed", "800"])
    assert res.exit_code == 0, res.output
    lines = (tmp_path / "truth.jsonl").read_text().splitlines()
    head = json.loads(lines[0])
    assert len(head["items"]) == 2
    cap = cv2.VideoCapture(str(tmp_path / "conveyor.mp4"))
    n = 0
    while cap.read()[0]:
        n += 1
    assert n == len(lines) - 1
    seen = {it["uid"] for ln in lines[1:] for it in json.loads(ln)["items"]}
    assert seen == {0, 1}
