"""SS2D core == a direction-by-direction reference built from index permutations and a slow loop."""

import torch
import torch.nn.functional as F

import _models_reference as ref
from fovea.models.sparx import SparXConfig, SparXSS2D
from fovea.models.vmamba import SS2D


def _orders(h, w):
    """Index of pixel (row-major id) visited at each step, for the four scan directions."""
    grid = torch.arange(h * w).reshape(h, w)
    row, col = grid.flatten(), grid.t().flatten()
    return [row, col, row.flip(0), col.flip(0)]


def _reference_ssm(op, x):
    b, d, h, w = x.shape
    flat = x.flatten(2)
    y = torch.zeros(b, d, h * w)
    r, n = op.dt_rank, op.d_state
    for k, order in enumerate(_orders(h, w)):
        seq = flat[:, :, order]  # (B, D, L)
        dbl = torch.einsum("cd,bdl->bcl", op.x_proj_weight[k], seq)
        dt = torch.einsum("dr,brl->bdl", op.dt_projs_weight[k], dbl[:, :r])
        sl = slice(k * d, (k + 1) * d)
        yk = ref.selective_scan_loop(
            seq, dt, -torch.exp(op.A_logs[sl]), dbl[:, None, r:r + n], dbl[:, None, r + n:],
            op.Ds[sl], op.dt_projs_bias[k],
        )
        y[:, :, order] += yk  # put each step back on its pixel
    return y.reshape(b, d, h, w)


def test_vmamba_ss2d_matches_reference():
    torch.manual_seed(0)
    op = SS2D(8, d_state=4, ssm_ratio=1.5, dt_rank=3)
    x = torch.randn(2, 12, 5, 3)
    with torch.no_grad():
        got, want = op.forward_ssm(x), _reference_ssm(op, x)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


def test_v0_gated_block_matches_manual_composition():
    torch.manual_seed(1)
    op = SS2D(8, d_state=3, ssm_ratio=2.0, forward_type="v0", conv_bias=True).eval()
    x = torch.randn(1, 8, 4, 4)
    with torch.no_grad():
        h = F.conv2d(x, op.in_proj.weight[:, :, None, None])
        u, z = h.chunk(2, dim=1)
        u = F.silu(op.conv2d(u))
        y = _reference_ssm(op, u)
        y = F.layer_norm(y.permute(0, 2, 3, 1), (16,), op.out_norm.weight, op.out_norm.bias).permute(0, 3, 1, 2)
        want = F.conv2d(y * F.silu(z), op.out_proj.weight[:, :, None, None])
        torch.testing.assert_close(op(x), want, rtol=1e-4, atol=1e-5)


def test_sparx_ganglion_mixer_runs_and_uses_the_shortcut():
    torch.manual_seed(2)
    cfg = SparXConfig((1, 1, 1, 1), (16, 32, 48, 64), "v1", (1,) * 4, (0,) * 4, (3,) * 4)
    op = SparXSS2D(16, cfg, stage=1, ganglion_chs=48).eval()  # sr 4, d_inner 32 -> 30 fused + 2 padded
    assert op.channel_padding == 2
    x, s = torch.randn(1, 16, 8, 8), torch.randn(1, 48, 8, 8)
    with torch.no_grad():
        y1, y2 = op(x, s), op(x, s + 1.0)
    assert y1.shape == x.shape and torch.isfinite(y1).all()
    assert not torch.allclose(y1, y2)
