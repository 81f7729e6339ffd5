"""DiTCtrl's training-free multi-prompt video operations (Cai et al. 2024, arXiv 2412.18597), written from the
paper, as ops that wrap any latent video diffusion transformer, and the CSCV transition-smoothness metric.

- Latent blending: a long video is denoised as overlapping segments of L latent frames (stride L - overlap);
  each step, every segment's x0-prediction is weighted by a triangle over its frames and the weighted
  predictions are averaged per frame.
- KV sharing: in chosen layers and steps, the target segment's queries attend to the SOURCE segment's keys
  and values (the previous prompt's), which carries its appearance across the prompt change.
- Mask-guided KV sharing: a foreground mask per segment from the text-to-video attention of the object's
  tokens; foreground queries attend to the source's foreground keys, background to its background.
- CSCV (MPVBench): 1 / (1 + 10 * std(s) / mean(s)) over cosine similarities s of adjacent frames' embeddings.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


# ----------------------------------------------------------------------------------- latent blending

def segment_weights(length: int) -> torch.Tensor:
    """(L,) triangle weights of one segment's frames: w_i = min(u_i, 2 - u_i) with u_i = (i + 0.5) * 2 / L
    (about 1 in the middle, 1/L at both ends)."""
    u = (torch.arange(length, dtype=torch.float64) + 0.5) * 2.0 / length
    return torch.minimum(u, 2.0 - u)


def segment_starts(num_segments: int, length: int, overlap: int) -> list[int]:
    """First latent frame of each segment; they are `length - overlap` apart."""
    if not 0 <= overlap < length:
        raise ValueError(f"overlap {overlap} must be in [0, segment length {length})")
    return [k * (length - overlap) for k in range(num_segments)]


def total_frames(num_segments: int, length: int, overlap: int) -> int:
    """L + (S - 1)(L - overlap) latent frames."""
    return length + (num_segments - 1) * (length - overlap)


def blend_segments(predictions: list[torch.Tensor], starts: list[int], frames: int) -> torch.Tensor:
    """Per-frame weighted mean of overlapping segment predictions. predictions: S tensors (L, ...) (x0 of each
    segment); starts: their first frames; returns (frames, ...). Every frame must be covered."""
    length = predictions[0].shape[0]
    w = segment_weights(length).to(predictions[0].dtype)
    shape = (frames, *predictions[0].shape[1:])
    acc = predictions[0].new_zeros(shape)
    norm = predictions[0].new_zeros(frames)
    for pred, s in zip(predictions, starts, strict=True):
        acc[s:s + length] += w.view(-1, *[1] * (pred.dim() - 1)) * pred
        norm[s:s + length] += w
    if bool((norm == 0).any()):
        raise ValueError(f"frames {torch.nonzero(norm == 0).flatten().tolist()} are covered by no segment")
    return acc / norm.view(-1, *[1] * (acc.dim() - 1))


# ----------------------------------------------------------------------------------- KV sharing

@dataclass(frozen=True)
class KVSharingSchedule:
    """Share keys/values in denoising steps [step_start, step_end) and layers [layer_start, layer_end)
    (the paper's CogVideoX-2B setting: steps [2, 25) of 50, layers [25, 30) of 30)."""

    step_start: int = 2
    step_end: int = 25
    layer_start: int = 25
    layer_end: int = 30

    def active(self, step: int, layer: int) -> bool:
        return self.step_start <= step < self.step_end and self.layer_start <= layer < self.layer_end


def kv_sharing_attention(q_target: torch.Tensor, k_source: torch.Tensor, v_source: torch.Tensor) -> torch.Tensor:
    """The target segment's queries (B, h, Nq, d) attend to the source segment's keys/values (B, h, Nk, d)."""
    return F.scaled_dot_product_attention(q_target, k_source, v_source)


def token_attention_mask(attn: torch.Tensor, token_idx: list[int], frames: int, height: int, width: int,
                         threshold: float = 0.3) -> torch.Tensor:
    """Foreground mask (frames * height * width,) bool of the video tokens from a video->text attention map.
    attn (heads, frames * height * width, text_len) softmax weights (accumulated over layers by the caller):
    mean over heads, sum over the object's text tokens, per-frame min-max normalisation
    (a - min) / (max - min + 1e-6), then > threshold."""
    a = attn.mean(0)[:, token_idx].sum(-1).reshape(frames, height * width)
    lo, hi = a.min(dim=1, keepdim=True).values, a.max(dim=1, keepdim=True).values
    return ((a - lo) / (hi - lo + 1e-6) > threshold).reshape(-1)


def mask_guided_kv_sharing(q_target: torch.Tensor, k_source: torch.Tensor, v_source: torch.Tensor,
                           source_fg: torch.Tensor, target_fg: torch.Tensor) -> torch.Tensor:
    """Two attentions on the source keys/values: foreground queries see the source's foreground keys, the rest
    its background keys; out = M_t * out_fg + (1 - M_t) * out_bg. q (B, h, Nq, d); k, v (B, h, Nk, d);
    source_fg (Nk,) bool; target_fg (Nq,) bool. Falls back to plain KV sharing when a mask is empty or full."""
    if not bool(source_fg.any()) or bool(source_fg.all()) or not bool(target_fg.any()):
        return kv_sharing_attention(q_target, k_source, v_source)
    out_fg = F.scaled_dot_product_attention(q_target, k_source, v_source, attn_mask=source_fg[None, :])
    out_bg = F.scaled_dot_product_attention(q_target, k_source, v_source, attn_mask=~source_fg[None, :])
    m = target_fg.to(q_target.dtype).view(1, 1, -1, 1)
    return m * out_fg + (1 - m) * out_bg


# ----------------------------------------------------------------------------------- CSCV

def cscv(frame_embeddings: torch.Tensor) -> float:
    """Transition smoothness of one clip: embeddings (T, D) of its frames -> 1 / (1 + CV), CV = 10 * std(s) /
    mean(s) over the T - 1 cosine similarities s of adjacent frames (population std). 1 for a constant clip."""
    if frame_embeddings.shape[0] < 3:
        raise ValueError(f"CSCV needs at least 3 frames, got {frame_embeddings.shape[0]}")
    e = F.normalize(frame_embeddings.double(), dim=-1)
    s = (e[:-1] * e[1:]).sum(-1)
    cv = 10.0 * s.std(unbiased=False) / s.mean()
    return float(1.0 / (1.0 + cv))
