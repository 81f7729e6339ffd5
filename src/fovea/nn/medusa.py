"""Medusa decoding (Cai et al. 2024, arXiv 2401.10774): extra heads on a causal decoder's last hidden
state guess the tokens after the next one; a tree of their top guesses is checked by the base model in
one forward pass with a tree attention mask, and the longest accepted path is kept.

Written from the paper. The base model is duck-typed (`fovea.models.text_decoder.TextDecoder` is one):
`model(ids (1, T), positions=, mask=, cache=) -> (hidden (1, T, D), cache)`, `model.logits(hidden)`,
`model.new_cache(batch, capacity, memory)` and a cache with `.length` and `.keep(start, index)`.

Conventions: head i (0-based) at position t predicts the token at t + 2 + i (the base model's own logits
predict t + 1). A tree is a list of "choices": tuples of per-depth ranks, (0,) = head 0's top guess,
(1, 0) = head 0's second guess followed by head 1's top guess. Trees come from a cost prior
(`default_choices`), as in the paper from the heads' measured top-k accuracies (`choices_from_accuracies`),
or from the measured joint frequency of each path (`head_rank_paths`, `path_probabilities`), sized for the
most expected tokens per unit of a measured step cost (`choices_for_cost`).
Unlike the reference code, stacked residual blocks of one head do NOT share weights (the reference's
`[ResBlock] * L` reuses one instance), and tree nodes are laid out depth-first with the most valuable child
first (`tree_buffers(order="chain")`), so accepting any prefix of the most probable path needs no KV-cache move.
"""

from __future__ import annotations

import heapq
import threading
import time
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn


