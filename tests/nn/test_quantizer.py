"""Vector quantisers against hand-computed cases: paper loss terms (beta on the encoder term) and their
gradients, straight-through identity, the EMA update's closed form, dead-code restarts, perplexity,
and Gumbel hard samples (one-hot forward, soft gradients)."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fovea.nn.quantizer import GumbelQuantizer, VectorQuantizer, gumbel_tau, perplexity


def _vq(codes, **kw) -> VectorQuantizer:
    vq = VectorQuantizer(len(codes), len(codes[0]), **kw)
    with torch.no_grad():
        vq.codebook.copy_(torch.tensor(codes, dtype=torch.float32))
        vq.embed_sum.copy_(vq.codebook)
    return vq


def _z(vectors) -> torch.Tensor:
    """N vectors of dim D -> (1, D, 1, N) so that flattening gives them back in order."""
    return torch.tensor(vectors, dtype=torch.float32).t()[None, :, None, :].contiguous()


def test_paper_loss_terms_and_gradients_by_hand():
    # codes e0 = (0, 0), e1 = (4, 0); z = (1, 1) -> e0, (3, 0) -> e1
    vq = _vq([[0.0, 0.0], [4.0, 0.0]])
    z = _z([[1.0, 1.0], [3.0, 0.0]]).requires_grad_(True)
    out = vq(z)
    assert out.indices.flatten().tolist() == [0, 1]
    # squared errors: (1 + 1) and (1 + 0) over 4 elements -> mean 0.75
    assert float(out.codebook_loss.detach()) == pytest.approx(0.75)
    assert float(out.commitment_loss) == pytest.approx(0.25 * 0.75)
    assert float(out.loss) == pytest.approx(1.25 * 0.75)
    out.loss.backward()
    # d/dz of beta * mean((z - sg e)^2) = beta * 2 (z - e) / 4 ; the codebook term sends nothing to z
    zg = z.grad[0, :, 0, :].t()
    np.testing.assert_allclose(zg.numpy(), 0.25 * 2 * np.array([[1.0, 1.0], [-1.0, 0.0]]) / 4, atol=1e-7)
    # d/de of mean((e - sg z)^2): only the codebook term, no beta: 2 (e - z) / 4 summed over assignments
    np.testing.assert_allclose(vq.codebook.grad.numpy(), 2 * np.array([[-1.0, -1.0], [1.0, 0.0]]) / 4, atol=1e-7)


def test_beta_is_on_the_encoder_term_not_the_codebook_term():
    vq = _vq([[0.0]], beta=0.5)
    z = _z([[2.0]]).requires_grad_(True)
    out = vq(z)
    out.loss.backward()
    assert float(z.grad.flatten()[0]) == pytest.approx(0.5 * 2 * 2.0)  # beta * 2 (z - e)
    assert float(vq.codebook.grad[0, 0]) == pytest.approx(2 * -2.0)  # 2 (e - z), no beta


def test_straight_through_gradient_is_identity():
    torch.manual_seed(0)
    vq = VectorQuantizer(8, 3)
    z = torch.randn(2, 3, 4, 5, requires_grad=True)
    out = vq(z)
    up = torch.randn_like(out.quantized)
    (out.quantized * up).sum().backward()
    torch.testing.assert_close(z.grad, up)
    # and the forward value is exactly the nearest code (slow loop)
    flat = z.detach().permute(0, 2, 3, 1).reshape(-1, 3)
    for i, v in enumerate(flat):
        k = int(((vq.codebook.detach() - v) ** 2).sum(1).argmin())
        b, rest = divmod(i, 20)
        hh, ww = divmod(rest, 5)
        assert int(out.indices[b, hh, ww]) == k
        torch.testing.assert_close(out.quantized[b, :, hh, ww].detach(), vq.codebook.detach()[k])


def test_ema_update_matches_closed_form():
    g, eps = 0.99, 1e-5
    codes = np.array([[0.0, 0.0], [4.0, 0.0], [0.0, 9.0]])
    vq = _vq(codes.tolist(), ema=True, decay=g, eps=eps)
    assert not vq.codebook.requires_grad
    z = np.array([[1.0, 1.0], [3.0, 0.0], [5.0, 1.0]])  # -> codes 0, 1, 1; code 2 unused
    vq.train()
    out = vq(_z(z.tolist()))
    assert float(out.codebook_loss) == 0.0
    n = np.array([1.0, 2.0, 0.0])
    sums = np.array([z[0], z[1] + z[2], [0.0, 0.0]])
    cs = g * np.ones(3) + (1 - g) * n
    es = g * codes + (1 - g) * sums
    total = cs.sum()
    smoothed = (cs + eps) / (total + 3 * eps) * total
    np.testing.assert_allclose(vq.cluster_size.numpy(), cs, rtol=1e-6)
    np.testing.assert_allclose(vq.codebook.detach().numpy(), es / smoothed[:, None], rtol=1e-5)
    # eval: no update
    before = vq.codebook.detach().clone()
    vq.eval()
    vq(_z(z.tolist()))
    torch.testing.assert_close(vq.codebook.detach(), before)


def test_ema_codebook_converges_to_cluster_means():
    torch.manual_seed(0)
    centres = torch.tensor([[-5.0, 0.0], [5.0, 0.0], [0.0, 5.0]])
    vq = _vq([[-4.0, 1.0], [4.0, -1.0], [1.0, 4.0]], ema=True, decay=0.9)
    vq.train()
    for _ in range(150):
        pts = centres.repeat(50, 1) + 0.3 * torch.randn(150, 2)
        vq(pts.t()[None, :, None, :].contiguous())
    torch.testing.assert_close(vq.codebook.detach(), centres, atol=0.1, rtol=0)


def test_dead_codes_are_restarted_on_batch_vectors():
    torch.manual_seed(0)
    vq = _vq([[0.0, 0.0], [100.0, 100.0], [-100.0, 50.0]], dead_code_threshold=0.995)
    vq.train()
    z = 0.1 * torch.randn(1, 2, 4, 4)  # every vector goes to code 0; codes 1 and 2 are never used
    vq(z)
    # usage EMA of codes 1, 2 fell to 0.99 < 0.995 -> both replaced by vectors of this batch
    assert int(vq.restarts) == 2
    flat = z.permute(0, 2, 3, 1).reshape(-1, 2)
    for k in (1, 2):
        assert bool(((flat - vq.codebook.detach()[k]).abs().sum(1) == 0).any())
    assert float(vq.cluster_size[0]) > 0.995
    # eval mode never restarts
    vq.eval()
    vq(z)
    assert int(vq.restarts) == 2


def test_perplexity_closed_form():
    onehot = F.one_hot(torch.tensor([0, 0, 1, 2]), 4)
    ppl, usage = perplexity(onehot)
    p = np.array([0.5, 0.25, 0.25])
    assert float(ppl) == pytest.approx(math.exp(-(p * np.log(p)).sum()), rel=1e-6)
    assert float(usage) == pytest.approx(0.75)
    assert float(perplexity(torch.eye(5))[0]) == pytest.approx(5.0, rel=1e-5)


def test_gumbel_hard_sample_is_one_hot_with_soft_gradient():
    torch.manual_seed(0)
    gq = GumbelQuantizer(in_channels=3, num_codes=6, dim=4, tau=0.7, hard=True).train()
    logits = torch.randn(2, 6, 3, 3, requires_grad=True)
    gumbels = -torch.log(-torch.log(torch.rand(2, 6, 3, 3).clamp(1e-10, 1 - 1e-7)))
    y = gq.sample(logits, gumbels)
    assert set(torch.unique(y.detach()).tolist()) <= {0.0, 1.0}
    torch.testing.assert_close(y.detach().sum(1), torch.ones(2, 3, 3))
    soft = torch.softmax((logits.detach() + gumbels) / 0.7, 1)
    assert torch.equal(y.detach().argmax(1), soft.argmax(1))
    # gradient = that of the soft sample (independent computation)
    up = torch.randn(2, 6, 3, 3)
    (y * up).sum().backward()
    ref_logits = logits.detach().clone().requires_grad_(True)
    (torch.softmax((ref_logits + gumbels) / 0.7, 1) * up).sum().backward()
    torch.testing.assert_close(logits.grad, ref_logits.grad)
    assert float(logits.grad.abs().sum()) > 0


def test_gumbel_forward_eval_and_kl_to_uniform():
    gq = GumbelQuantizer(in_channels=2, num_codes=4, dim=3, kl_weight=1.0).eval()
    with torch.no_grad():
        gq.proj.weight.zero_()
        gq.proj.bias.zero_()
    out = gq(torch.randn(1, 2, 2, 2))
    assert float(out.loss) == pytest.approx(0.0, abs=1e-6)  # uniform logits: KL to uniform is 0
    with torch.no_grad():
        gq.proj.bias.copy_(torch.tensor([2.0, 0.0, 0.0, 0.0]))
    out = gq(torch.randn(1, 2, 2, 2))
    q = np.exp([2.0, 0, 0, 0]) / np.exp([2.0, 0, 0, 0]).sum()
    assert float(out.loss) == pytest.approx(float((q * np.log(q * 4)).sum()), rel=1e-5)
    assert (out.indices == 0).all()
    torch.testing.assert_close(out.quantized[0, :, 0, 0], gq.codebook.weight[0].detach())


def test_gumbel_tau_anneal():
    assert gumbel_tau(0) == 1.0
    assert gumbel_tau(1000, rate=1e-3, tau_min=0.1) == pytest.approx(math.exp(-1.0))
    assert gumbel_tau(1000, rate=1e-3) == 0.5  # floored at tau_min
    assert gumbel_tau(10**6) == 0.5


def test_bad_shapes_raise():
    with pytest.raises(ValueError, match="expects 4 channels"):
        VectorQuantizer(8, 4)(torch.randn(1, 3, 2, 2))
    with pytest.raises(ValueError, match="decay"):
        VectorQuantizer(8, 4, decay=1.0)
