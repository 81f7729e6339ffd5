"""Structured light: Gray + phase decoding and plane triangulation against closed forms."""

import numpy as np
import pytest

from fovea.errors import ConfigError, DataError
from fovea.geometry.structured_light import (
    ProjectorCameraPair, column_patterns, decode_columns, gray_code, gray_decode, triangulate_columns,
)


def test_gray_code_round_trip_and_one_bit_steps():
    n = np.arange(4096)
    g = gray_code(n)
    assert np.array_equal(gray_decode(g), n)
    steps = g[1:] ^ g[:-1]
    assert np.all((steps & (steps - 1)) == 0) and np.all(steps > 0)  # neighbours differ in exactly one bit


def test_decode_recovers_columns_under_albedo_and_ambient():
    rng = np.random.default_rng(0)
    pats = column_patterns(800, 3, period_px=16, n_steps=4)
    albedo = rng.uniform(0.2, 1.0, (3, 800))
    ambient = rng.uniform(0.0, 0.3, (3, 800))
    cap = {k: albedo * (ambient + v) + rng.normal(0, 0.003, v.shape) for k, v in pats.items()}
    dec = decode_columns(cap["gray"], cap["gray_inv"], cap["phase"], 16)
    err = np.abs(dec.column_px - np.arange(800)[None])
    assert dec.valid.all() and err.max() < 0.25  # sub-pixel everywhere, no off-by-one-period at borders
    # no pattern contrast (a projector shadow) -> invalid, not a guess
    flat = {k: np.full_like(v, 0.3) for k, v in pats.items()}
    assert not decode_columns(flat["gray"], flat["gray_inv"], flat["phase"], 16).valid.any()
    with pytest.raises(DataError):
        decode_columns(cap["gray"][:, :2], cap["gray_inv"], cap["phase"], 16)
    with pytest.raises(ConfigError):
        column_patterns(800, 3, period_px=15)


def test_triangulation_of_a_plane_matches_the_closed_form():
    K = np.array([[500.0, 0, 160], [0, 500, 120], [0, 0, 1]])
    pair = ProjectorCameraPair.side_by_side(K, baseline_m=0.1, proj_size=(640, 480))
    h, w = 240, 320
    v, u = np.mgrid[0:h, 0:w].astype(float)
    # a tilted plane z = 1.5 + 0.2 x_n (x_n = (u - cx) / fx): the camera ray (x_n, y_n, 1) meets it at
    z_true = 1.5 / (1 - 0.2 * (u - 160) / 500)
    x = (u - 160) / 500 * z_true
    # the projector (0.1 m to the right, same orientation) sees the point at column fx_p (x - 0.1) / z + cx_p
    col = pair.K_proj[0, 0] * (x - 0.1) / z_true + pair.K_proj[0, 2]
    z = triangulate_columns(col, pair)
    assert np.allclose(z, z_true, rtol=1e-9)