class MedusaHeads(nn.Module):
    """`num_heads` heads, each `num_layers` residual blocks x + SiLU(W x + b) and a bias-free projection to the
    vocabulary. The residual weights start at zero (biases keep nn.Linear's default init), so a new head reads
    the base model's hidden state (plus SiLU(b)). All heads run as one batched computation: the first block's
    weights of every head are one (K*D, D) matrix (all heads read the same hidden state), later blocks and the
    projections are batched matrix products; no Python loop over heads.
    forward: hidden (..., D) -> logits (num_heads, ..., vocab). `choices`: the candidate tree measured best for
    these heads (None until someone measures it); `medusa_generate` uses it when given no tree."""

    def __init__(self, dim: int, vocab_size: int, num_heads: int = 4, num_layers: int = 1):
        super().__init__()
        self.num_heads, self.dim = num_heads, dim
        bound = dim ** -0.5  # nn.Linear's default init range for biases and the projection
        self.res_weight = nn.Parameter(torch.zeros(num_layers, num_heads, dim, dim))  # (L, K, out, in)
        self.res_bias = nn.Parameter(torch.empty(num_layers, num_heads, dim).uniform_(-bound, bound))
        self.out_weight = nn.Parameter(torch.empty(num_heads, vocab_size, dim).uniform_(-bound, bound))
        self.choices: list[tuple[int, ...]] | None = None  # the tree measured best for these heads, if known

    def _decoding_weights(self, num_heads: int | None = None) -> tuple:
        """The weights packed for decoding (first block as one (K*D, D) matrix, projections pre-transposed
        (K, D, V) and contiguous), packed again after any in-place update (optimizer step, load), cut to the
        first num_heads heads (leading slices of contiguous weights: views, no copy)."""
        params = (self.res_weight, self.res_bias, self.out_weight)
        key = tuple((p.data_ptr(), p._version) for p in params)
        if getattr(self, "_packed_key", None) != key:
            k, d = self.num_heads, self.dim
            with torch.no_grad():
                self._packed = (self.res_weight[0].reshape(k * d, d).clone(),
                                self.res_bias[0].reshape(k * d).clone(),
                                [(w.transpose(1, 2).contiguous(), b[:, None].clone())
                                 for w, b in zip(self.res_weight[1:], self.res_bias[1:])],
                                self.out_weight.transpose(1, 2).contiguous())
            self._packed_key = key
        w0, b0, rest, out = self._packed
        n = self.num_heads if num_heads is None else min(num_heads, self.num_heads)
        if n < self.num_heads:
            w0, b0, rest, out = w0[: n * self.dim], b0[: n * self.dim], [(w[:n], b[:n]) for w, b in rest], out[:n]
        return n, w0, b0, rest, out

    @staticmethod
    def _decode(weights: tuple, hidden: torch.Tensor) -> torch.Tensor:
        n, w0, b0, rest, out = weights
        x = hidden + F.silu(F.linear(hidden, w0, b0).view(n, -1))  # (n, D)
        x = x[:, None]  # (n, 1, D)
        for w, b in rest:
            x = x + F.silu(torch.baddbmm(b, x, w))
        return torch.bmm(x, out)[:, 0]

    @torch.no_grad()
    def decode_logits(self, hidden: torch.Tensor, num_heads: int | None = None) -> torch.Tensor:
        """Inference-only forward for one hidden state (D,) -> (num_heads, vocab) on weights packed once: about
        half the per-call cost of `forward` at decoding sizes. Same values as forward(hidden). num_heads: only
        the first n heads (a tree n deep needs no deeper head); default all."""
        return self._decode(self._decoding_weights(num_heads), hidden)

    def candidates(self, k: int, num_heads: int | None = None) -> Callable[[torch.Tensor], list[int]]:
        """The per-step candidate function of a decoding call: hidden (D,) -> the k best tokens of each of the
        first num_heads heads (default all) as one list, head-major (head 0's k best, best first, ...); call it
        under torch.no_grad(). Five operators per call on buffers it owns (addmm of every head's first block,
        SiLU and residual in place, bmm, topk; one baddbmm per deeper block); same values as `decode_logits`.
        Kept per (thread, k, n) until the weights change (an update or load repacks them): a caption's setup is
        one check, and two threads never share buffers."""
        self._decoding_weights()  # repacks if the weights changed since the last call
        n = self.num_heads if num_heads is None else min(num_heads, self.num_heads)
        key = (threading.get_ident(), k, n)
        kept = self.__dict__.setdefault("_candidate_fns", {})
        hit = kept.get(key)
        if hit is None or hit[0] is not self._packed_key:
            hit = kept[key] = (self._packed_key, self._candidate_fn(k, self._decoding_weights(n)))
        return hit[1]

    def _candidate_fn(self, k: int, weights: tuple) -> Callable[[torch.Tensor], list[int]]:
        """The function `candidates` hands out, on its own buffers (see there)."""
        n, w0, b0, rest, out = weights
        d = self.dim
        w0t = w0.t()  # (D, n*D): addmm reads the transposed view as it is, no copy
        first = w0.new_empty(1, n * d)
        x = first.view(n, 1, d)
        logits = out.new_empty(n, 1, out.shape[-1])
        flat = logits.view(n, -1)
        values, indices = out.new_empty(n, k), torch.empty(n, k, dtype=torch.long)

        def topk(hidden: torch.Tensor) -> list[int]:
            torch.addmm(b0, hidden.reshape(1, d), w0t, out=first)
            F.silu(first, inplace=True)
            y = x.add_(hidden)
            for w, b in rest:
                y = y + F.silu(torch.baddbmm(b, y, w))
            torch.bmm(y, out, out=logits)
            torch.topk(flat, k, dim=-1, out=(values, indices))
            return indices.view(-1).tolist()
        return topk

    @torch.no_grad()
    def decode_topk(self, hidden: torch.Tensor, k: int, num_heads: int | None = None) -> list[int]:
        """`candidates(k, num_heads)(hidden)` for a single call."""
        return self.candidates(k, num_heads)(hidden)

    def __getstate__(self):
        """Pickling (copy, torch.save of the module) leaves out the kept candidate functions (closures)."""
        state = self.__dict__.copy()
        state.pop("_candidate_fns", None)
        return state

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        lead, d, k = hidden.shape[:-1], self.dim, self.num_heads
        h = hidden.reshape(-1, d)  # (N, D)
        first = F.linear(h, self.res_weight[0].reshape(k * d, d), self.res_bias[0].reshape(k * d))
        x = h + F.silu(first.view(-1, k, d).transpose(0, 1))  # (K, N, D)
        for w, b in zip(self.res_weight[1:], self.res_bias[1:]):
            x = x + F.silu(torch.baddbmm(b[:, None], x, w.transpose(1, 2)))
        return torch.bmm(x, self.out_weight.transpose(1, 2)).view(k, *lead, -1)


