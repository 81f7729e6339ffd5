"""Belt speed profiles (steps, ramps) and edge-cut items of the synthetic conveyor.

References are independent of the code under test: numerical quadrature of the speed, the closed
form of a piecewise-constant/linear speed, and item positions measured in the rendered pixels.
"""

import numpy as np
import pytest
from scipy.integrate import quad

from fovea.errors import ConfigError
from fovea.synth.conveyor import Conveyor, ConveyorConfig


def simple(**kw):
    kw.setdefault("appearance", "simple")
    kw.setdefault("noise_sigma", 0.0)
    return Conveyor(ConveyorConfig(**kw))


def test_travel_is_the_integral_of_a_profile_with_steps_ramps_and_wobble():
    conv = simple(n_objects=3, speed_profile=((4.0, 250.0, 0.0), (9.0, 550.0, 1.0), (12.5, 300.0, 0.4)),
                  speed_wobble=0.05, wobble_period_s=3.0)
    for t in (-0.7, 0.0, 2.0, 4.0, 6.3, 9.5, 10.0, 12.7, 20.0):
        ref, _ = quad(conv.speed, 0, t, points=[4.0, 9.0, 10.0, 12.5, 12.9], limit=200)
        assert conv.belt_travel(t) == pytest.approx(ref, abs=1e-6)
        assert conv.time_at_travel(conv.belt_travel(t)) == pytest.approx(t, abs=1e-7)
    # speeds where the profile says, wobble aside
    flat = simple(n_objects=3, speed_profile=((4.0, 250.0, 0.0), (9.0, 550.0, 1.0)))
    assert [flat.speed(t) for t in (3.9, 4.1, 8.9, 9.5, 10.2)] == pytest.approx([400, 250, 250, 400, 550])


def test_step_closed_form_and_items_move_physically_right_in_the_pixels():
    # 400 mm/s until t = 5, then 200 mm/s: B(t) = 400 t for t <= 5, 2000 + 200 (t - 5) after
    conv = simple(n_objects=12, gap_mm=(300.0, 300.0), p_box=0.0, speed_profile=((5.0, 200.0, 0.0),))
    assert conv.belt_travel(7.5) == pytest.approx(2000 + 200 * 2.5)
    mmpp = conv.config.mm_per_px
    seen = 0
    for t in np.arange(4.0, 8.0, 0.1):
        img, truths = conv.render(float(t))
        red = (img[..., 0] > 120) & (img[..., 1] < 80)
        for tr in truths:
            x0, y0, x1, y1 = (int(v) for v in tr.xyxy)
            if x0 == 0 or x1 == img.shape[1]:
                continue                             # cut by the image edge: centroid is biased
            ys, xs = np.nonzero(red[y0:y1, x0:x1])
            x_px = (xs.mean() + x0 + 0.5) * mmpp
            item = conv.items[tr.uid]
            b = 400 * t if t <= 5 else 2000 + 200 * (t - 5)
            assert x_px == pytest.approx(b - item.s_mm, abs=1.5 * mmpp)
            seen += 1
    assert seen > 20


def test_edge_cut_items_overhang_the_image_and_leave_other_draws_alone():
    base = simple(n_objects=200, seed=5)
    cut = simple(n_objects=200, seed=5, p_edge_cut=0.3)
    assert [(i.class_name, i.s_mm) for i in base.items] == [(i.class_name, i.s_mm) for i in cut.items]
    H = cut.config.height_px
    flagged = [i for i in cut.items if i.edge_cut]
    assert 30 <= len(flagged) <= 90
    for it in flagged[:15]:
        t = cut.crossing_time(it.uid, cut.config.view_mm / 2)
        img, truths = cut.render(t)
        tr = next(x for x in truths if x.uid == it.uid)
        x0, y0, x1, y1 = tr.xyxy
        assert y0 == 0 or y1 == H                     # touches the top or bottom edge
        assert (y1 - y0) * cut.config.mm_per_px < 2 * it.half_wid_mm - 2    # only part of it is seen


@pytest.mark.parametrize("profile", [((1.0, -5.0, 0.0),), ((3.0, 200.0, 2.0), (4.0, 300.0, 0.0)), ((1.0, 2.0),)])
def test_bad_speed_profiles_are_refused(profile):
    with pytest.raises(ConfigError, match="speed_profile"):
        ConveyorConfig(speed_profile=profile)


def test_wobble_that_would_stop_the_belt_is_refused():
    with pytest.raises(ConfigError, match="slowest"):
        ConveyorConfig(belt_speed_mm_s=400, speed_wobble=0.3, speed_profile=((1.0, 100.0, 0.0),))
