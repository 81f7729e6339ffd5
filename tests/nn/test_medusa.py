"""Medusa decoding against hand-built trees, a slow loss loop, and plain greedy decoding."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from fovea.models.text_decoder import TextDecoder, TextDecoderConfig, causal_mask, greedy_decode
from fovea.nn.medusa import (MedusaHeads, accept_lengths, choices_for_cost, choices_from_accuracies, default_choices,
                             expected_tokens_per_step, frequent_openings, greedy_accepted_node, head_accuracies,
                             head_rank_paths,
                             medusa_generate, medusa_loss, node_acceptance, path_probabilities, tree_buffers)


def test_tree_buffers_of_a_hand_drawn_tree():
    # nodes: 1=(0,) 2=(1,) 3=(0,0) 4=(0,1) 5=(1,0) 6=(0,0,0); top-2 per head
    t = tree_buffers([(0, 0, 0), (1,), (0,), (0, 1), (1, 0), (0, 0)], order="depth")
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
    assert t.parent.tolist() == [0, 0, 0, 1, 1, 2, 3]
    # additive window: 3 cached tokens are open to every node, then the tree mask as 0 / -inf
    w = t.attention_window(capacity=5)[:, 5 - 3:]
    assert w.shape == (7, 10) and bool((w[:, :3] == 0).all())
    assert torch.equal(w[:, 3:] == 0, expected) and bool(torch.isinf(w[:, 3:][~expected]).all())
    with pytest.raises(ValueError, match="no parent"):
        tree_buffers([(0,), (1, 0)])
    with pytest.raises(ValueError, match="order"):
        tree_buffers([(0,)], order="bfs")


def test_chain_order_puts_the_first_listed_path_in_consecutive_slots():
    # listed most valuable first; depth first, first-listed child first:
    # nodes 1=(0,) 2=(0,0) 3=(0,0,0) 4=(0,1) 5=(1,) 6=(1,0)
    t = tree_buffers([(0,), (0, 0), (1,), (0, 1), (0, 0, 0), (1, 0)])
    assert t.choices == [(0,), (0, 0), (0, 0, 0), (0, 1), (1,), (1, 0)]
    assert t.depth.tolist() == [0, 1, 2, 3, 2, 1, 2]
    assert t.parent.tolist() == [0, 0, 1, 2, 1, 0, 5]
    assert t.tree_indices.tolist() == [0, 1, 3, 5, 4, 2, 3]  # 1 + topk * (depth - 1) + rank, topk 2
    expected = torch.zeros(7, 7, dtype=torch.bool)
    ancestors = {0: [], 1: [], 2: [1], 3: [1, 2], 4: [1], 5: [], 6: [5]}
    for node, anc in ancestors.items():
        for j in [0, node, *anc]:
            expected[node, j] = True
    assert torch.equal(t.mask, expected)
    assert [p.tolist() for p in t.node_paths] == [[0], [0, 1], [0, 1, 2], [0, 1, 2, 3], [0, 1, 4], [0, 5], [0, 5, 6]]
    # accepting any prefix of the first-listed path needs no cache move
    assert t.decode_plan(capacity=8).in_place == [True, True, True, True, False, False, False]
    depth_first = tree_buffers([(0,), (0, 0), (1,), (0, 1), (0, 0, 0), (1, 0)], order="depth")
    assert depth_first.decode_plan(capacity=8).in_place == [True, True, False, False, False, False, False]


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
    total, decayed = 0.0, 0.0
    for i in range(k):
        terms = [F.cross_entropy(logits[i, bb, tt][None], labels[bb, tt + 2 + i][None])
                 for bb in range(b) for tt in range(t - 2 - i)]
        total += torch.stack(terms).mean()
        decayed += 0.8 ** i * torch.stack(terms).mean()
    assert torch.allclose(medusa_loss(logits, labels), total, atol=1e-6)
    assert torch.allclose(medusa_loss(logits, labels, decay=0.8), decayed, atol=1e-6)  # Medusa-2's head weights


def _slow_heads(heads: MedusaHeads, h: torch.Tensor) -> torch.Tensor:
    """Head by head, block by block: x <- x + SiLU(W x + b), then the projection. h (N, D) -> (K, N, V)."""
    out = []
    for k in range(heads.num_heads):
        x = h
        for w, b in zip(heads.res_weight[:, k], heads.res_bias[:, k]):
            x = x + F.silu(x @ w.T + b)
        out.append(x @ heads.out_weight[k].T)
    return torch.stack(out)


def test_new_heads_read_the_hidden_state_plus_silu_of_bias():
    heads = MedusaHeads(5, 7, num_heads=3)
    assert bool((heads.res_weight == 0).all())
    x = torch.randn(4, 5)
    expected = torch.stack([(x + F.silu(heads.res_bias[0, k])) @ heads.out_weight[k].T for k in range(3)])
    assert torch.allclose(heads(x), expected, atol=1e-6)


def test_batched_heads_equal_a_head_by_head_loop():
    torch.manual_seed(0)
    heads = MedusaHeads(6, 9, num_heads=3, num_layers=2).double()
    for p in heads.parameters():
        torch.nn.init.normal_(p, std=0.5)
    h = torch.randn(2, 4, 6, dtype=torch.float64)
    assert heads(h).shape == (3, 2, 4, 9)
    assert torch.allclose(heads(h).reshape(3, 8, 9), _slow_heads(heads, h.reshape(8, 6)), atol=1e-12)
    one = h[0, 0]
    assert torch.allclose(heads.decode_logits(one), _slow_heads(heads, one[None])[:, 0], atol=1e-12)
    assert heads.decode_topk(one, 4) == _slow_heads(heads, one[None])[:, 0].topk(4).indices.reshape(-1).tolist()
    two = _slow_heads(heads, one[None])[:2, 0].topk(2).indices.reshape(-1).tolist()
    assert heads.decode_topk(one, 2, num_heads=2) == two  # only the first heads, as a shallow tree needs
    assert torch.allclose(heads.decode_logits(one, num_heads=1), _slow_heads(heads, one[None])[:1, 0], atol=1e-12)
    with torch.no_grad():  # an in-place weight update must reach the packed decoding weights
        heads.out_weight.mul_(2.0)
        heads.res_weight[1].mul_(-1.0)
    assert torch.allclose(heads.decode_logits(one), _slow_heads(heads, one[None])[:, 0], atol=1e-12)
    assert heads.decode_topk(one, 4) == _slow_heads(heads, one[None])[:, 0].topk(4).indices.reshape(-1).tolist()


def test_decode_topk_lists_every_heads_best_tokens_in_order():
    torch.manual_seed(3)
    heads = MedusaHeads(16, 40, num_heads=5).double().eval()
    for p in heads.parameters():
        torch.nn.init.normal_(p, std=0.3)
    for _ in range(5):
        h = torch.randn(16, dtype=torch.float64) * 3
        slow = _slow_heads(heads, h[None])[:, 0]
        got = torch.tensor(heads.decode_topk(h, 3)).view(5, 3)
        for k in range(5):  # head k's 3 best tokens, best first, against a full sort of the slow logits
            assert got[k].tolist() == slow[k].argsort(descending=True)[:3].tolist()


def test_one_candidates_function_reused_over_steps_gives_each_hidden_states_best_tokens():
    # the per-call candidates function writes into buffers it keeps: each call must still answer for its own
    # hidden state (against a full sort of the slow head-by-head logits), also with two residual blocks
    torch.manual_seed(4)
    for layers in (1, 2):
        heads = MedusaHeads(16, 40, num_heads=4, num_layers=layers).double().eval()
        for p in heads.parameters():
            torch.nn.init.normal_(p, std=0.3)
        with torch.no_grad():
            guesses = heads.candidates(3, num_heads=3)
            hs = torch.randn(6, 16, dtype=torch.float64) * 3
            got = [guesses(h) for h in hs]  # all calls first, then the checks: no call may change an earlier list
        for h, g in zip(hs, got):
            slow = _slow_heads(heads, h[None])[:3, 0]
            assert g == [t for k in range(3) for t in slow[k].argsort(descending=True)[:3].tolist()]


def test_candidates_function_is_kept_until_the_weights_change_and_per_thread():
    import threading

    torch.manual_seed(6)
    heads = MedusaHeads(8, 12, num_heads=3).double().eval()
    for p in heads.parameters():
        torch.nn.init.normal_(p, std=0.5)
    h = torch.randn(8, dtype=torch.float64)
    with torch.no_grad():
        first = heads.candidates(2, 3)
        assert heads.candidates(2, 3) is first and heads.candidates(2, 2) is not first
        other = []
        worker = threading.Thread(target=lambda: other.append(heads.candidates(2, 3)))
        worker.start()
        worker.join()
        assert other[0] is not first  # another thread gets its own buffers
        heads.out_weight.mul_(-1.0)  # an in-place update: a new function on the repacked weights
        again = heads.candidates(2, 3)
        assert again is not first
        slow = _slow_heads(heads, h[None])[:, 0]
        assert again(h) == [t for k in range(3) for t in slow[k].argsort(descending=True)[:2].tolist()]
    import pickle  # the kept closures do not stop the module from being pickled

    copy = pickle.loads(pickle.dumps(heads))
    with torch.no_grad():
        assert copy.decode_topk(h, 2) == again(h)


def test_decode_plan_masks_are_contiguous_copies_of_the_window():
    t = tree_buffers([(0,), (0, 0), (1,)])
    plan = t.decode_plan(capacity=6)
    window = t.attention_window(6)
    for past in (0, 3, 5, 3):
        m = plan.mask(past)
        assert m.is_contiguous() and m.shape == (4, past + 4)
        assert torch.equal(m, window[:, 6 - past:])
        assert plan.mask(past) is m  # made once per cache length
    assert plan.max_depth == 2


def test_tree_from_accuracies_takes_the_most_probable_paths():
    acc = torch.tensor([[0.6, 0.2, 0.05], [0.5, 0.3, 0.0]])
    # path probabilities: (0,) .6, (0,0) .3, (1,) .2, (0,1) .18, (1,0) .1, (1,1) .06, (2,) .05, (2,0) .025
    assert choices_from_accuracies(acc, 4) == [(0,), (0, 0), (1,), (0, 1)]
    assert choices_from_accuracies(acc, 7) == [(0,), (0, 0), (1,), (0, 1), (1, 0), (1, 1), (2,)]
    assert expected_tokens_per_step([(0,), (0, 0), (1,)], acc) == pytest.approx(1 + 0.6 + 0.3 + 0.2)


def test_head_accuracies_count_rank_hits_by_hand():
    # one head (shift 2), sequence 0 1 2 3, V = 4: positions 0, 1 must guess labels 2, 3
    logits = torch.zeros(1, 1, 4, 4)
    logits[0, 0, 0] = torch.tensor([0.0, 1.0, 5.0, 2.0])  # label 2 at rank 0
    logits[0, 0, 1] = torch.tensor([0.0, 5.0, 1.0, 2.0])  # label 3 at rank 1
    acc = head_accuracies(logits, torch.tensor([[0, 1, 2, 3]]), topk=3)
    assert acc.tolist() == [[0.5, 0.5, 0.0]]
    acc = head_accuracies(logits, torch.tensor([[0, 1, 2, -100]]), topk=2)  # ignored label: 1 position
    assert acc.tolist() == [[1.0, 0.0]]


def test_head_rank_paths_by_hand():
    # two heads (shifts 2, 3), one sequence 0 1 2 3 4 (V = 5), the last token padded away
    logits = torch.zeros(2, 1, 5, 5)
    logits[0, 0, 0] = torch.tensor([0.0, 1.0, 5.0, 2.0, 0.5])  # head 0 at t=0 must guess 2: rank 0
    logits[0, 0, 1] = torch.tensor([0.0, 1.0, 5.0, 2.0, 0.5])  # guess 3: rank 1
    logits[0, 0, 2] = torch.tensor([4.0, 1.0, 5.0, 2.0, 0.5])  # guess 4 (padded): -1
    logits[1, 0, 0] = torch.tensor([0.0, 1.0, 2.0, 0.5, 5.0])  # head 1 at t=0 must guess 3: rank 3 >= topk 3
    logits[1, 0, 1] = torch.tensor([0.0, 1.0, 2.0, 0.5, 5.0])  # guess 4 (padded): -1
    labels = torch.tensor([[0, 1, 2, 3, -100]])
    paths = head_rank_paths(logits, labels, topk=3)
    # positions with a next token: t = 0, 1, 2 (t = 3's next is padding, t = 4 has none)
    assert paths.tolist() == [[0, 3], [1, -1], [-1, -1]]


def _slow_accepted_length(choices, row, topk):
    """Tokens a step from this position produces: 1 + the deepest tree node on the row's rank path."""
    depth = 0
    for d in range(1, len(row) + 1):
        if row[d - 1] < 0 or row[d - 1] >= topk or tuple(row[:d]) not in choices:
            break
        depth = d
    return 1 + depth


