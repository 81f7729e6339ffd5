"""cross_scan / cross_merge: official orders on a 2x3 map, adjointness, gradients, modes."""

import pytest
import torch

from fovea.errors import ConfigError
from fovea.nn.cross_scan import cross_merge, cross_scan


def test_cross2d_orders_match_official_2x3_example():
    x = torch.arange(6.0).view(1, 1, 2, 3)  # pixel (h, w) holds h*3 + w
    xs = cross_scan(x)
    assert xs.shape == (1, 4, 1, 6)
    assert xs[0, :, 0].tolist() == [
        [0, 1, 2, 3, 4, 5],
        [0, 3, 1, 4, 2, 5],
        [5, 4, 3, 2, 1, 0],
        [5, 2, 4, 1, 3, 0],
    ]


def test_cross2d_matches_index_loop():
    torch.manual_seed(0)
    B, C, H, W = 2, 3, 4, 5
    x = torch.randn(B, C, H, W)
    xs = cross_scan(x)
    L = H * W
    for h in range(H):
        for w in range(W):
            v = x[:, :, h, w]
            assert torch.equal(xs[:, 0, :, h * W + w], v)
            assert torch.equal(xs[:, 1, :, w * H + h], v)
            assert torch.equal(xs[:, 2, :, L - 1 - (h * W + w)], v)
            assert torch.equal(xs[:, 3, :, L - 1 - (w * H + h)], v)


@pytest.mark.parametrize("scans", ["cross2d", "unidi", "bidi", 0, 1, 2])
@pytest.mark.parametrize("hw", [(4, 5), (7, 7), (1, 6)])
def test_merge_is_adjoint_of_scan(scans, hw):
    torch.manual_seed(1)
    H, W = hw
    x = torch.randn(2, 3, H, W, dtype=torch.float64)
    y = torch.randn(2, 4, 3, H * W, dtype=torch.float64)
    lhs = (cross_scan(x, scans) * y).sum()
    rhs = (x.flatten(2) * cross_merge(y, H, W, scans)).sum()
    torch.testing.assert_close(lhs, rhs, rtol=1e-12, atol=1e-12)
    # merge(scan(x)) re-aligns all four copies: 4x
    torch.testing.assert_close(cross_merge(cross_scan(x, scans), H, W, scans), 4 * x.flatten(2))


def test_gradients_are_the_other_operation():
    torch.manual_seed(2)
    H, W = 3, 5
    x = torch.randn(1, 2, H, W, requires_grad=True)
    y = torch.randn(1, 4, 2, H * W, requires_grad=True)
    (g_x,) = torch.autograd.grad(cross_scan(x), x, y)
    torch.testing.assert_close(g_x, cross_merge(y, H, W).view_as(x))
    g = torch.randn(1, 2, H * W)
    (g_y,) = torch.autograd.grad(cross_merge(y, H, W), y, g)
    torch.testing.assert_close(g_y, cross_scan(g.view(1, 2, H, W)))


def test_merge_accepts_5d_and_rejects_bad_shapes():
    y = torch.randn(1, 4, 2, 3, 4)
    torch.testing.assert_close(cross_merge(y, 3, 4), cross_merge(y.flatten(3), 3, 4))
    with pytest.raises(ConfigError, match="cross_merge"):
        cross_merge(torch.randn(1, 4, 2, 11), 3, 4)
    with pytest.raises(ConfigError, match="cross_scan"):
        cross_scan(torch.randn(2, 3, 4))
    with pytest.raises(ConfigError, match="scans"):
        cross_scan(torch.randn(1, 1, 2, 2), scans="diag")
