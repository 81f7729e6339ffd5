"""DiTCtrl around the video DiT: the KV-sharing control equals hand-built attention (plain and mask-guided,
masks from hand-accumulated video -> text attention), sharing with an identical source changes nothing, and the
blended sampler's plumbing (v -> x0 -> triangle blend -> DDIM) against an oracle model."""

from __future__ import annotations

import math

import torch

from fovea.gen.multiprompt import (KVSharingControl, MultiPromptConfig, generate_ditctrl, generate_naive,
                                   segment_text_embeddings)
from fovea.models.latent_ae import LatentAEConfig, LatentAutoencoder
from fovea.models.video_dit import VideoDiT, VideoDiTConfig
from fovea.nn.ditctrl import KVSharingSchedule

TINY = VideoDiTConfig(frames=3, latent_channels=2, latent_size=4, patch=2, dim=16, depth=2, heads=2, vocab_size=9,
                      text_len=5)
GRID = TINY.grid  # (3, 2, 2): 12 video tokens after 5 text tokens


def _attend(q, k, v, allowed=None):
    logits = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
    if allowed is not None:
        logits = logits.masked_fill(~allowed, float("-inf"))
    return torch.softmax(logits, -1) @ v


def _qkv(seed: int):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(4, 2, 17, 8, generator=g, dtype=torch.float64) for _ in range(3)]


def test_kv_sharing_control_equals_hand_built_attention():
    q, k, v = _qkv(0)
    ctl = KVSharingControl(MultiPromptConfig(schedule=KVSharingSchedule(0, 5, 1, 2)), 5, GRID)
    ctl.reset(step=3)
    out = ctl(1, q, k, v)  # active: rows 1 and 3 (targets) use rows 0 and 2 (sources)
    for row, kv in ((0, 0), (1, 0), (2, 2), (3, 2)):
        assert torch.allclose(out[row], _attend(q[row], k[kv], v[kv]))
    for layer, step in ((0, 3), (1, 5)):  # outside the layer or step window: plain self-attention
        ctl.reset(step)
        inactive = ctl(layer, q, k, v)
        assert all(torch.allclose(inactive[r], _attend(q[r], k[r], v[r])) for r in range(4))


def test_mask_guided_control_uses_masks_from_earlier_layers():
    cfg = MultiPromptConfig(schedule=KVSharingSchedule(0, 5, 1, 2), mask_guided=True, mask_threshold=0.3,
                            object_tokens=(1, 2))
    ctl = KVSharingControl(cfg, 5, GRID)
    ctl.reset(step=0)
    q0, k0, v0 = _qkv(1)
    ctl(0, q0, k0, v0)  # layer 0: not active, only accumulates video -> text attention
    q, k, v = _qkv(2)
    out = ctl(1, q, k, v)

    def video_mask(row):  # by hand: softmax over all keys, video rows, text columns 1 + 2, head mean, min-max
        p = torch.softmax(q0[row] @ k0[row].transpose(-1, -2) / math.sqrt(8), -1)[:, 5:, :5]
        a = p.mean(0)[:, [1, 2]].sum(-1).reshape(3, 4)
        a = (a - a.min(1, keepdim=True).values) / (a.max(1, keepdim=True).values - a.min(1, keepdim=True).values
                                                    + 1e-6)
        return (a > 0.3).reshape(-1)

    src_fg = torch.cat([torch.ones(5, dtype=torch.bool), video_mask(2)])
    tgt_fg = torch.cat([torch.tensor([False, True, True, False, False]), video_mask(3)])
    assert 0 < int(src_fg[5:].sum()) < 12
    for tgt, src in ((1, 0), (3, 2)):
        for i in range(17):
            allowed = src_fg if tgt_fg[i] else ~src_fg
            assert torch.allclose(out[tgt, :, i], _attend(q[tgt, :, i:i + 1], k[src], v[src], allowed)[:, 0])
    assert torch.allclose(out[0], _attend(q[0], k[0], v[0]))


def test_sharing_with_an_identical_source_changes_nothing():
    dit = VideoDiT(TINY).double()
    torch.manual_seed(0)
    with torch.no_grad():
        for p in dit.parameters():
            p.normal_(0, 0.2)
    x = torch.randn(1, 3, 2, 4, 4, dtype=torch.float64).expand(4, -1, -1, -1, -1)
    tok = torch.randint(1, 9, (1, 5)).expand(4, -1)
    t = torch.full((4,), 0.5, dtype=torch.float64)
    ctl = KVSharingControl(MultiPromptConfig(schedule=KVSharingSchedule(0, 1, 0, 2)), 5, GRID)
    ctl.reset(0)
    assert torch.allclose(dit(x, t, tok, control=ctl), dit(x, t, tok), atol=1e-10)
    x2 = x.clone()
    x2[1] = torch.randn(3, 2, 4, 4, dtype=torch.float64)
    ctl.reset(0)
    shared, plain = dit(x2, t, tok, control=ctl), dit(x2, t, tok)
    assert torch.allclose(shared[0], plain[0], atol=1e-10) and not torch.allclose(shared[1], plain[1])


class _Oracle(VideoDiT):
    """A DiT whose x0 estimate is always `target` at the frames it is given: v = (alpha x_t - x0) / sigma."""

    def __init__(self, target: torch.Tensor):
        super().__init__(TINY)
        self.target = target  # (F, C, h, w) over the whole long video
        self.calls = 0

    def forward(self, latents, t, tokens=None, text_emb=None, control=None):
        self.calls += 1
        a, s = torch.cos(math.pi * t / 2), torch.sin(math.pi * t / 2)
        x0 = self.target[:3].expand_as(latents)  # every window predicts frames 0..2 of the target
        return (a.view(-1, 1, 1, 1, 1) * latents - x0) / s.clamp_min(1e-8).view(-1, 1, 1, 1, 1)


def test_blended_sampler_returns_the_blended_oracle_prediction():
    target = torch.randn(5, 2, 4, 4)
    dit = _Oracle(target)
    ae = LatentAutoencoder(LatentAEConfig(width=8, latent_channels=2))
    prompts = torch.randint(1, 9, (2, 5))
    cfg = MultiPromptConfig(steps=4, overlap=1, kv_sharing=False)
    video, lat = generate_ditctrl(dit, ae, prompts, torch.Generator().manual_seed(0), cfg, return_latents=True)
    # segments [0, 3) and [2, 5); both predict target[:3]; frame 2 = triangle-weighted mean of target[2] (end of
    # segment 0, weight 1/3) and target[0] (start of segment 1, weight 1/3)
    assert lat.shape == (5, 2, 4, 4) and video.shape == (5, 16, 16, 3)
    assert torch.allclose(lat[:2], target[:2], atol=1e-5) and torch.allclose(lat[3:], target[1:3], atol=1e-5)
    assert torch.allclose(lat[2], 0.5 * (target[2] + target[0]), atol=1e-5)
    assert dit.calls == 4
    naive = generate_naive(dit, ae, prompts, torch.Generator().manual_seed(0), steps=3)
    assert naive.shape == (6, 16, 16, 3)


def test_transition_segments_interpolate_the_text_embeddings():
    dit = VideoDiT(TINY)
    prompts = torch.randint(1, 9, (2, 5))
    emb = dit.embed_text(prompts)
    seg = segment_text_embeddings(dit, prompts, transitions=2)
    assert seg.shape == (4, 5, 16)
    assert torch.allclose(seg[1], emb[0] * 2 / 3 + emb[1] / 3) and torch.allclose(seg[3], emb[1])