def test_path_probabilities_give_each_trees_mean_accepted_length():
    gen = torch.Generator().manual_seed(0)
    rows = torch.randint(0, 4, (200, 3), generator=gen)  # ranks 0..3 with topk 3: rank 3 is a miss
    rows[rows[:, 0] == 0, 1] = 0  # correlated heads: after a rank-0 hit, head 1 is right too
    rows[:20, 2] = -1  # sequences that end
    ranked = path_probabilities(rows, topk=3)
    values = [v for _, v in ranked]
    assert values == sorted(values, reverse=True)
    for n in (1, 3, 6, len(ranked)):
        choices = [c for c, _ in ranked[:n]]
        assert all(c[:-1] in choices for c in choices if len(c) > 1)  # prefix-closed
        slow = sum(_slow_accepted_length(set(choices), r, 3) for r in rows.tolist()) / len(rows)
        assert 1 + sum(values[:n]) == pytest.approx(slow)
    assert ranked[0][0] == (0,) and ranked[1][0] == (0, 0)  # P(0,) = P(0, 0) after the correlation


def test_choices_for_cost_maximise_tokens_per_cost():
    ranked = [((0,), 0.9), ((0, 0), 0.5), ((1,), 0.1), ((0, 0, 0), 0.05)]
    # tokens / cost with fixed 10 and 1 per token: 1/11, 1.9/12, 2.4/13 = 0.185, 2.5/14 = 0.179: stop at 2
    assert choices_for_cost(ranked, 10.0, 1.0) == [(0,), (0, 0)]
    for fixed, per in [(10.0, 1.0), (100.0, 1.0), (1.0, 1.0), (5.0, 0.0)]:
        got = choices_for_cost(ranked, fixed, per)
        ratio = [(1 + sum(v for _, v in ranked[:n])) / (fixed + per * (n + 1)) for n in range(len(ranked) + 1)]
        assert ratio[len(got)] == max(ratio)
    assert choices_for_cost(ranked, 5.0, 0.0, max_nodes=3) == [(0,), (0, 0), (1,)]


