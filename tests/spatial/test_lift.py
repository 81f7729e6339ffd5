"""Lifting against closed forms and hand-placed scenes; VQASynth's three bugs are absent; bad input."""

import numpy as np
import pytest

from fovea.errors import DataError, MaskMismatchError
from fovea.spatial.definitions import decide, relation
from fovea.spatial.frame import SupportSurfaceError
from fovea.spatial.lift import lift_scene
from fovea.synth.scenes3d import camera_rotation

from _spatial_scenes import box, make_scene


def _lift(sc, depth=None, **kw):
    d = sc.depth if depth is None else depth
    return lift_scene(np.where(np.isfinite(d), d, np.nan).astype(np.float32), sc.K, sc.labels, sc.names, **kw)


def test_render_depth_matches_closed_form():
    # the optical axis of a camera h above the floor pitched down by theta meets the floor at z = h / sin(theta)
    sc = make_scene([], pitch_deg=30.0, height_m=1.2, size=(64, 48), focal_px=52.5)
    z = sc.depth[23:25, 31:33].mean()
    assert z == pytest.approx(1.2 / np.sin(np.deg2rad(30.0)), rel=2e-2)
    # camera_rotation is a rotation (up to the y flip of the left-handed world): orthonormal columns
    R = camera_rotation(0.4, 0.1)
    assert np.allclose(R.T @ R, np.eye(3), atol=1e-12)


def test_behind_means_farther_from_the_camera(two_box_scene):
    """VQASynth bug 1 (+z toward the camera after canonicalisation) is absent: the pillar, 1.2 m farther
    away than the crate, is behind it and its canonical z is larger."""
    res = _lift(two_box_scene)
    g = {o.name: o for o in res.objects}
    crate, pillar = g["crate"], g["pillar"]
    assert pillar.centre[2] - crate.centre[2] == pytest.approx(1.2, abs=0.05)
    cam = res.frame.camera_canonical
    assert np.linalg.norm(pillar.centre - cam) > np.linalg.norm(crate.centre - cam)
    assert decide(*relation("behind", pillar, crate)) == "yes"
    assert decide(*relation("front", crate, pillar)) == "yes"
    assert decide(*relation("behind", crate, pillar)) == "no"


def test_height_is_the_vertical_extent_not_the_width(two_box_scene):
    """VQASynth bug 2 (height = x extent) is absent: the flat box is 0.6 wide, 0.2 tall, 0.3 deep."""
    g = {o.name: o for o in _lift(two_box_scene).objects}["flat box"]
    assert g.size[1] == pytest.approx(0.2, rel=0.03)
    assert g.size[0] == pytest.approx(0.6, rel=0.05)
    assert g.size[2] == pytest.approx(0.3, rel=0.12)  # half-resolution render: 2.2 cm per pixel along z


def test_metric_scale_is_taken_from_the_depth_not_a_constant(two_box_scene):
    """VQASynth bug 3 (non-metric depth x 10) is absent: lengths come out in the depth's metres, scale
    linearly with it, and depth marked non-metric or in millimetres is refused."""
    res = _lift(two_box_scene)
    assert res.frame.camera_height_m == pytest.approx(1.5, abs=0.005)
    crate = {o.name: o for o in res.objects}["crate"]
    assert crate.size[1] == pytest.approx(0.3, rel=0.03)
    res2 = _lift(two_box_scene, depth=two_box_scene.depth * 2)
    assert res2.frame.camera_height_m == pytest.approx(3.0, abs=0.01)
    assert {o.name: o for o in res2.objects}["crate"].size[1] == pytest.approx(0.6, rel=0.03)
    with pytest.raises(DataError, match="non-metric"):
        _lift(two_box_scene, depth_is_metric=False)
    with pytest.raises(DataError, match="not in metres"):
        _lift(two_box_scene, depth=two_box_scene.depth * 1000)
    with pytest.raises(DataError, match="dtype"):
        lift_scene((np.nan_to_num(two_box_scene.depth, posinf=0) * 1000).astype(np.uint16), two_box_scene.K,
                   two_box_scene.labels, two_box_scene.names)


def test_yawed_box_and_roll_recover_the_true_upright_box():
    sc = make_scene([box(1, "box", (0.2, 2.4), (0.5, 0.4, 0.3), yaw_deg=35.0)], pitch_deg=40, roll_deg=6)
    g = _lift(sc).objects[0]
    from fovea.spatial.truth import true_objects

    t = true_objects(sc)[1]
    # closed form of the x-z bounding box of a w x d rectangle turned by the yaw relative to canonical x
    yaw_rel = np.deg2rad(35.0) - np.arctan2(-sc.canonical_axes()[0, 2], sc.canonical_axes()[0, 0])
    w_closed = 0.5 * abs(np.cos(yaw_rel)) + 0.3 * abs(np.sin(yaw_rel))
    assert t.size[0] == pytest.approx(w_closed, rel=1e-6)
    assert np.allclose(g.size, t.size, rtol=0.08, atol=0.01)
    assert g.footprint_area == pytest.approx(0.15, rel=0.1)
    assert g.reliable and g.resting


def test_bad_input_is_reported(two_box_scene):
    sc = two_box_scene
    with pytest.raises(MaskMismatchError, match="masks are"):
        lift_scene(sc.depth.astype(np.float32), sc.K, sc.labels[:-2], sc.names)
    # no support surface: every pixel belongs to an object
    with pytest.raises(SupportSurfaceError):
        lift_scene(sc.depth.astype(np.float32), sc.K, np.ones_like(sc.labels), {1: "thing"})
    # a vertical wall only (camera looking straight at it): no horizontal plane
    wall = make_scene([], pitch_deg=0.0, wall_z=3.0, size=(64, 48), focal_px=52.5)
    top = np.zeros_like(wall.labels)
    with pytest.raises(SupportSurfaceError, match="no horizontal support surface"):
        lift_scene(np.where(np.arange(48)[:, None] < 24, wall.depth, np.nan).astype(np.float32), wall.K, top, {})
    # an empty mask is skipped and counted, not dropped silently
    res = lift_scene(sc.depth.astype(np.float32), sc.K, sc.labels, {**sc.names, 7: "ghost"})
    assert res.skipped["empty mask"] == 1 and len(res.objects) == 3
