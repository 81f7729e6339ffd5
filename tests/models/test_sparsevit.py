"""SparseViT: published size, dilated grouping and sparse attention against slow loops, shapes."""

from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from fovea.errors import ConfigError
from fovea.models.sparsevit import (SparseAttention, SparseViTConfig, dilated_groups, sparsevit_uniformer_b,
                                    undo_dilated_groups)


def test_paper_size_params_and_gmacs_at_512():
    with torch.device("meta"):
        model = sparsevit_uniformer_b().eval()
    params = sum(p.numel() for p in model.parameters())
    assert round(params / 1e6, 2) == 50.35  # published / measured on the reference: 50.35 M
    assert round((params - sum(p.numel() for p in model.fusion.parameters())) / 1e6, 2) == 49.68  # encoder
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model(torch.empty(1, 3, 512, 512, device="meta"))
    assert round(counter.get_total_flops() / 2e9, 2) == 46.03  # MACs (conv, matmul, bmm), as the fact sheet counts


def test_paper_sparsity_schedule():
    with torch.device("meta"):
        model = sparsevit_uniformer_b()
    assert [b.sparse_size for b in model.stage3] == [8] * 5 + [4] * 5 + [2] * 5 + [1] * 5
    assert [b.sparse_size for b in model.stage4] == [2] * 4 + [1] * 3
    assert [b.attn.heads for b in (model.stage3[0], model.stage4[0])] == [5, 8]


def test_dilated_groups_by_loop():
    x = torch.randn(2, 8, 12, 3)
    s = 4
    groups = dilated_groups(x, s)
    assert groups.shape == (2 * 16, 2 * 3, 3)
    for b in range(2):
        for i in range(s):
            for j in range(s):
                expected = torch.stack([x[b, a * s + i, c * s + j] for a in range(2) for c in range(3)])
                assert torch.equal(groups[b * s * s + i * s + j], expected)
    assert torch.equal(undo_dilated_groups(groups, s, 8, 12), x)


@pytest.mark.parametrize("s", [1, 2, 4])
def test_sparse_attention_equals_per_group_attention(s):
    torch.manual_seed(0)
    attn = SparseAttention(16, 2).eval()
    x = torch.randn(1, 8, 8, 16)
    with torch.no_grad():
        y = attn(x, s)
        expected = torch.empty_like(x)
        w_qkv, b_qkv = attn.qkv.weight, attn.qkv.bias
        for i in range(s):
            for j in range(s):
                tokens = x[0, i::s, j::s].reshape(-1, 16)  # the group (a*s + i, b*s + j)
                q, k, v = (tokens @ w_qkv.T + b_qkv).split(16, dim=-1)
                heads = []
                for h in range(2):
                    sl = slice(8 * h, 8 * h + 8)
                    p = torch.softmax(q[:, sl] @ k[:, sl].T / 8 ** 0.5, dim=-1)
                    heads.append(p @ v[:, sl])
                out = attn.proj(torch.cat(heads, dim=-1))
                expected[0, i::s, j::s] = out.reshape(8 // s, 8 // s, 16)
    torch.testing.assert_close(y, expected, rtol=1e-5, atol=1e-5)


def _tiny():
    return SparseViTConfig(depths=(1, 1, 4, 2), dims=(8, 16, 32, 64), head_dim=16, stage3_sparse=(8, 4, 2, 1),
                           stage4_sparse=(2, 1), stage3_taps=(1, 2, 3), stage4_taps=(1,))


def test_tiny_forward_backward_and_input_check():
    torch.manual_seed(0)
    from fovea.models.sparsevit import SparseViT

    model = SparseViT(_tiny())
    x = torch.randn(2, 3, 128, 128)
    logits = model(x)
    assert logits.shape == (2, 1, 128, 128)
    loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, torch.zeros_like(logits))
    loss.backward()
    assert model.fusion.gammas.grad is not None and model.stage1[0].conv1.weight.grad is not None
    with pytest.raises(ConfigError, match="multiples of 128"):
        model(torch.randn(1, 3, 96, 128))


def test_groups_of_one_token_reduce_attention_to_its_value_projection():
    """At 128 px stage 3 is an 8 x 8 grid, so S = 8 makes 64 groups of ONE token: softmax over one key is 1,
    and each output is proj(W_v x + b_v) (closed form) - the reduced-input caveat of docs/forgery.md."""
    torch.manual_seed(0)
    attn = SparseAttention(16, 2).eval()
    x = torch.randn(1, 8, 8, 16)
    with torch.no_grad():
        v = x @ attn.qkv.weight[32:].T + attn.qkv.bias[32:]
        torch.testing.assert_close(attn(x, 8), attn.proj(v), rtol=1e-5, atol=1e-5)
        assert not torch.allclose(attn(x, 4), attn.proj(v), atol=1e-3)  # 2 x 2 groups do mix tokens


def test_forgery_small_config_keeps_the_paper_schedule_shape():
    """SPARSEVIT_SMALL compresses the paper's schedule: S = 8, 4, 2, 1 over equal quarters of stage 3, then
    2 and 1 in stage 4, and LFF taps at the quarter ends (the paper: after blocks 5, 10, 15 of 20)."""
    from fovea.forgery.model import SPARSEVIT_SMALL

    with torch.device("meta"):
        model = sparsevit_uniformer_b(**{k: tuple(v) if isinstance(v, list) else v for k, v in SPARSEVIT_SMALL.items()})
    s3 = [b.sparse_size for b in model.stage3]
    quarter = len(s3) // 4
    assert s3 == [8] * quarter + [4] * quarter + [2] * quarter + [1] * quarter
    assert [b.sparse_size for b in model.stage4] == [2, 1]
    assert model.config.stage3_taps == tuple(quarter * i for i in (1, 2, 3))