def test_node_acceptance_agrees_with_path_acceptance():
    torch.manual_seed(1)
    # random tokens can repeat among siblings (never in decoding, where siblings are one head's different ranks);
    # then several paths tie and the walk and the path argmax pick the first in node order: depth order here
    tree = tree_buffers(default_choices(3, 12, max_rank=3), order="depth")
    v = 5
    for temperature in (0.0, 1.0):
        logits = torch.randn(tree.size, v) * 3
        tokens = torch.randint(0, v, (tree.size,))
        tokens[1:] = torch.where(torch.rand(tree.size - 1) < 0.6, logits.argmax(-1)[tree.parent[1:]], tokens[1:])
        ok = node_acceptance(tokens, logits, tree.parent, temperature=temperature)
        body, valid = tree.retrieve[:, 1:].clamp_min(0), tree.retrieve[:, 1:] >= 0
        got = (ok[body] & valid).cumprod(1).sum(1)
        r = tree.retrieve.clamp_min(0)
        want = accept_lengths(tokens[r], logits[r], tree.retrieve >= 0, temperature=temperature)
        assert torch.equal(got, want)
        if temperature == 0.0:  # the list walk ends on the node where the longest accepted path ends
            end = greedy_accepted_node(tokens.tolist(), logits.argmax(-1).tolist(), tree.parent.tolist())
            best = int(want.argmax())
            assert end == int(tree.retrieve[best, int(want[best])]) and int(want.max()) >= 1
            assert tree.node_paths[end].tolist() == tree.retrieve[best, : int(want[best]) + 1].tolist()


