"""Read an open_clip checkpoint (timm image tower + CLIP text transformer) into fovea's `TwoTower`.

open_clip's `CLIP` with `vision_cfg.timm_model_name` (pool "avg", proj "linear") keeps its image tower
at `visual.trunk.*` / `visual.head.proj.weight` (same keys as fovea's) and its text tower at the top
level (`token_embedding`, `positional_embedding`, `transformer.resblocks.*`, `ln_final`,
`text_projection`, `logit_scale`, optional `logit_bias`). The mapping is explicit and strict: every
key must land, or a CheckpointError lists what is missing and unexpected.
"""

from __future__ import annotations

from pathlib import Path

import torch

from fovea.errors import CheckpointError
from fovea.models.vl.two_tower import TwoTower, TwoTowerConfig, build_two_tower
from fovea.weights import load_state_dict_file

__all__ = ["load_open_clip", "open_clip_key"]

_TEXT_PREFIXES = ("token_embedding.", "positional_embedding", "transformer.", "ln_final.")


def open_clip_key(key: str) -> str | None:
    """open_clip state-dict key -> fovea TwoTower key (None: not a weight, e.g. the causal mask buffer)."""
    if key == "attn_mask":
        return None
    if key == "logit_scale":
        return "logit.log_scale"
    if key == "logit_bias":
        return "logit.bias"
    if key.startswith(_TEXT_PREFIXES):
        return "text." + key
    return key  # visual.*, text_projection


def _strip(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    if "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    return {k[len("module."):] if k.startswith("module.") else k: v for k, v in state.items()}


def load_open_clip(path: str | Path, image_backbone: str, *, image_size: int = 224, heads: int | None = None
                   ) -> TwoTower:
    """A TwoTower holding the open_clip checkpoint at `path` (.safetensors / .pt / .bin state dict).

    image_backbone: the timm name of the checkpoint's `vision_cfg.timm_model_name`. heads: text attention
    heads (default width // 64, open_clip's default). Text width, layers, context length, vocabulary and
    embed_dim are read from the weights.
    """
    path = Path(path)
    state = _strip(load_state_dict_file(path))
    if "text_projection" not in state or "token_embedding.weight" not in state:
        raise CheckpointError(f"{path} is not an open_clip CLIP checkpoint (no text_projection / token_embedding). "
                              "Fix: pass the state dict of an open_clip model with a timm image tower.")
    width, embed_dim = state["text_projection"].shape
    layers = len({k.split(".")[2] for k in state if k.startswith("transformer.resblocks.")})
    clip_text = dict(context_length=int(state["positional_embedding"].shape[0]),
                     vocab_size=int(state["token_embedding.weight"].shape[0]), width=int(width),
                     heads=int(heads or max(width // 64, 1)), layers=layers)
    config = TwoTowerConfig(image_backbone=image_backbone, image_weights="random", image_size=image_size,
                            text_tower="clip", clip_text=clip_text, embed_dim=int(embed_dim),
                            loss="siglip" if "logit_bias" in state else "clip", lock_image=False, lock_text=False)
    model = build_two_tower(config)
    mapped = {}
    for k, v in state.items():
        new = open_clip_key(k)
        if new is not None:
            mapped[new] = v
    own = model.state_dict()
    missing = sorted(set(own) - set(mapped))
    unexpected = sorted(set(mapped) - set(own))
    wrong = sorted(k for k in set(own) & set(mapped) if own[k].shape != mapped[k].shape)
    if missing or unexpected or wrong:
        raise CheckpointError(
            f"{path} does not match a {image_backbone} + CLIP-text ({clip_text}) two-tower model: missing "
            f"{missing[:6]}, unexpected {unexpected[:6]}, wrong shape {wrong[:6]}. Fix: pass the image backbone the "
            "checkpoint was trained with (its vision_cfg.timm_model_name) and the text heads count.")
    model.load_state_dict(mapped, strict=True)
    return model.eval()