def medusa_loss(head_logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = -100,
                decay: float = 1.0) -> torch.Tensor:
    """Sum over heads of cross-entropy, head i's logits at t against labels[t + 2 + i], head i weighted decay ** i
    (1: the unweighted sum of Medusa-1; Medusa-2 uses a decay, e.g. 0.8, so the far heads' harder targets pull the
    jointly trained decoder less). head_logits (K, B, T, V); labels (B, T) = the input ids (or ignore_index where
    no loss is wanted)."""
    total = head_logits.new_zeros(())
    for i, logits in enumerate(head_logits):
        shift = 2 + i
        if logits.shape[1] <= shift:
            continue
        total = total + decay ** i * F.cross_entropy(logits[:, :-shift].reshape(-1, logits.shape[-1]),
                                                     labels[:, shift:].reshape(-1), ignore_index=ignore_index)
    return total


@dataclass
class DecodePlan:
    """A tree's per-step constants (see `TreeBuffers.decode_plan`): positions[past] (N+1,) and mask(past)
    (N+1, past + N+1) for a step after `past` cached tokens; tree_index / parent / paths (node indices root to
    node) per node as lists; in_place[node]: its path is 0, 1, ..., d, so accepting it needs no cache gather
    (the path's keys/values are already where they belong); max_depth: the deepest node's depth."""

    positions: list[torch.Tensor]
    window: torch.Tensor
    tree_index: list[int]
    parent: list[int]
    paths: list[list[int]]
    in_place: list[bool]
    max_depth: int
    _masks: list = field(default_factory=list, repr=False, compare=False)

    def mask(self, past: int) -> torch.Tensor:
        """The additive tree-step mask after `past` cached tokens (N+1, past + N+1), contiguous (attention reads
        a strided view more slowly), made on first use per cache length and kept."""
        masks = self._masks
        if not masks:
            masks.extend([None] * (self.window.shape[1] - self.window.shape[0]))  # one per cache length < capacity
        m = masks[past]
        if m is None:
            m = masks[past] = self.window[:, len(masks) - past:].contiguous()
        return m


