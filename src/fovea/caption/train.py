"""Training the captioner with BLIP's objectives (ITC + ITM with hard negatives + LM) on generated apple
captions, then Medusa heads on the frozen decoder (Medusa-1) or trained jointly with it (Medusa-2); evaluation
with BLEU-4, CIDEr-D and read-back attributes.

The image backbone is frozen by default (its ImageNet features are computed once per image): on a 2-core CPU
that makes a training run minutes instead of hours; the projection of its tokens is trained. The decoder is
taught each image's full inspection caption (the first phrasing); ITC and ITM see every phrasing.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, replace
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from fovea.caption.metrics import attribute_accuracy, bleu4, cider_d
from fovea.caption.objectives import itc_loss, itm_batch, lm_loss
from fovea.caption.pipeline import CaptionPipeline
from fovea.caption.vocab import BOS, EOS, PAD, Vocab
from fovea.errors import DataError
from fovea.models.captioner import Captioner, CaptionerConfig
from fovea.models.text_decoder import greedy_decode
from fovea.nn.medusa import (MedusaHeads, TreeBuffers, choices_for_cost, choices_from_accuracies, head_accuracies,
                             head_rank_paths, medusa_generate, medusa_loss, path_probabilities, tree_buffers)
from fovea.synth.captions import CaptionSample, apple_caption_sample


@dataclass
class CaptionTrainConfig:
    steps: int = 800
    batch: int = 32
    lr: float = 2e-3
    seed: int = 0
    input_size: int = 96
    itc_weight: float = 1.0
    itm_weight: float = 1.0
    lm_weight: float = 1.0


def apple_caption_set(n: int, seed: int = 0, size: int = 96) -> list[CaptionSample]:
    """n apple crops with captions from their ground truth, alternating damaged and good (deterministic)."""
    rng = np.random.default_rng(seed)
    return [apple_caption_sample(rng, size, damaged=(i % 2 == 0)) for i in range(n)]


@torch.no_grad()
def _backbone_tokens(pipe: CaptionPipeline, images: Sequence[np.ndarray], batch: int = 64) -> torch.Tensor:
    """Frozen backbone features (N, h*w, C) of uint8 (H, W, 3) images."""
    out = []
    for s in range(0, len(images), batch):
        x = pipe.preprocess(torch.from_numpy(np.stack(images[s:s + batch])))
        out.append(pipe.captioner.backbone(x)[-1].flatten(2).transpose(1, 2))
    return torch.cat(out)


def train_captioner(samples: Sequence[CaptionSample], model_cfg: CaptionerConfig | None = None,
                    cfg: CaptionTrainConfig | None = None, progress: Callable[[int, dict], None] | None = None
                    ) -> tuple[CaptionPipeline, list[dict]]:
    """Train a captioner on (image, captions) samples; returns the pipeline (eval mode) and per-step losses."""
    cfg = cfg or CaptionTrainConfig()
    model_cfg = model_cfg or CaptionerConfig()
    if len({s.captions[0] for s in samples}) < 2:
        raise DataError(f"{len(samples)} training samples with fewer than two different captions: contrastive and "
                        "matching losses need different captions. Fix: give more varied samples.")
    torch.manual_seed(cfg.seed)
    vocab = Vocab.build(c for s in samples for c in s.captions)
    model_cfg = replace(model_cfg, text=replace(model_cfg.text, vocab_size=len(vocab)))
    pipe = CaptionPipeline(Captioner(model_cfg), vocab, (cfg.input_size, cfg.input_size))
    cap = pipe.captioner
    cap.backbone.requires_grad_(False).eval()
    feats = _backbone_tokens(pipe, [s.image for s in samples])
    params = [p for n, p in cap.named_parameters() if not n.startswith("backbone.")]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, cfg.lr, total_steps=cfg.steps, pct_start=0.1)
    gen = torch.Generator().manual_seed(cfg.seed)
    max_len = model_cfg.text.max_len
    history = []
    for step in range(cfg.steps):
        idx = torch.randperm(len(samples), generator=gen)[: cfg.batch]
        picks = [samples[i].captions[int(torch.randint(len(samples[i].captions), (1,), generator=gen))] for i in idx]
        ids, pad = vocab.batch(picks, max_len)
        lm_ids, _ = vocab.batch([samples[i].captions[0] for i in idx], max_len)
        same = torch.tensor([[a == b for b in picks] for a in picks])
        memory = cap.image_proj(feats[idx])
        img_emb, txt_emb = cap.image_embedding(memory), cap.text_embedding(ids, pad)
        l_itc = itc_loss(img_emb, txt_emb, cap.logit_scale.exp().clamp(max=100), same)
        ii, tt, labels = itm_batch((img_emb @ txt_emb.T).detach(), same, gen)
        l_itm = torch.nn.functional.cross_entropy(cap.itm_logits(ids[tt], pad[tt], memory[ii]), labels)
        l_lm = lm_loss(cap.lm_logits(lm_ids, memory), lm_ids)
        loss = cfg.itc_weight * l_itc + cfg.itm_weight * l_itm + cfg.lm_weight * l_lm
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        rec = {"step": step, **{k: float(v.detach()) for k, v in
                                (("loss", loss), ("itc", l_itc), ("itm", l_itm), ("lm", l_lm))}}
        history.append(rec)
        if progress:
            progress(step, rec)
    return pipe.eval(), history


@torch.no_grad()
def _greedy_targets(cap: Captioner, feats: torch.Tensor, batch: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """The decoder's own greedy captions of backbone features (N, h*w, C): ids (N, 1 + L) starting with BOS and
    padding flags (N, 1 + L), True after the first EOS (self-distillation targets for Medusa heads)."""
    rows = []
    for s in range(0, len(feats), batch):
        tokens, _ = cap.generate(cap.image_proj(feats[s:s + batch]), BOS)
        rows.append(tokens)
    tokens = torch.cat(rows)
    ended = (tokens == EOS).long().cumsum(1)
    pad = torch.cat([torch.zeros(len(tokens), 1, dtype=torch.bool), (ended - (tokens == EOS).long()) > 0], 1)
    ids = torch.cat([torch.full((len(tokens), 1), BOS), tokens], 1).masked_fill(pad, PAD)
    return ids, pad


def train_medusa_heads(pipe: CaptionPipeline, samples: Sequence[CaptionSample], num_heads: int = 4,
                       steps: int = 400, batch: int = 32, lr: float = 3e-3, seed: int = 0,
                       self_distill: bool = True, num_layers: int = 1) -> MedusaHeads:
    """Medusa-1: heads on the frozen decoder's last hidden state, head i trained on tokens shifted by 2 + i.
    self_distill (default): the targets are the decoder's own greedy captions of the training images (the
    Medusa paper's self-distillation), so the heads learn what greedy acceptance will check them against
    (the decoder's words, not the ground truth it sometimes misses); False: the samples' first captions.
    num_layers: residual blocks per head (the paper's default 1)."""
    cap = pipe.captioner
    torch.manual_seed(seed)
    heads = MedusaHeads(cap.text.cfg.dim, len(pipe.vocab), num_heads, num_layers)
    feats = _backbone_tokens(pipe, [s.image for s in samples])
    if self_distill:
        all_ids, all_pad = _greedy_targets(cap, feats)
    else:
        all_ids, all_pad = pipe.vocab.batch([s.captions[0] for s in samples], cap.text.cfg.max_len)
    opt = torch.optim.AdamW(heads.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        idx = torch.randperm(len(samples), generator=gen)[:batch]
        ids, pad = all_ids[idx], all_pad[idx]
        with torch.no_grad():
            hidden, _ = cap.text(ids, memory=cap.image_proj(feats[idx]))
        loss = medusa_loss(heads(hidden), ids.masked_fill(pad, -100))
        opt.zero_grad()
        loss.backward()
        opt.step()
    return heads.eval()


def train_medusa2(pipe: CaptionPipeline, samples: Sequence[CaptionSample], heads: MedusaHeads, steps: int = 1000,
                  batch: int = 32, decoder_lr: float = 3e-4, lr: float = 3e-3, head_weight: float = 0.2,
                  decay: float = 0.8, seed: int = 0) -> tuple[CaptionPipeline, MedusaHeads]:
    """Medusa-2: the text decoder fine-tuned jointly with its heads; returns new (pipeline, heads), and `pipe` and
    `heads` are left as they were. Start from Medusa-1 heads (`train_medusa_heads`): the paper's warm-up, so the
    heads' first, large gradients do not disturb the decoder.

    Why: a frozen decoder's hidden state before a word carries little of the image facts its later words need
    (whether the apple is damaged is read from the image at that word, not before), so heads on it cannot guess
    them; joint training teaches the decoder to carry them earlier. Loss per batch of the samples' images: the
    self-distillation KL from the original decoder's next-token distribution to the tuned one's, on the original's
    own greedy captions (so the tuned decoder keeps saying what the original said; no ground truth is used), plus
    head_weight * `medusa_loss` (head i weighted decay ** i) on the same captions. Only the text decoder
    (decoder_lr) and the heads (lr) are trained; the backbone and the image projection stay frozen and in eval mode.
    The text transformer is shared with the captioner's contrastive and matching modes (BLIP), which this does not
    train: use the original pipeline for image-text retrieval. Greedy captions of the tuned decoder can differ from
    the original's where the original was close to a tie; measure the tuned pipeline's quality
    (`evaluate_captions`) before deploying it."""
    if steps < 1 or batch < 1:
        raise ValueError(f"train_medusa2 needs steps >= 1 and batch >= 1, got steps={steps}, batch={batch}")
    if not samples:
        raise DataError("train_medusa2 got no samples: it self-distils on the decoder's captions of their images. "
                        "Fix: pass images like the ones you will caption (their captions are not used).")
    text_cfg = pipe.captioner.text.cfg
    if (heads.dim, heads.out_weight.shape[1]) != (text_cfg.dim, text_cfg.vocab_size):
        raise ValueError(f"the heads read {heads.dim}-wide states into {heads.out_weight.shape[1]} tokens, the decoder "
                         f"has {text_cfg.dim} and {text_cfg.vocab_size}: pass the heads trained for this pipeline "
                         "(train_medusa_heads(pipe, ...))")
    torch.manual_seed(seed)
    tuned, tuned_heads = copy.deepcopy(pipe).eval(), copy.deepcopy(heads)
    cap = tuned.captioner
    feats = _backbone_tokens(tuned, [s.image for s in samples])
    ids_all, pad_all = _greedy_targets(cap, feats)
    with torch.no_grad():
        memory_all = cap.image_proj(feats)
        teacher = torch.cat([torch.log_softmax(cap.lm_logits(ids_all[i:i + 256], memory_all[i:i + 256]), -1)
                             for i in range(0, len(ids_all), 256)])
    labels_all = ids_all.masked_fill(pad_all, -100)
    opt = torch.optim.AdamW([{"params": list(cap.text.parameters()), "lr": decoder_lr},
                             {"params": list(tuned_heads.parameters()), "lr": lr}])
    gen = torch.Generator().manual_seed(seed)
    cap.text.train()
    tuned_heads.train()
    for _ in range(steps):
        idx = torch.randperm(len(samples), generator=gen)[:batch]
        hidden, _ = cap.text(ids_all[idx], memory=memory_all[idx])
        logp = torch.log_softmax(cap.text.logits(hidden), -1)
        kl = F.kl_div(logp, teacher[idx], reduction="none", log_target=True).sum(-1)[~pad_all[idx]].mean()
        loss = kl + head_weight * medusa_loss(tuned_heads(hidden), labels_all[idx], decay=decay)
        opt.zero_grad()
        loss.backward()
        opt.step()
    cap.text.eval()
    tuned_heads.choices = None  # the tree measured for the old heads does not describe these
    return tuned, tuned_heads.eval()


@torch.no_grad()
def medusa_head_logits(pipe: CaptionPipeline, heads: MedusaHeads, samples: Sequence[CaptionSample],
                       self_distill: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """The heads' logits (K, N, T, V), teacher-forced on the decoder's own greedy captions of the samples
    (self_distill; else their first captions), and the labels (N, T) (-100 on padding): what the heads'
    accuracies and the trees' path probabilities are measured on."""
    cap = pipe.captioner
    feats = _backbone_tokens(pipe, [s.image for s in samples])
    if self_distill:
        ids, pad = _greedy_targets(cap, feats)
    else:
        ids, pad = pipe.vocab.batch([s.captions[0] for s in samples], cap.text.cfg.max_len)
    hidden, _ = cap.text(ids, memory=cap.image_proj(feats))
    return heads(hidden), ids.masked_fill(pad, -100)


@torch.no_grad()
def medusa_head_accuracies(pipe: CaptionPipeline, heads: MedusaHeads, samples: Sequence[CaptionSample],
                           topk: int = 8, self_distill: bool = True) -> torch.Tensor:
    """(num_heads, topk): how often head i's rank-r guess is the token 2 + i ahead, teacher-forced on the
    decoder's own greedy captions of the samples (self_distill; else their first captions): the measured
    profile `choices_from_accuracies` builds trees from."""
    return head_accuracies(*medusa_head_logits(pipe, heads, samples, self_distill), topk)


def medusa_tree(accuracy: torch.Tensor, nodes: int) -> TreeBuffers:
    """The `nodes`-node tree of most probable paths under the measured head accuracies (K, topk)."""
    return tree_buffers(choices_from_accuracies(accuracy, nodes))


@torch.no_grad()
def greedy_caption_ids(pipe: CaptionPipeline, samples: Sequence[CaptionSample]) -> list[list[int]]:
    """The decoder's greedy captions of the samples as token ids, each up to and including its end token."""
    ids, pad = _greedy_targets(pipe.captioner, _backbone_tokens(pipe, [s.image for s in samples]))
    return [row[1:][~p[1:]].tolist() for row, p in zip(ids, pad)]


@torch.no_grad()
def medusa_path_probabilities(pipe: CaptionPipeline, heads: MedusaHeads, samples: Sequence[CaptionSample],
                              topk: int = 8) -> list[tuple[tuple[int, ...], float]]:
    """Every tree node with how often greedy acceptance walks through it on the samples' greedy captions
    (`path_probabilities`: joint frequencies, which keep the heads' correlated errors), most frequent first.
    Use samples the heads were not trained on."""
    return path_probabilities(head_rank_paths(*medusa_head_logits(pipe, heads, samples), topk), topk)


def medusa_tree_for_cost(heads: MedusaHeads, ranked: list[tuple[tuple[int, ...], float]], step_cost_fixed: float,
                         step_cost_per_token: float, max_nodes: int = 64) -> TreeBuffers:
    """The tree that maximises expected tokens per unit of step cost for these heads: nodes in the order of
    `ranked` (`medusa_path_probabilities`), sized by the step-cost model fixed + per_token * tokens
    (`choices_for_cost`). The choice is stored on the heads (`heads.choices`, the default tree of
    `medusa_generate`)."""
    heads.choices = choices_for_cost(ranked, step_cost_fixed, step_cost_per_token, max_nodes)
    return tree_buffers(heads.choices)


@torch.no_grad()
def decode_captions(pipe: CaptionPipeline, images: Sequence[np.ndarray], heads: MedusaHeads | None = None,
                    max_new_tokens: int | None = None, tree: TreeBuffers | None = None,
                    opening: TreeBuffers | None = None, timings: dict[str, float] | None = None
                    ) -> tuple[list[str], dict]:
    """Caption each image with the cached greedy decoder (heads None) or Medusa (with `tree`, default the tree the
    heads carry, `heads.choices`; `opening`: token sequences drafted in the prompt forward, see
    `medusa_generate`); returns the texts and timing: {"tokens", "decode_s" (wall), "decode_cpu_s"
    (this thread's CPU time: what the decoding cost, without the time a loaded machine left it waiting),
    "forwards", "cache_moves" (Medusa steps whose accepted path was moved in the KV cache)}. Image encoding is
    excluded (the same for both); the image tokens' cross-attention keys/values are included. timings: a dict
    that receives Medusa's CPU seconds per part of its tree steps (see `medusa_generate`)."""
    cap = pipe.captioner
    max_new = max_new_tokens or cap.cfg.max_caption_len
    texts, tokens, forwards, moves, decode_s, decode_cpu_s = [], 0, 0, 0, 0.0, 0.0
    prompt = torch.tensor([BOS])
    for img in images:
        memory = cap.image_tokens(pipe.preprocess(torch.from_numpy(img)[None]))
        t0, c0 = time.perf_counter(), time.thread_time()
        if heads is None:
            ids = greedy_decode(cap.text, prompt, max_new, eos=EOS, memory=memory)
            steps = len(ids)
        else:
            ids, stats = medusa_generate(cap.text, heads, prompt, max_new, eos=EOS, memory=memory, tree=tree,
                                         opening=opening, timings=timings)
            steps, moves = stats.steps + 1, moves + stats.cache_moves
        decode_s += time.perf_counter() - t0
        decode_cpu_s += time.thread_time() - c0
        tokens += len(ids)
        forwards += steps
        texts.append(pipe.vocab.decode(ids.tolist()))
    return texts, {"tokens": tokens, "decode_s": decode_s, "decode_cpu_s": decode_cpu_s, "forwards": forwards,
                   "cache_moves": moves}


def evaluate_captions(texts: Sequence[str], samples: Sequence[CaptionSample]) -> dict[str, float]:
    """BLEU-4 and CIDEr-D against every phrasing of each sample, and attribute accuracy vs its ground truth."""
    refs = [s.captions for s in samples]
    acc = attribute_accuracy(texts, [s.truth for s in samples])
    return {"bleu4": bleu4(texts, refs), "cider_d": cider_d(texts, refs), **{f"acc_{k}": v for k, v in acc.items()}}
