"""The two-tower vision-language model: a timm image backbone and a text tower, each with a linear
projection into one embedding space, and a learnable temperature.

- `encode_image(images uint8 (B, H, W, 3)) -> (B, D)` and `encode_text(list[str]) -> (B, D)`, both
  L2-normalised by default; `encode_image_tensor(x float (B, 3, h, w), normalised input)` for
  already pre-processed batches; `project_image/project_text` map trunk features (B, F) -> (B, D).
- Image tower keys follow open_clip's timm tower (`visual.trunk.*`, `visual.head.proj`); with the
  CLIP text transformer the text keys are open_clip's too (`token_embedding`, `transformer.*`,
  `ln_final`, `text_projection`), so `load_open_clip` reads an open_clip checkpoint of the same
  configuration. With MiniLM the text keys are `text.bert.*` and `text_proj`.
- `lock_image` / `lock_text` freeze a pre-trained trunk (LiT: locked-image tuning); locked trunks
  loaded from package weights are not written into checkpoints (they come back from the package).

Checkpoint folder: `two_tower.json` (the `TwoTowerConfig`) + `model.safetensors`.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from fovea.errors import CheckpointError, ConfigError
from fovea.models.vl.text import ClipTextTransformer, MiniLMTextTower
from fovea.nn.contrastive import LogitScale
from fovea.weights import IMAGENET_MEAN, IMAGENET_STD, create_backbone

__all__ = ["TwoTower", "TwoTowerConfig", "build_two_tower", "load_two_tower", "save_two_tower"]

CONFIG_FILE = "two_tower.json"
WEIGHTS_FILE = "model.safetensors"
TEXT_TOWERS = ("minilm", "clip")


@dataclass
class TwoTowerConfig:
    """Architecture of a two-tower model. image_weights/text_pretrained: where trunks start from."""

    image_backbone: str = "efficientnet_lite0"
    image_weights: str = "default"          # "default" (offline package > hub > error), "random" or a file
    image_size: int = 224
    image_pool: str = "avg"                 # timm global_pool of the image trunk: "avg", "max", "catavgmax", ...
    text_tower: str = "minilm"              # "minilm" | "clip"
    text_pretrained: bool = True            # minilm: shipped weights; clip: always random unless loaded
    clip_text: dict | None = None           # ClipTextTransformer kwargs (context_length, vocab_size, width, heads, layers)
    embed_dim: int = 256
    loss: str = "clip"                      # "clip" (scale 1/0.07) | "siglip" (t = 10, b = -10)
    lock_image: bool = True
    lock_text: bool = True

    @classmethod
    def from_dict(cls, d: dict) -> "TwoTowerConfig":
        unknown = sorted(set(d) - set(cls.__dataclass_fields__))
        if unknown:
            raise ConfigError(f"two-tower config has unknown keys {unknown}. Fix: use {sorted(cls.__dataclass_fields__)}.")
        return cls(**d)


class _ImageTower(nn.Module):
    """open_clip `TimmModel` layout: `trunk` (timm, pooled features) + `head.proj` (Linear, no bias)."""

    def __init__(self, trunk: nn.Module, embed_dim: int):
        super().__init__()
        self.trunk = trunk
        self.head = nn.Sequential()
        self.head.add_module("proj", nn.Linear(trunk.num_features, embed_dim, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.trunk(x))


class TwoTower(nn.Module):
    """Image tower `visual`, text tower, `text_projection`, temperature `logit_scale` (+ bias for SigLIP)."""

    def __init__(self, config: TwoTowerConfig, trunk: nn.Module, text: nn.Module):
        super().__init__()
        self.config = config
        self.visual = _ImageTower(trunk, config.embed_dim)
        self.text = text
        self.text_projection = nn.Parameter(torch.empty(text.width, config.embed_dim))
        nn.init.normal_(self.text_projection, std=text.width ** -0.5)
        siglip = config.loss == "siglip"
        self.logit = LogitScale(10.0 if siglip else 1 / 0.07, bias_init=-10.0 if siglip else None)
        self.register_buffer("pixel_mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1) * 255.0, persistent=False)
        self.register_buffer("pixel_std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1) * 255.0, persistent=False)
        self.set_locks(config.lock_image, config.lock_text)
        self.train()  # applies the locks' eval mode to frozen trunks

    # --- locking ---------------------------------------------------------------------------------------
    def set_locks(self, image: bool, text: bool) -> None:
        """Freeze (True) or train the image trunk / text trunk; projections and temperature always train."""
        self.config.lock_image, self.config.lock_text = bool(image), bool(text)
        for p in self.visual.trunk.parameters():
            p.requires_grad_(not image)
        for p in self.text.parameters():
            p.requires_grad_(not text)

    def train(self, mode: bool = True):
        super().train(mode)
        if self.config.lock_image:
            self.visual.trunk.eval()  # locked trunk: batch-norm statistics fixed
        if self.config.lock_text:
            self.text.eval()
        return self

    # --- image side ------------------------------------------------------------------------------------
    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (B, H, W, 3) -> normalised float (B, 3, S, S) (bilinear antialiased resize)."""
        if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[-1] != 3:
            raise ConfigError(f"encode_image needs uint8 RGB (B, H, W, 3), got {images.dtype} {tuple(images.shape)}.")
        x = images.permute(0, 3, 1, 2).float()
        s = self.config.image_size
        x = F.interpolate(x, size=[s, s], mode="bilinear", align_corners=False, antialias=True)
        return (x - self.pixel_mean) / self.pixel_std

    def image_trunk_features(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (B, H, W, 3) -> (B, F) pooled trunk features (what a locked tower caches)."""
        return self.visual.trunk(self.preprocess(images))

    def project_image(self, feats: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        z = self.visual.head(feats)
        return F.normalize(z, dim=-1) if normalize else z

    def encode_image_tensor(self, x: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        """Normalised float (B, 3, h, w) -> (B, D)."""
        return self.project_image(self.visual.trunk(x), normalize)

    def encode_image(self, images: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        """uint8 (B, H, W, 3) -> (B, D) embeddings (unit length when `normalize`)."""
        return self.encode_image_tensor(self.preprocess(images), normalize)

    # --- text side -------------------------------------------------------------------------------------
    def text_trunk_features(self, texts: Sequence[str]) -> torch.Tensor:
        """list of B strings -> (B, width) text features before the projection."""
        return self.text(self.text.tokenize(texts))

    def project_text(self, feats: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        z = feats @ self.text_projection
        return F.normalize(z, dim=-1) if normalize else z

    def encode_text(self, texts: Sequence[str], normalize: bool = True) -> torch.Tensor:
        """list of B strings -> (B, D) embeddings (unit length when `normalize`)."""
        return self.project_text(self.text_trunk_features(texts), normalize)

    def logit_params(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(scale t, bias b or None) for the contrastive loss."""
        return self.logit(), self.logit.bias


def _build_text(config: TwoTowerConfig) -> nn.Module:
    if config.text_tower == "minilm":
        return MiniLMTextTower(pretrained=config.text_pretrained)
    if config.text_tower == "clip":
        return ClipTextTransformer(**(config.clip_text or {}))
    raise ConfigError(f"text_tower={config.text_tower!r} is unknown. Fix: one of {TEXT_TOWERS}.")


def build_two_tower(config: TwoTowerConfig | None = None, **overrides) -> TwoTower:
    """A two-tower model; trunks start from `image_weights` / the shipped MiniLM."""
    config = config or TwoTowerConfig()
    if overrides:
        config = TwoTowerConfig.from_dict({**asdict(config), **overrides})
    if config.loss not in ("clip", "siglip"):
        raise ConfigError(f"loss={config.loss!r}. Fix: 'clip' or 'siglip'.")
    trunk = create_backbone(config.image_backbone, weights=config.image_weights, num_classes=0,
                            global_pool=config.image_pool)
    return TwoTower(config, trunk, _build_text(config))


def _saved_state(model: TwoTower) -> dict[str, torch.Tensor]:
    """Everything but locked trunks that come back from package weights on load."""
    skip = []
    c = model.config
    if c.lock_image and c.image_weights == "default":
        skip.append("visual.trunk.")
    if c.lock_text and c.text_tower == "minilm" and c.text_pretrained:
        skip.append("text.")
    return {k: v.detach().contiguous() for k, v in model.state_dict().items() if not k.startswith(tuple(skip))}


def save_two_tower(model: TwoTower, out_dir: str | Path, info: dict | None = None) -> Path:
    """Write `two_tower.json` + `model.safetensors` into out_dir; returns the folder."""
    from safetensors.torch import save_file

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / CONFIG_FILE).write_text(json.dumps({"config": asdict(model.config), "info": info or {}}, indent=1))
    save_file(_saved_state(model), str(out / WEIGHTS_FILE))
    return out