@dataclass
class TreeBuffers:
    """Tensors describing a candidate tree of N nodes plus the root (node 0 = the base model's next token).
    mask (N+1, N+1) bool: each node sees itself, its ancestors and the root. depth (N+1,): root 0.
    tree_indices (N+1,): where each node's token sits in [base token, top-k of head 0, top-k of head 1, ...].
    retrieve (P, D+1): node indices of each root-to-leaf path, padded with -1. parent (N+1,): each node's
    parent (the root's is itself). topk: candidates per head. node_paths: per node, the node indices from the
    root to it (a (depth+1,) tensor), so an accepted path needs no tensor building during decoding.
    choices: the nodes' rank tuples in node order (node i + 1 = choices[i]); every parent precedes its children."""

    mask: torch.Tensor
    depth: torch.Tensor
    tree_indices: torch.Tensor
    retrieve: torch.Tensor
    parent: torch.Tensor
    topk: int
    choices: list[tuple[int, ...]]
    node_paths: list[torch.Tensor]
    _plans: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def size(self) -> int:
        """Tokens per tree step: the nodes plus the root."""
        return int(self.depth.shape[0])

    def decode_plan(self, capacity: int, dtype: torch.dtype = torch.float32) -> "DecodePlan":
        """Everything a decoding step needs that depends only on the tree and the cache capacity, built once
        per (capacity, dtype) and kept: per number of cached tokens the positions and the mask of the tree
        step (made once each, no tensor built during decoding), and the tree as Python lists."""
        key = (capacity, dtype)
        if key not in self._plans:
            window = self.attention_window(capacity, dtype)
            positions = torch.arange(capacity)[:, None] + self.depth  # row `past` = the tree's positions
            paths = [p.tolist() for p in self.node_paths]
            self._plans[key] = DecodePlan(
                positions=list(positions.unbind(0)), window=window, tree_index=self.tree_indices.tolist(),
                parent=self.parent.tolist(), paths=paths, in_place=[p == list(range(len(p))) for p in paths],
                max_depth=max(len(p) for p in paths) - 1)
        return self._plans[key]

    def attention_window(self, capacity: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """(N+1, capacity + N+1) additive mask: `capacity` open columns, then the tree mask (0 / -inf).
        Its slice [:, capacity - past:] is the tree step's mask over `past` cached tokens plus the tree."""
        window = torch.zeros(self.size, capacity + self.size, dtype=dtype)
        window[:, capacity:].masked_fill_(~self.mask, float("-inf"))
        return window


def tree_buffers(choices: list[tuple[int, ...]], order: str = "chain") -> TreeBuffers:
    """Build the buffers of a tree from its choices (every prefix of a choice must be a choice too).

    order: how the nodes are laid out (node i + 1 = the i-th choice; the tree step writes node i's keys/values
    at cache slot past + i). "chain" (default): depth first, siblings in the order `choices` lists them, so
    with choices listed most valuable first (as `path_probabilities`, `choices_for_cost`,
    `choices_from_accuracies` and `default_choices` list them) the most probable path sits in slots 1, 2, ...,
    d and accepting any prefix of it needs no KV-cache move. "depth": by depth, then by ranks."""
    unique = list(dict.fromkeys(tuple(c) for c in choices))
    known = set(unique)
    for c in unique:
        if len(c) > 1 and c[:-1] not in known:
            raise ValueError(f"tree choice {c} has no parent {c[:-1]}: every prefix of a path must be in the tree")
    if order == "depth":
        choices = sorted(unique, key=lambda c: (len(c), c))
    elif order == "chain":
        children: dict[tuple[int, ...], list[tuple[int, ...]]] = {}
        for c in unique:
            children.setdefault(c[:-1], []).append(c)
        choices, stack = [], list(reversed(children.get((), [])))
        while stack:  # depth-first preorder, first-listed child first
            c = stack.pop()
            choices.append(c)
            stack.extend(reversed(children.get(c, [])))
    else:
        raise ValueError(f"tree order {order!r}: use 'chain' or 'depth'")
    index = {c: i + 1 for i, c in enumerate(choices)}
    n = len(choices) + 1
    topk = max(c[-1] for c in choices) + 1
    mask = torch.eye(n, dtype=torch.bool)
    mask[:, 0] = True
    depth = torch.zeros(n, dtype=torch.long)
    tree_indices = torch.zeros(n, dtype=torch.long)
    parent = torch.zeros(n, dtype=torch.long)
    for c, i in index.items():
        depth[i] = len(c)
        parent[i] = index.get(c[:-1], 0)
        tree_indices[i] = 1 + topk * (len(c) - 1) + c[-1]
        for j in range(1, len(c)):
            mask[i, index[c[:j]]] = True
    leaves = [c for c in choices if not any(len(o) == len(c) + 1 and o[:-1] == c for o in choices)]
    width = max(len(c) for c in choices) + 1
    retrieve = torch.full((len(leaves), width), -1, dtype=torch.long)
    for p, c in enumerate(leaves):
        retrieve[p, 0] = 0
        for j in range(1, len(c) + 1):
            retrieve[p, j] = index[c[:j]]
    node_paths = [torch.tensor([0] + [index[c[:j]] for j in range(1, len(c) + 1)]) for c in [()] + choices]
    return TreeBuffers(mask, depth, tree_indices, retrieve, parent, topk, choices, node_paths)


def default_choices(num_heads: int = 4, nodes: int = 24, max_rank: int = 8) -> list[tuple[int, ...]]:
    """The `nodes` paths of lowest cost prod(rank + 1) (a prior that head guesses of lower rank and shallower
    depth are more often right) over depths <= num_heads and ranks < max_rank; ties: shorter, then
    lexicographic. A child costs at least its parent and is only queued after it, so the set is prefix-closed."""
    heap = [(r + 1, 1, (r,)) for r in range(max_rank)]
    heapq.heapify(heap)
    chosen: list[tuple[int, ...]] = []
    while heap and len(chosen) < nodes:
        cost, length, c = heapq.heappop(heap)
        chosen.append(c)
        if length < num_heads:
            for r in range(max_rank):
                heapq.heappush(heap, (cost * (r + 1), length + 1, c + (r,)))
    return chosen


def choices_from_accuracies(accuracy: torch.Tensor, nodes: int) -> list[tuple[int, ...]]:
    """The tree of `nodes` paths with the highest estimated acceptance probability, as the Medusa paper builds
    its sparse trees: a path (r_1, ..., r_d) is accepted with probability prod_j accuracy[j-1, r_j] (heads
    independent), and the expected tokens per step is 1 + the sum of that over the tree's nodes, so the best
    tree of a given size takes the most probable paths. accuracy (K, topk): head k's rank-r guess is right
    with probability accuracy[k, r] (see `head_accuracies`). A child is never more probable than its parent
    and is queued only after it, so the set is prefix-closed. Ties: shorter, then lexicographic."""
    acc = accuracy.double().tolist()
    heap = [(-p, 1, (r,)) for r, p in enumerate(acc[0])]
    heapq.heapify(heap)
    chosen: list[tuple[int, ...]] = []
    while heap and len(chosen) < nodes:
        neg_p, length, c = heapq.heappop(heap)
        chosen.append(c)
        if length < len(acc):
            for r, p in enumerate(acc[length]):
                heapq.heappush(heap, (neg_p * p, length + 1, c + (r,)))
    return chosen


@torch.no_grad()
def head_rank_paths(head_logits: torch.Tensor, labels: torch.Tensor, topk: int, ignore_index: int = -100
                    ) -> torch.Tensor:
    """Per position t that has a next token: the rank of the token t + 2 + i among head i's top-k guesses at t
    (`topk` if it is not among them; -1 where the sequence has ended). head_logits (K, B, T, V), labels (B, T)
    -> (N, K), N = positions with labels[t + 1] != ignore_index. Row t is the tree path greedy acceptance
    would take from t: the nodes (r_1), (r_1, r_2), ... are accepted while r_j < topk."""
    k, b, t, _ = head_logits.shape
    out = torch.full((b, t, k), -1, dtype=torch.long)
    top = head_logits.topk(topk, dim=-1).indices  # (K, B, T, topk)
    for i in range(k):
        shift = 2 + i
        if t <= shift:
            continue
        target = labels[:, shift:]  # (B, T - shift)
        hit = top[i, :, : t - shift] == target[..., None]
        rank = torch.where(hit.any(-1), hit.long().argmax(-1), torch.full_like(target, topk))
        out[:, : t - shift, i] = rank.masked_fill(target == ignore_index, -1)
    has_next = torch.zeros(b, t, dtype=torch.bool)
    has_next[:, :-1] = labels[:, 1:] != ignore_index
    return out[has_next]


def path_probabilities(rank_paths: torch.Tensor, topk: int) -> list[tuple[tuple[int, ...], float]]:
    """Every tree node (rank tuple) with the fraction of positions whose greedy-acceptance path passes through
    it, most frequent first (ties: shorter, then lexicographic), from `head_rank_paths` (N, K). Unlike the
    product of per-head accuracies, these joint frequencies keep the heads' correlated errors (a wrong
    attribute word fails every later head). A node's expected contribution to the tokens of a step is its
    frequency, so the best tree of n nodes is the first n entries (prefix-closed: a prefix is at least as
    frequent and sorts first on ties)."""
    counts: dict[tuple[int, ...], int] = {}
    for row in rank_paths.tolist():
        prefix: tuple[int, ...] = ()
        for r in row:
            if r < 0 or r >= topk:
                break
            prefix = prefix + (r,)
            counts[prefix] = counts.get(prefix, 0) + 1
    n = max(len(rank_paths), 1)
    return sorted(((c, v / n) for c, v in counts.items()), key=lambda cv: (-cv[1], len(cv[0]), cv[0]))


def choices_for_cost(ranked: list[tuple[tuple[int, ...], float]], step_cost_fixed: float, step_cost_per_token: float,
                     max_nodes: int | None = None) -> list[tuple[int, ...]]:
    """The tree that maximises expected tokens per unit of step cost: nodes are taken in the order of `ranked`
    ((choice, expected gain) most valuable first, from `path_probabilities`, or the accuracies' path
    probabilities), as long as the next node's gain per its marginal cost beats the tree's tokens per cost,
    i.e. (1 + sum gain) / (fixed + per_token * (nodes + 1)) still rises. A step's cost is modelled as
    fixed + per_token * tokens (tree + root), with both measured. Returns the choices (prefix-closed when
    `ranked` is)."""
    chosen: list[tuple[int, ...]] = []
    tokens = 1.0
    for c, gain in ranked[: max_nodes or len(ranked)]:
        n = len(chosen) + 1  # tokens in the step now (nodes + root)
        if (tokens + gain) / (step_cost_fixed + step_cost_per_token * (n + 1)) <= \
                tokens / (step_cost_fixed + step_cost_per_token * n):
            break
        chosen.append(c)
        tokens += gain
    return chosen


def expected_tokens_per_step(choices: list[tuple[int, ...]], accuracy: torch.Tensor) -> float:
    """1 (the base token) + sum over nodes of prod_j accuracy[j-1, r_j]: the tokens a step is expected to
    produce if the heads' guesses are independent (the paper's estimate for choosing trees)."""
    acc = accuracy.double()
    return 1.0 + sum(float(torch.stack([acc[j, r] for j, r in enumerate(c)]).prod()) for c in choices)


@torch.no_grad()
def head_accuracies(head_logits: torch.Tensor, labels: torch.Tensor, topk: int, ignore_index: int = -100
                    ) -> torch.Tensor:
    """(K, topk): fraction of positions where head i's rank-r guess equals the label 2 + i tokens ahead.
    head_logits (K, B, T, V), labels (B, T) (ignore_index where there is no token)."""
    out = torch.zeros(len(head_logits), topk, dtype=torch.float64)
    for i, logits in enumerate(head_logits):
        shift = 2 + i
        target = labels[:, shift:]
        keep = target != ignore_index
        if logits.shape[1] <= shift or not bool(keep.any()):
            continue
        guesses = logits[:, :-shift].topk(topk, dim=-1).indices  # (B, T - shift, topk)
        hits = (guesses == target[..., None]) & keep[..., None]
        out[i] = hits.sum(dim=(0, 1)).double() / keep.sum()
    return out


def accept_lengths(candidates: torch.Tensor, logits: torch.Tensor, valid: torch.Tensor, *,
                   temperature: float = 0.0, epsilon: float = 0.09, delta: float = 0.3) -> torch.Tensor:
    """How many head tokens of each path the base model accepts. candidates (P, D+1) token ids (column 0 =
    the base token), logits (P, D+1, V) the base model's logits at those nodes, valid (P, D+1) False on
    padding. Greedy (temperature 0): candidate j+1 must equal argmax of logits j. Typical acceptance
    (temperature > 0): p(candidate) > min(epsilon, delta * exp(-H(p))) with p = softmax(logits / temperature)."""
    if temperature == 0.0:
        ok = candidates[:, 1:] == logits[:, :-1].argmax(-1)
    else:
        p = torch.softmax(logits[:, :-1] / temperature, dim=-1)
        entropy = -(p * torch.log(p.clamp_min(1e-12))).sum(-1)
        threshold = torch.minimum(torch.full_like(entropy, epsilon), delta * torch.exp(-entropy))
        ok = p.gather(-1, candidates[:, 1:, None]).squeeze(-1) > threshold
    ok = ok & valid[:, 1:]
    return ok.long().cumprod(dim=1).sum(dim=1)


def node_acceptance(tokens: torch.Tensor, logits: torch.Tensor, parent: torch.Tensor, *, temperature: float = 0.0,
                    epsilon: float = 0.09, delta: float = 0.3) -> torch.Tensor:
    """Per tree node: is its token accepted by the base model's distribution at its parent node? Same rules as
    `accept_lengths`, evaluated once per node instead of once per path. tokens (N+1,), logits (N+1, V),
    parent (N+1,) -> (N+1,) bool (the root's entry is meaningless)."""
    if temperature == 0.0:
        return tokens == logits.argmax(-1)[parent]
    p = torch.softmax(logits / temperature, dim=-1)
    entropy = -(p * torch.log(p.clamp_min(1e-12))).sum(-1)
    threshold = torch.clamp(delta * torch.exp(-entropy), max=epsilon)
    return p[parent, tokens] > threshold[parent]


def greedy_accepted_node(tokens: list[int], argmax: list[int], parent: list[int]) -> int:
    """Greedy acceptance walked over the tree once: node i is accepted if its parent is and its token is the
    base model's argmax at the parent. Siblings carry different tokens, so the accepted nodes form one chain
    from the root; returns its last node (0 if no head token is accepted). Every parent must precede its
    children (as in both of `tree_buffers`' orders). Plain Python on lists: a few microseconds for a small
    tree, where the same on tensors costs several operator calls."""
    accepted = [True] + [False] * (len(tokens) - 1)
    end = 0
    for i in range(1, len(tokens)):
        j = parent[i]
        if accepted[j] and tokens[i] == argmax[j]:
            accepted[i] = True
            end = i
    return end


@dataclass
class MedusaStats:
    """steps: base-model forwards after the prompt; tokens: generated; cache_moves: steps whose accepted path had
    to be moved into place in the KV cache (`KVCache.keep`); mean accepted tokens per step."""

    steps: int
    tokens: int
    cache_moves: int = 0

    @property
    def tokens_per_step(self) -> float:
        return self.tokens / max(self.steps, 1)


def _no_clock() -> float:
    return 0.0


def frequent_openings(sequences: list[list[int]], min_frequency: float, max_nodes: int = 64, max_depth: int = 16
                      ) -> list[tuple[int, ...]]:
    """The token prefixes (openings) that at least `min_frequency` of the sequences start with, most frequent
    first (ties: shorter, then lexicographic; at most max_nodes, each at most max_depth tokens): a prefix-closed
    tree of token tuples for `medusa_generate(opening=...)`."""
    counts: dict[tuple[int, ...], int] = {}
    for seq in sequences:
        for d in range(1, min(len(seq), max_depth) + 1):
            counts[tuple(seq[:d])] = counts.get(tuple(seq[:d]), 0) + 1
    n = max(len(sequences), 1)
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], len(kv[0]), kv[0]))
    return [c for c, k in ranked if k / n >= min_frequency][:max_nodes]


