"""The sea generator's truth is consistent with its masks and its own definition."""

import numpy as np

from fovea.synth.sea import CLASS_NAMES, TRUE_THICKNESS_UM, DroneCamera, classes_and_thickness, render_survey


def test_thickness_inside_class_bands_and_deterministic():
    s = np.linspace(0, 1.5, 1000)
    cls, t = classes_and_thickness(s)
    assert set(np.unique(cls)) == {0, 1, 2, 3} and np.all(t[cls == 0] == 0)
    for c, (lo, hi) in TRUE_THICKNESS_UM.items():
        assert t[cls == c].min() >= lo - 1e-9 and t[cls == c].max() <= hi + 1e-9
    cam = DroneCamera.default(160, 120)
    a = render_survey(1, seed=3, camera=cam)[0]
    b = render_survey(1, seed=3, camera=cam)[0]
    assert np.array_equal(a.image, b.image) and np.array_equal(a.mask, b.mask)
    assert a.image.shape == (120, 160, 3) and a.mask.max() <= 3
    assert set(a.truth["area_m2"]) == set(CLASS_NAMES)
