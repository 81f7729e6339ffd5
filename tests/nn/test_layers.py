"""The channels-first layers against hand-written formulas (official VMamba / SparX definitions)."""

import torch
import torch.nn.functional as F

from fovea.nn.layers import ConvFFN, LayerNorm2d, LayerScale2d, Linear2d, PatchMerging2d


def test_layer_norm_2d_is_a_per_pixel_channel_norm_with_eps_1e5():
    torch.manual_seed(0)
    norm = LayerNorm2d(6)
    torch.nn.init.normal_(norm.weight)
    torch.nn.init.normal_(norm.bias)
    x = torch.randn(2, 6, 3, 5) * 1e-3  # small values: eps 1e-5 vs 1e-6 changes the result
    mean = x.mean(1, keepdim=True)
    var = x.var(1, unbiased=False, keepdim=True)
    want = (x - mean) / torch.sqrt(var + 1e-5) * norm.weight[:, None, None] + norm.bias[:, None, None]
    torch.testing.assert_close(norm(x), want, rtol=1e-5, atol=1e-5)


def test_patch_merging_order_norm_and_odd_padding():
    """Sub-grids [0::2,0::2], [1::2,0::2], [0::2,1::2], [1::2,1::2], zero-padded, LN, Linear (no bias)."""
    torch.manual_seed(1)
    pm = PatchMerging2d(3, 5)
    torch.nn.init.normal_(pm.norm.weight)
    x = torch.randn(2, 3, 5, 7)
    xp = F.pad(x, (0, 1, 0, 1))
    cat = torch.cat([xp[..., 0::2, 0::2], xp[..., 1::2, 0::2], xp[..., 0::2, 1::2], xp[..., 1::2, 1::2]], 1)
    normed = F.layer_norm(cat.permute(0, 2, 3, 1), (12,), pm.norm.weight, pm.norm.bias, 1e-5)
    want = torch.einsum("bhwc,oc->bohw", normed, pm.reduction.weight)
    assert pm.reduction.bias is None
    torch.testing.assert_close(pm(x), want, rtol=1e-5, atol=1e-5)


def test_linear2d_accepts_the_1x1_conv_layout():
    torch.manual_seed(2)
    conv = torch.nn.Conv2d(4, 3, 1)
    lin = Linear2d(4, 3)
    lin.load_state_dict(conv.state_dict())
    x = torch.randn(1, 4, 2, 2)
    torch.testing.assert_close(lin(x), conv(x))


def test_conv_ffn_and_layer_scale_formulas():
    torch.manual_seed(3)
    ffn, ls = ConvFFN(4, 8), LayerScale2d(4, 0.5)
    torch.nn.init.normal_(ls.bias)
    x = torch.randn(1, 4, 5, 5)
    h = ffn.fc1(x)
    torch.testing.assert_close(ffn(x), ffn.fc2(F.gelu(h + ffn.dwconv(h))))
    torch.testing.assert_close(ls(x), 0.5 * x + ls.bias[None, :, None, None])
