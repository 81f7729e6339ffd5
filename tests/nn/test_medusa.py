"""Medusa decoding against hand-built trees, a slow loss loop, and plain greedy decoding."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from fovea.models.text_decoder import TextDecoder, TextDecoderConfig, causal_mask, greedy_decode
from fovea.nn.medusa import (MedusaHeads, ResBlock, accept_lengths, default_choices, medusa_generate, medusa_loss,
                             tree_buffers)


def test_tree_buffers_of_a_hand_drawn_tree():
    # nodes: 1=(0,) 2=(1,) 3=(0,0) 4=(0,1) 5=(1,0) 6=(0,0,0); top-2 per head
    t = tree_buffers([(0, 0, 0), (1,), (0,), (0, 1), (1, 0), (0, 0)])
    expected = torch.zeros(7, 7, dtype=torch.bool)
    ancestors = {0: [], 1: [], 2: [], 3: [1], 4: [1], 5: [2], 6: [1, 3]}
    for node, anc in ancestors.items():
        for j in [0, node, *anc]:
            expected[node, j] = True
    assert torch.equal(t.mask, expected)
    assert t.depth.tolist() == [0, 1, 1, 2, 2, 2, 3]
    # flat candidates: [base, h0 top0, h0 top1, h1 top0, h1 top1, h2 top0, h2 top1]
    assert t.tree_indices.tolist() == [0, 1, 2, 3, 4, 3, 5]
    assert t.retrieve.tolist() == [[0, 1, 4, -1], [0, 2, 5, -1], [0, 1, 3, 6]]
    with pytest.raises(ValueError, match="no parent"):
        tree_buffers([(0,), (1, 0)])


def test_default_choices_are_prefix_closed_and_cheapest_first():
    choices = default_choices(num_heads=3, nodes=20)
    assert len(choices) == 20 and len(set(choices)) == 20
    assert all(c[:-1] in choices for c in choices if len(c) > 1)
    cost = [math.prod(r + 1 for r in c) for c in choices]
    assert cost == sorted(cost) and max(len(c) for c in choices) <= 3


def test_medusa_loss_equals_a_slow_loop():
    torch.manual_seed(0)
    k, b, t, v = 3, 2, 7, 11
    logits = torch.randn(k, b, t, v)
    labels = torch.randint(0, v, (b, t))
    total = 0.0
    for i in range(k):
        terms = [F.cross_entropy(logits[i, bb, tt][None], labels[bb, tt + 2 + i][None])
                 for bb in range(b) for tt in range(t - 2 - i)]
        total += torch.stack(terms).mean()
    assert torch.allclose(medusa_loss(logits, labels), total, atol=1e-6)


def test_resblock_starts_as_identity_plus_silu_of_bias():
    block = ResBlock(5)
    x = torch.randn(3, 5)
    assert torch.allclose(block(x), x + F.silu(block.linear.bias))


def test_accept_lengths_greedy_and_typical_by_hand():
    v = 4
    logits = torch.full((2, 3, v), -10.0)
    logits[0, 0, 2] = logits[0, 1, 3] = 10.0  # path 0: argmax 2 then 3
    logits[1, 0, 1] = 10.0
    cand = torch.tensor([[0, 2, 3], [0, 2, 0]])
    valid = torch.tensor([[True, True, True], [True, True, False]])
    assert accept_lengths(cand, logits, valid).tolist() == [2, 0]
    # typical: a flat distribution over 4 tokens has p = 0.25, H = log 4 -> threshold min(0.09, 0.3/4) = 0.075
    flat = torch.zeros(1, 2, v)
    assert accept_lengths(torch.tensor([[0, 1]]), flat, torch.ones(1, 2, dtype=torch.bool), temperature=1.0).item() == 1
    # delta 0.9 -> threshold min(0.3, 0.225) = 0.225 < 0.25: still accepted; delta 1.2 -> 0.3 > 0.25: refused
    kw = dict(temperature=1.0, epsilon=0.3)
    assert accept_lengths(torch.tensor([[0, 1]]), flat, torch.ones(1, 2, dtype=torch.bool), delta=0.9, **kw).item() == 1
    assert accept_lengths(torch.tensor([[0, 1]]), flat, torch.ones(1, 2, dtype=torch.bool), delta=1.2, **kw).item() == 0


def _model(seed: int = 0) -> TextDecoder:
    torch.manual_seed(seed)
    model = TextDecoder(TextDecoderConfig(vocab_size=37, dim=32, depth=2, heads=4, max_len=96)).double().eval()
    return model


def test_cached_tree_forward_equals_the_full_causal_forward():
    model = _model()
    ids = torch.randint(0, 37, (1, 12))
    full, _ = model(ids)
    hidden, cache = model(ids[:, :5])
    step, _ = model(ids[:, 5:], cache=cache, mask=causal_mask(7, 5))
    assert torch.allclose(torch.cat([hidden, step], 1), full, atol=1e-12)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_greedy_medusa_reproduces_plain_greedy_decoding(seed):
    model = _model(seed)
    heads = MedusaHeads(32, 37, num_heads=3).double()
    for p in heads.parameters():  # random, non-zero heads: their guesses are mostly wrong, sometimes right
        torch.nn.init.normal_(p, std=0.5)
    prompt = torch.randint(0, 37, (6,), generator=torch.Generator().manual_seed(seed))
    expected = greedy_decode(model, prompt, 40)
    got, stats = medusa_generate(model, heads, prompt, 40, tree=tree_buffers(default_choices(3, 16)))
    assert got.tolist() == expected.tolist()
    assert stats.tokens == 40 and stats.steps <= 40


class _OracleHeads(torch.nn.Module):
    """Heads that know the greedy continuation: they find the step by matching the hidden state."""

    def __init__(self, hiddens: torch.Tensor, tokens: list[int], vocab: int, num_heads: int):
        super().__init__()
        self.heads = [None] * num_heads
        self.hiddens, self.tokens, self.vocab = hiddens, tokens, vocab

    def forward(self, hidden):
        j = int((self.hiddens - hidden).norm(dim=-1).argmin())
        out = torch.zeros(len(self.heads), 1, self.vocab, dtype=hidden.dtype)
        for i in range(len(self.heads)):
            if j + 1 + i < len(self.tokens):
                out[i, 0, self.tokens[j + 1 + i]] = 1.0
        return out


def test_perfect_heads_accept_the_whole_path_every_step():
    model = _model(3)
    prompt = torch.randint(0, 37, (5,), generator=torch.Generator().manual_seed(3))
    hidden, cache = model(prompt[None])
    hiddens, tokens = [hidden[0, -1]], []
    for _ in range(30):  # the sequential greedy pass, keeping each step's last hidden state
        tokens.append(int(model.logits(hiddens[-1]).argmax()))
        hidden, cache = model(torch.tensor([[tokens[-1]]]), cache=cache)
        hiddens.append(hidden[0, -1])
    heads = _OracleHeads(torch.stack(hiddens), tokens, 37, num_heads=3)
    got, stats = medusa_generate(model, heads, prompt, 30, tree=tree_buffers(default_choices(3, 10)))
    assert got.tolist() == tokens
    assert stats.steps == math.ceil(30 / 4)  # base token + 3 accepted head tokens per forward
