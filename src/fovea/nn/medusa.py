"""Medusa decoding (Cai et al. 2024, arXiv 2401.10774): extra heads on a causal decoder's last hidden
state guess the tokens after the next one; a tree of their top guesses is checked by the base model in
one forward pass with a tree attention mask, and the longest accepted path is kept.

Written from the paper. The base model is duck-typed (`fovea.models.text_decoder.TextDecoder` is one):
`model(ids (1, T), positions=, mask=, cache=, memory=) -> (hidden (1, T, D), cache)`, `model.logits(hidden)`,
and a cache with `.length` and `.select(index)`.

Conventions: head i (0-based) at position t predicts the token at t + 2 + i (the base model's own logits
predict t + 1). A tree is a list of "choices": tuples of per-depth ranks, (0,) = head 0's top guess,
(1, 0) = head 0's second guess followed by head 1's top guess. Unlike the reference code, stacked
residual blocks of one head do NOT share weights (the reference's `[ResBlock] * L` reuses one instance).
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


class ResBlock(nn.Module):
    """x + SiLU(Linear(x)), weight zero-initialised so a new head starts as the base model's hidden state."""

    def __init__(self, dim: int):
        super().__init__()
        self.linear = nn.Linear(dim, dim)
        nn.init.zeros_(self.linear.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + F.silu(self.linear(x))


class MedusaHeads(nn.Module):
    """`num_heads` heads, each `num_layers` ResBlocks + a bias-free Linear to the vocabulary.
    forward: hidden (..., D) -> logits (num_heads, ..., vocab)."""

    def __init__(self, dim: int, vocab_size: int, num_heads: int = 4, num_layers: int = 1):
        super().__init__()
        self.heads = nn.ModuleList(
            nn.Sequential(*[ResBlock(dim) for _ in range(num_layers)], nn.Linear(dim, vocab_size, bias=False))
            for _ in range(num_heads))

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return torch.stack([h(hidden) for h in self.heads])


def medusa_loss(head_logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = -100) -> torch.Tensor:
    """Sum over heads of cross-entropy, head i's logits at t against labels[t + 2 + i].
    head_logits (K, B, T, V); labels (B, T) = the input ids (or ignore_index where no loss is wanted)."""
    total = head_logits.new_zeros(())
    for i, logits in enumerate(head_logits):
        shift = 2 + i
        if logits.shape[1] <= shift:
            continue
        total = total + F.cross_entropy(logits[:, :-shift].reshape(-1, logits.shape[-1]),
                                        labels[:, shift:].reshape(-1), ignore_index=ignore_index)
    return total


@dataclass
class TreeBuffers:
    """Tensors describing a candidate tree of N nodes plus the root (node 0 = the base model's next token).
    mask (N+1, N+1) bool: each node sees itself, its ancestors and the root. depth (N+1,): root 0.
    tree_indices (N+1,): where each node's token sits in [base token, top-k of head 0, top-k of head 1, ...].
    retrieve (P, D+1): node indices of each root-to-leaf path, padded with -1. topk: candidates per head."""

    mask: torch.Tensor
    depth: torch.Tensor
    tree_indices: torch.Tensor
    retrieve: torch.Tensor
    topk: int
    choices: list[tuple[int, ...]]


def tree_buffers(choices: list[tuple[int, ...]]) -> TreeBuffers:
    """Build the buffers of a tree from its choices (every prefix of a choice must be a choice too)."""
    choices = sorted({tuple(c) for c in choices}, key=lambda c: (len(c), c))
    index = {c: i + 1 for i, c in enumerate(choices)}
    for c in choices:
        if len(c) > 1 and c[:-1] not in index:
            raise ValueError(f"tree choice {c} has no parent {c[:-1]}: every prefix of a path must be in the tree")
    n = len(choices) + 1
    topk = max(c[-1] for c in choices) + 1
    mask = torch.eye(n, dtype=torch.bool)
    mask[:, 0] = True
    depth = torch.zeros(n, dtype=torch.long)
    tree_indices = torch.zeros(n, dtype=torch.long)
    for c, i in index.items():
        depth[i] = len(c)
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
    return TreeBuffers(mask, depth, tree_indices, retrieve, topk, choices)


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


@dataclass
class MedusaStats:
    """steps: base-model forwards after the prompt; tokens: generated; mean accepted tokens per step."""

    steps: int
    tokens: int

    @property
    def tokens_per_step(self) -> float:
        return self.tokens / max(self.steps, 1)


@torch.no_grad()
def medusa_generate(model, heads: MedusaHeads, prompt: torch.Tensor, max_new_tokens: int, *,
                    tree: TreeBuffers | None = None, eos: int | None = None, memory: torch.Tensor | None = None,
                    temperature: float = 0.0, epsilon: float = 0.09, delta: float = 0.3
                    ) -> tuple[torch.Tensor, MedusaStats]:
    """Decode up to `max_new_tokens` after `prompt` (T,) with the base model checking Medusa's tree.
    The base token of each step is the base model's argmax, so with temperature 0 (greedy acceptance) the
    output equals `greedy_decode`'s. Returns generated ids (N,) and the step statistics."""
    tree = tree or tree_buffers(default_choices(len(heads.heads)))
    if tree.depth.max() > len(heads.heads):
        raise ValueError(f"the tree is {int(tree.depth.max())} deep but there are only {len(heads.heads)} Medusa heads")
    hidden, cache = model(prompt[None], memory=memory)
    last = hidden[:, -1]
    out: list[int] = []
    steps = 0
    valid = tree.retrieve >= 0
    retrieve = tree.retrieve.clamp_min(0)
    while len(out) < max_new_tokens:
        base = model.logits(last).argmax(-1)  # (1,)
        guesses = heads(last)[:, 0].topk(tree.topk, dim=-1).indices.reshape(-1)  # (K * topk,)
        tree_tokens = torch.cat([base, guesses])[tree.tree_indices]  # (N+1,)
        past = cache.length
        mask = torch.cat([torch.ones(len(tree_tokens), past, dtype=torch.bool), tree.mask], dim=1)
        tree_hidden, tree_cache = model(tree_tokens[None], positions=past + tree.depth, mask=mask, cache=cache,
                                        memory=memory)
        steps += 1
        node_logits = model.logits(tree_hidden[0])  # (N+1, V)
        lengths = accept_lengths(tree_tokens[retrieve], node_logits[retrieve], valid, temperature=temperature,
                                 epsilon=epsilon, delta=delta)
        best = int(lengths.argmax())
        path = retrieve[best, : int(lengths[best]) + 1]
        accepted = tree_tokens[path].tolist()
        if eos is not None and eos in accepted:
            accepted = accepted[: accepted.index(eos) + 1]
        accepted = accepted[: max_new_tokens - len(out)]
        out += accepted
        if (eos is not None and out[-1] == eos) or len(out) >= max_new_tokens:
            break
        cache = tree_cache.select(torch.cat([torch.arange(past), past + path]))
        last = tree_hidden[:, path[-1]]
    return torch.tensor(out, dtype=torch.long), MedusaStats(steps, len(out))
