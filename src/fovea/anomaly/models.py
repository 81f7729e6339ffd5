"""Registry of anomaly models: name -> (module class, config class).

Every model is a plain `nn.Module` with `fit(batches)` and
`forward(x (B, 3, H, W) normalised) -> (scores (B,), maps (B, 1, H, W))` in raw units.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util

from torch import nn

from fovea.errors import ConfigError

MODELS: dict[str, tuple[str, str, str]] = {
    "patchcore": ("fovea.anomaly.patchcore", "PatchCore", "PatchCoreConfig"),
    "padim": ("fovea.anomaly.padim", "Padim", "PadimConfig"),
    "reverse_distillation": ("fovea.anomaly.reverse_distillation", "ReverseDistillation",
                             "ReverseDistillationConfig"),
    "vae": ("fovea.anomaly.vae", "VAE", "VAEConfig"),
    "vqvae": ("fovea.anomaly.vqvae", "VQVAE", "VQVAEConfig"),
    "winclip": ("fovea.anomaly.winclip", "WinCLIP", "WinCLIPConfig"),
}


def available_models() -> list[str]:
    return sorted(n for n, (mod, _, _) in MODELS.items() if importlib.util.find_spec(mod) is not None)


def saved_config(name: str, config: dict) -> dict:
    """A model config read from a checkpoint, with the config class's `SAVED_DEFAULTS` filled in for
    keys that checkpoints written before those options existed lack (they keep their old behaviour)."""
    if name not in MODELS:
        return dict(config)
    mod_name, _, cfg_name = MODELS[name]
    legacy = getattr(getattr(importlib.import_module(mod_name), cfg_name), "SAVED_DEFAULTS", {})
    return {**legacy, **config}


def build_model(name: str, **config) -> nn.Module:
    """Build model `name` from config keyword arguments (unknown keys are an error naming them)."""
    if name not in MODELS:
        raise ConfigError(f"unknown anomaly model {name!r}. Fix: choose one of {available_models()}.")
    mod_name, cls_name, cfg_name = MODELS[name]
    mod = importlib.import_module(mod_name)
    cfg_cls = getattr(mod, cfg_name)
    fields = {f.name for f in dataclasses.fields(cfg_cls)}
    unknown = sorted(set(config) - fields)
    if unknown:
        raise ConfigError(f"{name} has no option(s) {unknown}. Fix: use some of {sorted(fields)}.")
    config = {k: tuple(v) if isinstance(v, list) else v for k, v in config.items()}
    model = getattr(mod, cls_name)(cfg_cls(**config))
    model.fovea_name = name
    return model
