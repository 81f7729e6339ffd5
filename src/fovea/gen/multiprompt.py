"""Multi-prompt video generation with fovea's video DiT: naive concatenation of independently generated
segments, and DiTCtrl (Cai et al. 2024): overlapping segments denoised together with latent blending and
KV-sharing attention, optionally mask-guided, as attention controls around the unchanged DiT.

Layout (fovea.nn.ditctrl): S = P + T (P - 1) segments of L latent frames (P prompts, T transition segments
between consecutive prompts whose text embedding is interpolated with weight (j + 1) / (T + 1)), stride
L - overlap; one global noise latent, so each segment's first `overlap` noise frames are the previous one's
last. Every step, each adjacent pair (k, k + 1) is denoised in one batch (uncond k, uncond k + 1, cond k,
cond k + 1) so the target k + 1 can attend to the source k's keys/values; every prediction (interior
segments twice) is weighted by the triangle over its frames and averaged per frame; one DDIM step on the whole
latent follows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from fovea.gen.diffusion import ddim_step, guided, sampling_times, x0_from_v
from fovea.models.latent_ae import LatentAutoencoder, unit_to_frames
from fovea.models.video_dit import VideoDiT
from fovea.nn.ditctrl import (KVSharingSchedule, blend_segments, kv_sharing_attention, mask_guided_kv_sharing,
                              segment_starts, token_attention_mask, total_frames)


@dataclass(frozen=True)
class MultiPromptConfig:
    """steps: DDIM steps; guidance: classifier-free guidance scale; overlap: latent frames shared by neighbours;
    transitions: interpolated segments between consecutive prompts; kv_sharing / schedule: where the target
    attends to the source's K/V (the paper's steps [2, 25) of 50 and layers [25, 30) of 30, scaled to 25 steps
    and 4 layers); mask_guided: foreground/background-split KV sharing from video -> text attention of
    object_tokens (caption positions), binarised at mask_threshold."""

    steps: int = 25
    guidance: float = 3.0
    overlap: int = 4
    transitions: int = 0
    kv_sharing: bool = True
    schedule: KVSharingSchedule = field(default_factory=lambda: KVSharingSchedule(1, 12, 3, 4))
    mask_guided: bool = False
    mask_threshold: float = 0.3
    object_tokens: tuple[int, ...] = (1, 2)


def segment_text_embeddings(dit: VideoDiT, prompts: torch.Tensor, transitions: int) -> torch.Tensor:
    """(P, Lt) caption tokens -> (S, Lt, D) text embeddings of the segments: each prompt, with `transitions`
    linear interpolations between consecutive prompts."""
    emb = dit.embed_text(prompts)
    out = [emb[0]]
    for p in range(1, len(emb)):
        for j in range(transitions):
            w = (j + 1) / (transitions + 1)
            out.append((1 - w) * emb[p - 1] + w * emb[p])
        out.append(emb[p])
    return torch.stack(out)


class KVSharingControl:
    """Attention control for a batch of G groups (uncond source, uncond target, cond source, cond target):
    in active (step, layer)s the targets' queries attend to their sources' keys/values (plain or mask-guided);
    all other rows attend normally. Set `step` before each forward; masks are rebuilt every forward."""

    def __init__(self, config: MultiPromptConfig, text_len: int, grid: tuple[int, int, int]):
        self.config, self.text_len, self.grid = config, text_len, grid
        self.step = 0
        self._maps: torch.Tensor | None = None  # (B, heads, Nv, Lt) video -> text attention, summed over layers

    def reset(self, step: int) -> None:
        self.step, self._maps = step, None

    def _accumulate(self, q: torch.Tensor, k: torch.Tensor) -> None:
        lt = self.text_len
        probs = torch.softmax(q[:, :, lt:] @ k.transpose(-1, -2) / math.sqrt(q.shape[-1]), dim=-1)[..., :lt]
        self._maps = probs if self._maps is None else self._maps + probs

    def _masks(self, group: int, n: int) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(source_fg (N,), target_fg (N,)) over text + video tokens from the cond rows of a group."""
        if self._maps is None:
            return None
        frames, rows, cols = self.grid
        idx = list(self.config.object_tokens)
        thr = self.config.mask_threshold
        src = token_attention_mask(self._maps[4 * group + 2], idx, frames, rows, cols, thr)
        tgt = token_attention_mask(self._maps[4 * group + 3], idx, frames, rows, cols, thr)
        text_all = torch.ones(self.text_len, dtype=torch.bool)
        text_obj = torch.zeros(self.text_len, dtype=torch.bool)
        text_obj[idx] = True
        return torch.cat([text_all, src]), torch.cat([text_obj, tgt])

    def __call__(self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        cfg = self.config
        active = cfg.kv_sharing and cfg.schedule.active(self.step, layer)
        masks_needed = cfg.mask_guided and cfg.kv_sharing
        out = torch.nn.functional.scaled_dot_product_attention(q, k, v)
        if active:
            out = out.clone()
            for g in range(q.shape[0] // 4):
                masks = self._masks(g, q.shape[2]) if masks_needed else None
                for src, tgt in ((4 * g, 4 * g + 1), (4 * g + 2, 4 * g + 3)):
                    qt, ks, vs = q[tgt:tgt + 1], k[src:src + 1], v[src:src + 1]
                    out[tgt:tgt + 1] = (mask_guided_kv_sharing(qt, ks, vs, masks[0], masks[1]) if masks is not None
                                        else kv_sharing_attention(qt, ks, vs))
        if masks_needed:
            self._accumulate(q, k)
        return out


def _decode(ae: LatentAutoencoder, latents: torch.Tensor) -> torch.Tensor:
    """(F, C, h, w) -> (F, H, W, 3) uint8."""
    return unit_to_frames(ae.decode(latents))


@torch.no_grad()
def generate_single(dit: VideoDiT, ae: LatentAutoencoder, tokens: torch.Tensor, noise: torch.Tensor,
                    steps: int = 25, guidance: float = 3.0) -> torch.Tensor:
    """One clip per caption: tokens (B, Lt), noise (B, T, C, h, w) -> frames (B, T, H, W, 3) uint8."""
    times = sampling_times(steps)
    x, b = noise, noise.shape[0]
    uncond = torch.zeros_like(tokens)
    for i in range(steps):
        t = times[i].expand(b)
        v = dit(torch.cat([x, x]), torch.cat([t, t]), torch.cat([uncond, tokens]))
        x0 = x0_from_v(x, guided(v[:b], v[b:], guidance), t)
        x = ddim_step(x, x0, t, times[i + 1].expand(b))
    return torch.stack([_decode(ae, clip) for clip in x])


@torch.no_grad()
def generate_naive(dit: VideoDiT, ae: LatentAutoencoder, prompts: torch.Tensor, generator: torch.Generator,
                   steps: int = 25, guidance: float = 3.0) -> torch.Tensor:
    """Each prompt (P, Lt) generated independently from its own noise, clips concatenated: (P T, H, W, 3)."""
    c = dit.config
    noise = torch.randn((len(prompts), c.frames, c.latent_channels, c.latent_size, c.latent_size),
                        generator=generator)
    clips = generate_single(dit, ae, prompts, noise, steps, guidance)
    return clips.reshape(-1, *clips.shape[2:])


@torch.no_grad()
def generate_ditctrl(dit: VideoDiT, ae: LatentAutoencoder, prompts: torch.Tensor, generator: torch.Generator,
                     config: MultiPromptConfig = MultiPromptConfig(),
                     return_latents: bool = False) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """DiTCtrl over prompts (P, Lt): frames (F, H, W, 3) uint8, F = L + (S - 1)(L - overlap) latent frames
    (and the final latents (F, C, h, w) with return_latents)."""
    c = dit.config
    length = c.frames
    text = segment_text_embeddings(dit, prompts, config.transitions)  # (S, Lt, D)
    s_count = len(text)
    starts = segment_starts(s_count, length, config.overlap)
    frames = total_frames(s_count, length, config.overlap)
    x = torch.randn((frames, c.latent_channels, c.latent_size, c.latent_size), generator=generator)
    if s_count == 1:
        pairs = [(0, 0)]
    else:
        pairs = [(k, k + 1) for k in range(s_count - 1)]
    null = dit.embed_text(torch.zeros(1, c.text_len, dtype=torch.long))[0]
    control = KVSharingControl(config, c.text_len, c.grid)
    times = sampling_times(config.steps)
    for i in range(config.steps):
        batch_x, batch_text = [], []
        for src, tgt in pairs:
            xs, xt = x[starts[src]:starts[src] + length], x[starts[tgt]:starts[tgt] + length]
            batch_x += [xs, xt, xs, xt]
            batch_text += [null, null, text[src], text[tgt]]
        xb, tb = torch.stack(batch_x), torch.stack(batch_text)
        t = times[i].expand(len(xb))
        control.reset(i)
        v = dit(xb, t, text_emb=tb, control=control if s_count > 1 else None)
        x0 = x0_from_v(xb, v, t).reshape(len(pairs), 4, *xb.shape[1:])
        preds, pred_starts = [], []
        for g, (src, tgt) in enumerate(pairs):
            u_src, u_tgt, c_src, c_tgt = x0[g]
            preds += [guided(u_src, c_src, config.guidance), guided(u_tgt, c_tgt, config.guidance)]
            pred_starts += [starts[src], starts[tgt]]
        x0_all = blend_segments(preds, pred_starts, frames)
        x = ddim_step(x, x0_all, times[i], times[i + 1])
    video = _decode(ae, x)
    return (video, x) if return_latents else video
