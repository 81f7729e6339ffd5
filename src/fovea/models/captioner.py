"""A BLIP-style captioner (Li et al. 2022, arXiv 2201.12086) at inspection scale: a timm image backbone
gives image tokens; ONE text transformer (`TextDecoder`) runs in BLIP's three modes:

- unimodal text encoder (bidirectional, no image): text embedding for image-text contrastive (ITC);
- image-grounded text encoder (bidirectional + cross-attention): image-text matching (ITM, 2-way head);
- image-grounded text decoder (causal + cross-attention): language modelling (LM) and captioning.

BLIP shares all but the self-attention layers between encoder and decoder; here the three modes share
every weight (documented simplification for a small model). Written from the paper.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from fovea.models.text_decoder import TextDecoder, TextDecoderConfig
from fovea.weights import create_backbone


@dataclass
class CaptionerConfig:
    """backbone: timm name (offline ImageNet weights for efficientnet_lite0); weights: "default" | "random" |
    path; text: the text transformer; embed_dim: ITC embedding size; max_caption_len: tokens generated;
    feature_level: timm `out_indices` entry of the image tokens."""

    backbone: str = "efficientnet_lite0"
    weights: str = "default"
    text: TextDecoderConfig = field(default_factory=TextDecoderConfig)
    embed_dim: int = 64
    max_caption_len: int = 20
    feature_level: int = -2  # backbone stage whose tokens the text attends to (-2: stride 16, finer than -1)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "CaptionerConfig":
        d = dict(d)
        d["text"] = TextDecoderConfig(**d.get("text", {}))
        return cls(**d)


class Captioner(nn.Module):
    """images (B, 3, H, W) normalised -> image tokens (B, M, dim) -> text in three modes."""

    def __init__(self, cfg: CaptionerConfig):
        super().__init__()
        self.cfg = cfg
        self.backbone = create_backbone(cfg.backbone, cfg.weights, features_only=True, out_indices=(cfg.feature_level,))
        channels = self.backbone.feature_info.channels()[-1]
        text_cfg = TextDecoderConfig(**{**asdict(cfg.text), "memory_dim": cfg.text.dim})
        self.image_proj = nn.Linear(channels, text_cfg.dim)
        self.text = TextDecoder(text_cfg)
        self.image_embed = nn.Linear(text_cfg.dim, cfg.embed_dim)
        self.text_embed = nn.Linear(text_cfg.dim, cfg.embed_dim)
        self.itm_head = nn.Linear(text_cfg.dim, 2)
        self.logit_scale = nn.Parameter(torch.tensor(1 / 0.07).log())

    # --- image side ---------------------------------------------------------------------------------
    def image_tokens(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) normalised -> (B, h*w, dim) projected backbone tokens."""
        fmap = self.backbone(images)[-1]
        return self.image_proj(fmap.flatten(2).transpose(1, 2))

    def image_embedding(self, memory: torch.Tensor) -> torch.Tensor:
        """(B, M, dim) -> (B, embed_dim) L2-normalised (mean of the image tokens)."""
        return F.normalize(self.image_embed(memory.mean(1)), dim=-1)

    # --- text modes ---------------------------------------------------------------------------------
    def text_embedding(self, ids: torch.Tensor, pad: torch.Tensor) -> torch.Tensor:
        """Unimodal encoder: ids (B, T) with pad (B, T) True on padding -> (B, embed_dim) from the first token."""
        hidden, _ = self.text(ids, mask=_bidirectional(pad), memory=None)
        return F.normalize(self.text_embed(hidden[:, 0]), dim=-1)

    def itm_logits(self, ids: torch.Tensor, pad: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
        """Image-grounded encoder: (B, T) text, (B, M, dim) image -> (B, 2) logits [no match, match]."""
        hidden, _ = self.text(ids, mask=_bidirectional(pad), memory=memory)
        return self.itm_head(hidden[:, 0])

    def lm_logits(self, ids: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
        """Image-grounded decoder (causal): (B, T) -> (B, T, vocab), position t predicts token t + 1."""
        hidden, _ = self.text(ids, memory=memory)
        return self.text.logits(hidden)

    def generate(self, memory: torch.Tensor, bos: int, steps: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Greedy captions without a cache, a fixed number of steps (traceable; no data-dependent control flow):
        memory (B, M, dim) -> tokens (B, steps) and their log-probabilities (B, steps)."""
        steps = steps or self.cfg.max_caption_len
        ids = torch.full((memory.shape[0], 1), bos, dtype=torch.long, device=memory.device)
        logps = []
        for _ in range(steps):
            hidden, _ = self.text(ids, memory=memory)
            logp = torch.log_softmax(self.text.logits(hidden[:, -1]), dim=-1)
            best = logp.max(dim=-1)
            ids = torch.cat([ids, best.indices[:, None]], dim=1)
            logps.append(best.values)
        return ids[:, 1:], torch.stack(logps, dim=1)


def _bidirectional(pad: torch.Tensor) -> torch.Tensor:
    """(B, T) padding flags -> (B, 1, T, T) mask: every token sees every non-padding token (and itself)."""
    t = pad.shape[1]
    mask = (~pad)[:, None, None, :].expand(-1, 1, t, t)
    return mask | torch.eye(t, dtype=torch.bool, device=pad.device)