def test_greedy_accepted_node_by_hand():
    # nodes: 0 root, 1=(0,) 2=(1,) 3=(0,0) 4=(1,0) 5=(0,0,0); tokens and the base argmax at each node
    parent = [0, 0, 0, 1, 2, 3]
    tokens = [7, 4, 5, 9, 1, 3]
    assert greedy_accepted_node(tokens, [5, 9, 1, 2, 0, 0], parent) == 4  # 2 (5 after 7), then 4 (1 after 5)
    assert greedy_accepted_node(tokens, [4, 9, 0, 3, 0, 0], parent) == 5  # 1, 3, 5
    assert greedy_accepted_node(tokens, [4, 8, 0, 3, 0, 0], parent) == 1  # 1, then 3 refused (8 != 9)
    assert greedy_accepted_node(tokens, [6, 9, 1, 3, 0, 0], parent) == 0  # nothing accepted


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


def _model(seed: int = 0, memory_dim: int | None = None) -> TextDecoder:
    torch.manual_seed(seed)
    cfg = TextDecoderConfig(vocab_size=37, dim=32, depth=2, heads=4, max_len=96, memory_dim=memory_dim)
    return TextDecoder(cfg).double().eval()


def test_cached_tree_forward_equals_the_full_causal_forward():
    model = _model()
    ids = torch.randint(0, 37, (1, 12))
    full, _ = model(ids)
    cache = model.new_cache(1, 20)
    hidden, _ = model(ids[:, :5], cache=cache)
    step, _ = model(ids[:, 5:], cache=cache, mask=causal_mask(7, 5))
    assert torch.allclose(torch.cat([hidden, step], 1), full, atol=1e-12)
    assert cache.length == 12