def load_two_tower(path: str | Path) -> TwoTower:
    """A folder written by `save_two_tower`. Weights that do not fit the recorded towers raise a CheckpointError
    naming the folder and the offending keys."""
    from safetensors.torch import load_file

    path = Path(path)
    folder = path if path.is_dir() else path.parent
    if not (folder / CONFIG_FILE).is_file() or not (folder / WEIGHTS_FILE).is_file():
        raise CheckpointError(f"{folder} is not a two-tower checkpoint (needs {CONFIG_FILE} and {WEIGHTS_FILE}). "
                              "Fix: pass a folder written by fovea's vision-language training (save_two_tower).")
    meta = json.loads((folder / CONFIG_FILE).read_text())
    model = build_two_tower(TwoTowerConfig.from_dict(meta["config"]))
    state = load_file(str(folder / WEIGHTS_FILE))
    expected = _saved_state(model)
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(k for k in set(state) & set(expected) if state[k].shape != expected[k].shape)
    if missing or unexpected or wrong:
        raise CheckpointError(
            f"{folder / WEIGHTS_FILE} does not fit the towers in {folder / CONFIG_FILE} "
            f"({model.config.image_backbone} + {model.config.text_tower}, embed_dim {model.config.embed_dim}): "
            f"missing {missing[:5]}, unexpected {unexpected[:5]}, wrong shape {wrong[:5]}. Fix: keep the two files "
            "of one training run together; do not mix checkpoints of different towers.")
    model.load_state_dict(state, strict=False)
    return model.eval()
