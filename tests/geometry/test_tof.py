"""Time of flight: bucket decoding, wrap-around, dual-frequency unwrapping, filters; a simulated floor."""

import numpy as np
import pytest

from fovea.errors import ConfigError
from fovea.geometry.tof import (
    LIGHT_SPEED_M_S, amplitude_filter, flying_pixel_filter, four_bucket, phase_of_distance, phase_to_distance,
    radial_to_z, unambiguous_range_m, unwrap_dual,
)


def test_four_buckets_invert_and_the_phase_wraps():
    d = np.array([[0.5, 3.0, 7.0, 9.0]])
    f = 20e6
    assert unambiguous_range_m(f) == pytest.approx(LIGHT_SPEED_M_S / 4e7)
    phi = phase_of_distance(d, f)
    a, B = 0.7, 1.3
    buckets = np.stack([B + a * np.cos(phi + k * np.pi / 2) for k in range(4)])
    ph, amp = four_bucket(buckets)
    assert np.allclose(amp, a)
    got = phase_to_distance(ph, f)
    r = unambiguous_range_m(f)
    assert np.allclose(got, np.mod(d, r))           # 9 m reads as 9 - 7.49 m at 20 MHz
    assert got[0, 3] == pytest.approx(9.0 - r)
    with pytest.raises(ConfigError):
        unambiguous_range_m(0)


def test_dual_frequency_unwrapping_recovers_the_distance():
    d = np.linspace(0.3, 40.0, 200)[None]
    f1, f2 = 20e6, 17e6  # together unambiguous to c / (2 * 1 MHz) = 150 m
    w1 = phase_to_distance(phase_of_distance(d, f1), f1)
    w2 = phase_to_distance(phase_of_distance(d, f2), f2)
    assert np.allclose(unwrap_dual(w1, w2, f1, f2, 45.0), d, atol=1e-6)
    with pytest.raises(ConfigError, match="joint unambiguous range"):
        unwrap_dual(w1, w2, 80e6, 65e6, 30.0)  # gcd 5 MHz: every distance aliases 29.98 m further


def test_flying_pixel_and_amplitude_filters():
    z = np.full((7, 9), 1.0)
    z[:, 5:] = 3.0
    z[:, 4] = 2.0                                     # a column of mixed pixels between the two surfaces
    out = flying_pixel_filter(z)
    assert np.isnan(out[:, 4]).all()
    assert np.isfinite(out[:, :4]).all() and np.isfinite(out[:, 5:]).all()  # both true edges kept
    amp = np.full_like(z, 0.5)
    amp[0, 0] = 0.001
    assert np.isnan(amplitude_filter(z, amp, 0.01)[0, 0]) and np.isfinite(amplitude_filter(z, amp, 0.01)[1, 1])
    K = np.array([[100.0, 0, 4], [0, 100, 3], [0, 0, 1]])
    zz = radial_to_z(np.full((7, 9), 2.0), K)
    assert zz[3, 4] == pytest.approx(2.0) and zz[0, 0] == pytest.approx(2.0 / np.sqrt(1 + 0.04**2 + 0.03**2))


def test_simulated_tof_of_a_floor_matches_the_render():
    from fovea.synth.depth_sensors import render_tof
    from fovea.synth.scenes3d import Scene, camera_rotation, render

    K = np.array([[52.5, 0, 32], [0, 52.5, 24], [0, 0, 1]])
    sc = render(Scene("room", K, camera_rotation(np.deg2rad(40), 0.0), np.array([0.0, 1.4, 0.0]), []), (64, 48),
                stereo=False, noise_sigma=0.0)
    b = render_tof(sc, (20e6,), supersample=1, noise_sigma=0.0)[20e6]
    phi, amp = four_bucket(b)
    z = radial_to_z(phase_to_distance(phi, 20e6), K)
    ok = np.isfinite(sc.depth) & (sc.depth < 7.0)
    assert np.allclose(z[ok], sc.depth[ok], rtol=1e-4)