def test_cache_keep_moves_a_path_into_place():
    # tokens 0..4 cached, then 3 side-by-side candidates at 5, 6, 7 (each sees the prefix and itself only);
    # keeping candidate 2 must leave the cache of the sequence prefix + candidate 2
    model = _model(4)
    ids = torch.randint(0, 37, (1, 8))
    cache = model.new_cache(1, 12)
    model(ids[:, :5], cache=cache)
    side = torch.cat([torch.ones(3, 5, dtype=torch.bool), torch.eye(3, dtype=torch.bool)], 1)
    model(ids[:, 5:], positions=torch.tensor([5, 5, 5]), mask=side, cache=cache)
    cache.keep(5, torch.tensor([2]))
    seq = torch.cat([ids[:, :5], ids[:, 7:]], 1)
    ref = model.new_cache(1, 12)
    model(seq, cache=ref)
    assert cache.length == 6 and torch.allclose(cache.buffer[..., :6, :], ref.buffer[..., :6, :], atol=1e-12)
    with pytest.raises(ValueError, match="capacity"):
        model(ids, cache=cache)


def test_cross_attention_keys_values_cached_once_equal_the_uncached_forward():
    torch.manual_seed(5)
    model = TextDecoder(TextDecoderConfig(vocab_size=37, dim=32, depth=2, heads=4, max_len=30, memory_dim=16))
    model = model.double().eval()
    memory = torch.randn(1, 9, 16, dtype=torch.float64)
    ids = torch.randint(0, 37, (1, 10))
    full, _ = model(ids, memory=memory)
    cache = model.new_cache(1, 10, memory)
    steps = [model(ids[:, :4], cache=cache)[0]] + [model(ids[:, t:t + 1], cache=cache)[0] for t in range(4, 10)]
    assert torch.allclose(torch.cat(steps, 1), full, atol=1e-12)


@pytest.mark.parametrize("seed,memory_dim,order", [(0, None, "chain"), (1, 16, "chain"), (2, 16, "chain"),
                                                   (1, 16, "depth")])
def test_greedy_medusa_reproduces_plain_greedy_decoding(seed, memory_dim, order):
    model = _model(seed, memory_dim)
    memory = None if memory_dim is None else torch.randn(1, 9, memory_dim, dtype=torch.float64)
    heads = MedusaHeads(32, 37, num_heads=3).double()
    for p in heads.parameters():  # random, non-zero heads: their guesses are mostly wrong, sometimes right
        torch.nn.init.normal_(p, std=0.5)
    prompt = torch.randint(0, 37, (6,), generator=torch.Generator().manual_seed(seed))
    expected = greedy_decode(model, prompt, 40, memory=memory)
    tree = tree_buffers(default_choices(3, 16), order=order)
    got, stats = medusa_generate(model, heads, prompt, 40, tree=tree, memory=memory)
    assert got.tolist() == expected.tolist()
    assert stats.tokens == 40 and stats.steps <= 40
    # typical acceptance with an unreachable threshold accepts no head token: greedy again, one token per step
    with pytest.raises(ValueError, match="needs a tree"):
        medusa_generate(model, heads, prompt, 12, memory=memory)
    heads.choices = default_choices(3, 6)  # a tree carried by the heads is the default
    got, stats = medusa_generate(model, heads, prompt, 12, memory=memory, temperature=1.0, epsilon=2.0, delta=1e9)
    assert got.tolist() == expected[:12].tolist() and stats.steps == 12


