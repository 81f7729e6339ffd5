"""Tiled online-softmax attention against naive fp32 attention (and SDPA), forward and backward."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from fovea.nn.attention_ref import naive_attention, tiled_attention


def _qkv(shape_q, m, dv, seed, requires_grad=True, spread=1.0):
    g = torch.Generator().manual_seed(seed)
    *lead, n, d = shape_q
    q = torch.randn(*lead, n, d, generator=g) * spread
    k = torch.randn(*lead, m, d, generator=g) * spread
    v = torch.randn(*lead, m, dv, generator=g)
    return [t.requires_grad_(requires_grad) for t in (q, k, v)]


@pytest.mark.parametrize("n,m,bq,bk", [(37, 53, 8, 16), (64, 64, 64, 64), (20, 70, 7, 1), (5, 9, 64, 64)])
def test_forward_and_backward_equal_naive(n, m, bq, bk):
    q, k, v = _qkv((2, 3, n, 16), m, 12, seed=n + m)
    q2, k2, v2 = [t.detach().clone().requires_grad_(True) for t in (q, k, v)]
    out = tiled_attention(q, k, v, block_q=bq, block_k=bk)
    ref = naive_attention(q2, k2, v2)
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-6)
    g = torch.randn_like(ref)
    out.backward(g)
    ref.backward(g)
    for a, b in ((q, q2), (k, k2), (v, v2)):
        torch.testing.assert_close(a.grad, b.grad, rtol=0, atol=1e-6)


def test_large_logits_stay_finite_and_match_sdpa():
    # scores around +-300: a softmax without the running max would overflow exp()
    q, k, v = _qkv((1, 2, 33, 8), 40, 8, seed=5, requires_grad=False, spread=6.0)
    out = tiled_attention(q, k, v, block_q=5, block_k=6)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out, F.scaled_dot_product_attention(q, k, v), rtol=0, atol=1e-5)


def test_gradcheck_in_float64():
    q, k, v = [t.double().detach().requires_grad_(True) for t in _qkv((1, 4, 4), 6, 3, seed=9)]
    assert torch.autograd.gradcheck(lambda a, b, c: tiled_attention(a, b, c, block_q=3, block_k=4), (q, k, v))


def test_bad_shapes_raise():
    q, k, v = _qkv((1, 4, 8), 5, 3, seed=1, requires_grad=False)
    with pytest.raises(ValueError, match="do not fit"):
        tiled_attention(q, k[..., :7], v)


def test_sparx_swin_block_attention_goes_through_sdpa(monkeypatch):
    # timm keeps Swin's window attention on its unfused path unless TIMM_FUSED_ATTN=2; fovea turns
    # the SDPA path on. Same numbers as timm's explicit softmax path, and SDPA is really called.
    from fovea.models.sparx_swin import SparXSwinBlock

    torch.manual_seed(0)
    block = SparXSwinBlock(16, 2, 4, 2, 0.0, (8, 8), 2.0).eval()
    x = torch.randn(2, 16, 8, 8)
    calls = []
    real = F.scaled_dot_product_attention
    monkeypatch.setattr(F, "scaled_dot_product_attention", lambda *a, **k: calls.append(1) or real(*a, **k))
    with torch.no_grad():
        fused = block(x)
        assert calls, "SparX-Swin window attention did not call F.scaled_dot_product_attention"
        block.swin.attn.fused_attn = False
        explicit = block(x)
    torch.testing.assert_close(fused, explicit, rtol=0, atol=1e-5)
