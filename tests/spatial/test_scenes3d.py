"""The scene generator: determinism, closed-form stereo geometry, stacking truth, matcher agreement."""

import numpy as np
import pytest

from fovea.errors import ConfigError
from fovea.synth.scenes3d import random_scene


def test_scenes_are_deterministic_and_objects_visible():
    a = random_scene(5, "tabletop", size_wh=(160, 120), focal_px=131.25)
    b = random_scene(5, "tabletop", size_wh=(160, 120), focal_px=131.25)
    assert np.array_equal(a.rgb, b.rgb) and np.array_equal(a.depth, b.depth)
    assert len(a.objects) >= 3 and set(np.unique(a.labels)) - {0} <= {o.id for o in a.objects}
    with pytest.raises(ConfigError, match="unknown"):
        random_scene(0, "kitchen")


def test_right_camera_sees_each_point_at_u_minus_fB_over_Z():
    sc = random_scene(2, "room", size_wh=(160, 120), focal_px=131.25, render_now=True)
    f, B = sc.K[0, 0], sc.baseline_m
    v, u = 70, 40
    Z = float(sc.depth[v, u])
    ray = np.array([(u - sc.K[0, 2]) / f, (v - sc.K[1, 2]) / f, 1.0])
    p_world = sc.camera_centre + sc.cam_to_world @ (Z * ray)
    p_right = (p_world - (sc.camera_centre + B * sc.cam_to_world[:, 0])) @ sc.cam_to_world
    assert f * p_right[0] / p_right[2] + sc.K[0, 2] == pytest.approx(u - f * B / Z, abs=1e-9)
    assert p_right[2] == pytest.approx(Z, abs=1e-9)


def test_stacked_object_rests_on_its_base():
    for seed in range(40):
        sc = random_scene(seed, "room", render_now=False)
        top = [o for o in sc.objects if o.support_id]
        if top:
            base = {o.id: o for o in sc.objects}[top[0].support_id]
            assert top[0].bottom == pytest.approx(base.top)
            return
    pytest.fail("no stacked object in 40 room scenes")


def test_fovea_stereo_on_the_rendered_pair_matches_the_true_disparity():
    from fovea.geometry.stereo import SGMConfig, compute_disparity

    sc = random_scene(4, "room", size_wh=(320, 240), focal_px=262.5)
    disp, valid = compute_disparity(sc.rgb, sc.right_rgb, SGMConfig(num_disparities=48, fill_holes=False))
    true = sc.K[0, 0] * sc.baseline_m / sc.depth
    ok = valid & np.isfinite(true)
    assert ok.mean() > 0.5
    assert np.median(np.abs(disp[ok] - true[ok])) < 0.3