class _OracleHeads(torch.nn.Module):
    """Heads that know the greedy continuation: they find the step by matching the hidden state."""

    def __init__(self, hiddens: torch.Tensor, tokens: list[int], vocab: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.hiddens, self.tokens, self.vocab = hiddens, tokens, vocab

    def forward(self, hidden):
        j = int((self.hiddens - hidden).norm(dim=-1).argmin())
        out = torch.zeros(self.num_heads, self.vocab, dtype=hidden.dtype)
        for i in range(self.num_heads):
            if j + 1 + i < len(self.tokens):
                out[i, self.tokens[j + 1 + i]] = 1.0
        return out


def test_perfect_heads_accept_the_whole_path_every_step():
    model = _model(3)
    prompt = torch.randint(0, 37, (5,), generator=torch.Generator().manual_seed(3))
    cache = model.new_cache(1, 40)
    hidden, _ = model(prompt[None], cache=cache)
    hiddens, tokens = [hidden[0, -1]], []
    for _ in range(30):  # the sequential greedy pass, keeping each step's last hidden state
        tokens.append(int(model.logits(hiddens[-1]).argmax()))
        hidden, _ = model(torch.tensor([[tokens[-1]]]), cache=cache)
        hiddens.append(hidden[0, -1])
    heads = _OracleHeads(torch.stack(hiddens), tokens, 37, num_heads=3)
    timings: dict[str, float] = {}
    got, stats = medusa_generate(model, heads, prompt, 30, tree=tree_buffers(default_choices(3, 10)), timings=timings)
    assert got.tolist() == tokens
    assert stats.steps == math.ceil(30 / 4)  # base token + 3 accepted head tokens per forward
    # the rank-0 path is always accepted: in place in a chain-ordered tree, moved in a depth-ordered one
    assert stats.cache_moves == 0
    assert set(timings) == {"candidates", "tree forward", "acceptance", "cache move"}
    assert all(v >= 0.0 for v in timings.values()) and timings["tree forward"] > 0.0
    got, stats = medusa_generate(model, heads, prompt, 30, tree=tree_buffers(default_choices(3, 10), order="depth"))
    assert got.tolist() == tokens and stats.cache_moves == stats.steps - 1  # every step but the last


def test_frequent_openings_by_hand():
    seqs = [[1, 2, 3], [1, 2, 4], [1, 5], [6]]
    # prefix frequencies: (1,) 3/4, (1, 2) 2/4, then 1/4 each: (6,), (1, 5), (1, 2, 3), (1, 2, 4)
    assert frequent_openings(seqs, 0.5) == [(1,), (1, 2)]
    assert frequent_openings(seqs, 0.25) == [(1,), (1, 2), (6,), (1, 5), (1, 2, 3), (1, 2, 4)]
    assert frequent_openings(seqs, 0.25, max_nodes=3) == [(1,), (1, 2), (6,)]
    assert frequent_openings(seqs, 0.25, max_depth=1) == [(1,), (6,)]


@pytest.mark.parametrize("seed,memory_dim", [(0, None), (2, 16)])
def test_an_opening_drafted_in_the_prompt_forward_keeps_greedy_output(seed, memory_dim):
    model = _model(seed, memory_dim)
    memory = None if memory_dim is None else torch.randn(1, 9, memory_dim, dtype=torch.float64)
    heads = MedusaHeads(32, 37, num_heads=3).double()
    for p in heads.parameters():
        torch.nn.init.normal_(p, std=0.5)
    prompt = torch.randint(0, 37, (6,), generator=torch.Generator().manual_seed(seed))
    expected = greedy_decode(model, prompt, 30, memory=memory).tolist()
    tree = tree_buffers(default_choices(3, 10))
    plain, plain_stats = medusa_generate(model, heads, prompt, 30, tree=tree, memory=memory)
    w = (expected[0] + 1) % 37
    wrong = [(w,), (w, 5), ((w + 1) % 37,)]  # never the first greedy token
    right = [tuple(expected[:d]) for d in range(1, 6)] + [tuple(expected[:2]) + ((expected[2] + 1) % 37,)]
    for sequences, drafted in [(wrong, 0), (wrong + right, 5)]:
        opening = tree_buffers(sequences)
        got, stats = medusa_generate(model, heads, prompt, 30, tree=tree, memory=memory, opening=opening)
        assert got.tolist() == expected
        if drafted == 0:  # nothing accepted in the prompt forward: the same steps as without an opening
            assert stats.steps == plain_stats.steps
        else:
            assert stats.steps < plain_stats.steps
    # the whole answer drafted: no step after the prompt forward
    got, stats = medusa_generate(model, heads, prompt, 8, tree=tree, memory=memory,
                                 opening=tree_buffers([tuple(expected[:d]) for d in range(1, 9)]))
    assert got.tolist() == expected[:8] and stats.steps == 0