@torch.no_grad()
def _prompt_with_opening(model, prompt: torch.Tensor, opening: TreeBuffers, cache):
    """The prompt forward with a fixed tree of opening token sequences after it (prompt-time drafting): node i
    (token = its choice's last entry) sits at position T - 1 + depth and sees the prompt, its ancestors and
    itself. Returns (hidden at the prompt's last token and at every node (M+1, D), argmax there as a list,
    node tokens with a placeholder for the root)."""
    t = len(prompt)
    node_tokens = [c[-1] for c in opening.choices]
    m = len(node_tokens)
    mask = torch.zeros(t + m, t + m, dtype=torch.bool)
    mask[:t, :t] = torch.ones(t, t, dtype=torch.bool).tril()
    mask[t:, :t] = True
    mask[t:, t:] = opening.mask[1:, 1:]
    positions = torch.cat([torch.arange(t), t - 1 + opening.depth[1:]])
    hidden, _ = model(torch.cat([prompt, torch.tensor(node_tokens, dtype=prompt.dtype)])[None], positions=positions,
                      mask=mask, cache=cache)
    hidden = hidden[0, t - 1:]
    return hidden, model.logits(hidden).argmax(-1).tolist(), [-1] + node_tokens


@torch.no_grad()
def medusa_generate(model, heads: MedusaHeads, prompt: torch.Tensor, max_new_tokens: int, *,
                    tree: TreeBuffers | None = None, eos: int | None = None, memory: torch.Tensor | None = None,
                    temperature: float = 0.0, epsilon: float = 0.09, delta: float = 0.3,
                    opening: TreeBuffers | None = None, timings: dict[str, float] | None = None
                    ) -> tuple[torch.Tensor, MedusaStats]:
    """Decode up to `max_new_tokens` after `prompt` (T,) with the base model checking Medusa's tree.
    The base token of each step is the base model's argmax, so with temperature 0 (greedy acceptance) the
    output equals `greedy_decode`'s. Returns generated ids (N,) and the step statistics.

    tree: the candidate tree; None = the tree the heads carry (`heads.choices`, set from measurements of
    these heads, e.g. by `fovea.caption.train.train_medusa_heads`); a tree is required otherwise, since the
    best tree depends on how often each head is right (`path_probabilities`, `choices_for_cost`).

    Per step: the top-k guesses at the last accepted token of the heads the tree reaches
    (`MedusaHeads.candidates`) fill the tree (on Python lists); one base forward over the tree (positions
    past + depth, additive tree mask beside the cache, keys/values written into the preallocated cache; both
    from the tree's `decode_plan`); per-node acceptance; the accepted path's keys/values are moved into place
    with one gather (`KVCache.keep`; none when the path already is in place, as any prefix of the most
    probable path is in a "chain"-ordered tree). The next base token is the argmax already computed at the
    path's last node. Greedy acceptance runs on Python lists (`greedy_accepted_node`), typical acceptance on
    tensors.

    opening: optional prompt-time draft (an extension, not part of Medusa): a tree of token sequences
    (`tree_buffers(frequent_openings(...))`, choices = token tuples) verified greedily in the prompt forward
    itself, so frequent openings cost no extra forward; the output is still exactly greedy's.

    timings: a dict that receives (adds) this thread's CPU seconds per part of the tree steps: "candidates"
    (heads, top-k, the tree's tokens), "tree forward", "acceptance" (logits, argmax, acceptance walk), "cache
    move" (`KVCache.keep` after acceptance); None (default): no clock is read."""
    if tree is None:
        if not getattr(heads, "choices", None):
            raise ValueError("medusa_generate needs a tree: pass tree=tree_buffers(choices), with choices from the "
                             "heads' measured accuracies (path_probabilities + choices_for_cost, or "
                             "choices_from_accuracies), or set heads.choices")
        key = tuple(heads.choices)
        if getattr(heads, "_choices_tree", (None,))[0] != key:  # built once per tree, not once per call
            heads._choices_tree = (key, tree_buffers(heads.choices))
        tree = heads._choices_tree[1]
    depth, topk = max(len(c) for c in tree.choices), tree.topk  # heads deeper than the tree are not run
    if depth > heads.num_heads:
        raise ValueError(f"the tree is {depth} deep but there are only {heads.num_heads} Medusa heads")
    capacity = len(prompt) + max_new_tokens + max(tree.size, opening.size if opening is not None else 0)
    cache = model.new_cache(1, capacity, memory)
    out: list[int] = []
    steps = 0
    if opening is None:
        hidden, _ = model(prompt[None], cache=cache)
        last = hidden[0, -1]  # (D,)
        base = int(model.logits(last).argmax(-1))
    else:
        node_hidden, argmax, node_tokens = _prompt_with_opening(model, prompt, opening, cache)
        end = greedy_accepted_node(node_tokens, argmax, opening.parent.tolist())
        path = opening.node_paths[end]
        accepted = [node_tokens[i] for i in path.tolist()[1:]]  # the root is the prompt's last token
        if eos is not None and eos in accepted:
            accepted = accepted[: accepted.index(eos) + 1]
        out += accepted[:max_new_tokens]
        if out and ((eos is not None and out[-1] == eos) or len(out) >= max_new_tokens):
            return torch.tensor(out, dtype=torch.long), MedusaStats(steps, len(out))
        cache.keep(len(prompt) - 1, path)
        last, base = node_hidden[end], argmax[end]
    plan = tree.decode_plan(capacity, last.dtype)
    if temperature != 0.0:
        body, body_valid = tree.retrieve[:, 1:].clamp_min(0), tree.retrieve[:, 1:] >= 0  # (P, D)
    if hasattr(heads, "candidates"):
        guesses = heads.candidates(topk, depth)
    else:  # any module hidden (D,) -> logits (K, V)
        def guesses(hidden):
            return heads(hidden)[:depth].topk(topk, dim=-1).indices.reshape(-1).tolist()
    pick = itemgetter(*plan.tree_index)
    clock = time.thread_time if timings is not None else _no_clock
    spent = [0.0, 0.0, 0.0, 0.0]  # candidates, forward, acceptance, cache (thread CPU s; only with timings)
    moves = 0
    while True:
        t0 = clock()
        token_list = list(pick([base] + guesses(last)))  # (N+1,) from [base, head 0's top-k, ...]
        tokens = torch.tensor([token_list])
        past = cache.length
        t1 = clock()
        node_hidden, _ = model(tokens, positions=plan.positions[past], mask=plan.mask(past), cache=cache)
        node_hidden = node_hidden[0]
        steps += 1
        t2 = clock()
        node_logits = model.logits(node_hidden)  # (N+1, V)
        argmax = node_logits.argmax(-1).tolist()
        if temperature == 0.0:
            end = greedy_accepted_node(token_list, argmax, plan.parent)
        else:
            ok = node_acceptance(tokens[0], node_logits, tree.parent, temperature=temperature, epsilon=epsilon,
                                 delta=delta)
            lengths = (ok[body] & body_valid).cumprod(dim=1).sum(dim=1)  # (P,)
            best = int(lengths.argmax())
            end = int(tree.retrieve[best, int(lengths[best])])
        accepted = [token_list[i] for i in plan.paths[end]]
        if eos is not None and eos in accepted:
            accepted = accepted[: accepted.index(eos) + 1]
        out += accepted[: max_new_tokens - len(out)]
        t3 = clock()
        spent[0] += t1 - t0
        spent[1] += t2 - t1
        spent[2] += t3 - t2
        if (eos is not None and out[-1] == eos) or len(out) >= max_new_tokens:
            break
        if plan.in_place[end]:
            cache.length = past + len(plan.paths[end])
        else:
            cache.keep(past, tree.node_paths[end])
            moves += 1
        last, base = node_hidden[end], argmax[end]
        spent[3] += clock() - t3
    if timings is not None:
        for name, value in zip(("candidates", "tree forward", "acceptance", "cache move"), spent):
            timings[name] = timings.get(name, 0.0) + value
    return torch.tensor(out, dtype=torch.long), MedusaStats(steps, len(out), moves)
