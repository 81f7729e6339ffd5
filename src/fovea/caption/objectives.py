"""BLIP's three pre-training objectives (Li et al. 2022), for a batch of B image-caption pairs.

`same` (B, B) marks pairs that are positives of each other (identical caption text or the same image):
generated captions repeat, so the contrastive targets spread over every positive and a hard negative is
never a positive.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from fovea.caption.vocab import PAD


def itc_loss(image_emb: torch.Tensor, text_emb: torch.Tensor, scale: torch.Tensor, same: torch.Tensor) -> torch.Tensor:
    """Image-text contrastive: symmetric cross-entropy of scale * cosine similarities (B, B) against targets
    spread uniformly over each row's positives. image_emb, text_emb (B, D) L2-normalised."""
    logits = scale * image_emb @ text_emb.T
    targets = same.float() / same.float().sum(dim=1, keepdim=True)
    return 0.5 * (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets.T))


def sample_hard_negatives(sim: torch.Tensor, same: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """For each row i, one column j drawn with probability softmax(sim[i]) over the non-positives (positives,
    the diagonal included, get probability 0). sim (B, B); returns (B,) indices. A row whose every column is a
    positive has no negative: ValueError (the batch needs two different captions)."""
    weights = torch.softmax(sim.float(), dim=1).masked_fill(same, 0.0)
    if bool((weights.sum(dim=1) <= 0).any()):
        raise ValueError("a batch row has no negative (every caption in the batch is a positive of it): "
                         "draw batches with at least two different captions")
    return torch.multinomial(weights, 1, generator=generator).squeeze(1)


def itm_batch(sim: torch.Tensor, same: torch.Tensor, generator: torch.Generator | None = None):
    """Indices of BLIP's ITM batch: B positives (i, i), B negatives (image i, hard text), B negatives (hard image,
    text i). Returns image_idx (3B,), text_idx (3B,), labels (3B,) with 1 = match."""
    b = sim.shape[0]
    rows = torch.arange(b)
    neg_text = sample_hard_negatives(sim, same, generator)
    neg_image = sample_hard_negatives(sim.T, same.T, generator)
    image_idx = torch.cat([rows, rows, neg_image])
    text_idx = torch.cat([rows, neg_text, rows])
    labels = torch.cat([torch.ones(b), torch.zeros(2 * b)]).long()
    return image_idx, text_idx, labels


def lm_loss(logits: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """Language modelling: logits (B, T, V) at position t predict ids[:, t + 1]; padding ignored."""
    target = ids[:, 1:].masked_fill(ids[:, 1:] == PAD, -100)
    return F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), target.reshape(-1), ignore_index=-100)
