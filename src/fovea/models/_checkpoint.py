"""Reading authors' released checkpoints without unpickling code, and strict key matching.

One `load_official` serves every backbone family: each family module registers an
`OfficialFormat` (how official keys map to fovea's, how to tell the variant from the tensors, how
to build it). Files are read with safetensors or `torch.load(weights_only=True)` only. Official training
checkpoints that also pickle a config object (`{"model": ..., "config": <CfgNode>}`) are refused
with the one-line command that extracts their tensors, run by the user on a file they trust.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping

import torch
from torch import nn

from fovea.errors import CheckpointError, ConfigError

__all__ = ["OfficialFormat", "filter_official", "load_mapped", "load_official", "read_checkpoint", "register_official"]

_WRAPPER_KEYS = ("model", "state_dict", "model_ema", "state_dict_ema", "module")


def read_checkpoint(path_or_state_dict) -> dict[str, torch.Tensor]:
    """A state dict from a dict, a .safetensors file, or a .pth/.pt/.bin file (tensors only).

    Unwraps `{"model": ...}` / `{"state_dict": ...}` and strips a `module.` prefix.
    """
    if isinstance(path_or_state_dict, Mapping):
        sd = dict(path_or_state_dict)
    else:
        path = Path(path_or_state_dict)
        if not path.is_file():
            raise CheckpointError(f"checkpoint {path} does not exist. Fix: pass the downloaded .pth/.safetensors file.")
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            sd = load_file(str(path))
        else:
            try:
                sd = torch.load(path, map_location="cpu", weights_only=True)
            except Exception as exc:
                raise CheckpointError(
                    f"cannot read checkpoint {path} with weights_only=True ({str(exc)[:300]}). fovea never "
                    "unpickles objects. Fix: if the file is corrupt, re-download it; if it also pickles a config "
                    "object (official training checkpoints do) and you trust it, extract the tensors once: load it "
                    "with weights_only=False in your own session and save only its ['model'] state dict."
                ) from exc
    for key in _WRAPPER_KEYS:
        if isinstance(sd.get(key), Mapping) and any(isinstance(v, torch.Tensor) for v in sd[key].values()):
            sd = dict(sd[key])
            break
    sd = {k: v for k, v in sd.items() if isinstance(v, torch.Tensor)}
    if sd and all(k.startswith("module.") for k in sd):
        sd = {k[len("module."):]: v for k, v in sd.items()}
    if not sd:
        raise CheckpointError("checkpoint holds no tensors. Fix: pass the model's state dict or checkpoint file.")
    return sd


def _fit_layout(value: torch.Tensor, want: torch.Size) -> torch.Tensor:
    """Reshape between Linear (out, in) and 1x1-conv (out, in, 1, 1) layouts of the same tensor."""
    if value.shape != want and value.numel() == want.numel() and value.dim() != len(want):
        return value.reshape(want)
    return value


def load_mapped(
    model: nn.Module,
    official: dict[str, torch.Tensor],
    rename: Callable[[str, torch.Tensor], tuple[str, torch.Tensor]],
    source: str = "checkpoint",
) -> nn.Module:
    """Map every official key with `rename`, then require a one-to-one, shape-exact fill.

    Raises CheckpointError listing unconsumed official keys, unfilled model keys and shape
    mismatches (first 20 of each).
    """
    target = model.state_dict()
    mapped: dict[str, torch.Tensor] = {}
    unexpected, mismatched = [], []
    for key, value in official.items():
        new_key, new_value = rename(key, value)
        if new_key not in target:
            unexpected.append(key)
            continue
        want = target[new_key].shape
        new_value = _fit_layout(new_value, want)
        if new_value.shape != want:
            mismatched.append(f"{key} {tuple(value.shape)} -> {new_key} {tuple(want)}")
            continue
        mapped[new_key] = new_value
    missing = [k for k in target if k not in mapped]
    if unexpected or missing or mismatched:
        def show(items):
            return ", ".join(items[:20]) + (f" (+{len(items) - 20} more)" if len(items) > 20 else "") or "none"

        raise CheckpointError(
            f"{source} does not fit {type(model).__name__}: unexpected keys [{show(unexpected)}]; "
            f"missing keys [{show(missing)}]; shape mismatches [{show(mismatched)}]. Fix: pass the model "
            "variant the checkpoint was trained for (model=...), or a checkpoint of this variant."
        )
    model.load_state_dict(mapped, strict=True)
    return model


@dataclass(frozen=True)
class OfficialFormat:
    """How one backbone family's released checkpoints map onto fovea's modules.

    rename(key, tensor) -> (fovea key, tensor); detect(state_dict) -> True for this family's keys;
    infer_variant(state_dict) -> registered variant name (ConfigError when none fits);
    build(variant, num_classes) -> model; head_key: fovea key of the classifier weight.
    """

    family: str
    model_type: type
    rename: Callable[[str, torch.Tensor], tuple[str, torch.Tensor]]
    detect: Callable[[dict], bool]
    infer_variant: Callable[[dict], str]
    build: Callable[[str, int], nn.Module]
    head_key: str


_FORMATS: dict[str, OfficialFormat] = {}


def register_official(fmt: OfficialFormat) -> None:
    """Make `load_official` understand `fmt.family` (called by each family module on import)."""
    _FORMATS[fmt.family] = fmt


def _format_for(sd: dict[str, torch.Tensor], model: nn.Module | None, family: str | None) -> OfficialFormat:
    if family is not None:
        if family not in _FORMATS:
            raise ConfigError(f"unknown backbone family {family!r}. Fix: use one of {sorted(_FORMATS)}.")
        return _FORMATS[family]
    if model is not None:
        for fmt in _FORMATS.values():
            if isinstance(model, fmt.model_type):
                return fmt
        raise ConfigError(
            f"load_official cannot fill a {type(model).__name__}. Fix: pass a model of one of the families "
            f"{sorted(_FORMATS)}, or load it with model.load_state_dict."
        )
    found = [fmt for fmt in _FORMATS.values() if fmt.detect(sd)]
    if len(found) != 1:
        raise ConfigError(
            f"the checkpoint's keys fit {len(found)} of the backbone families {sorted(_FORMATS)}. "
            "Fix: pass family=... or model=..."
        )
    return found[0]


def load_official(path_or_state_dict, model: nn.Module | None = None, family: str | None = None) -> nn.Module:
    """Load an authors' checkpoint (file or state dict) into `model`, or into a new model of the
    variant the tensors describe (family from `family`, `model`'s type, or the keys).

    Raises CheckpointError listing every key that does not map one-to-one; returns the model in
    eval mode.
    """
    sd = read_checkpoint(path_or_state_dict)
    fmt = _format_for(sd, model, family)
    if model is None:
        head = next((v for k, v in sd.items() if fmt.rename(k, v)[0] == fmt.head_key), None)
        model = fmt.build(fmt.infer_variant(sd), head.shape[0] if head is not None else 0)
    source = path_or_state_dict if not isinstance(path_or_state_dict, Mapping) else f"official {fmt.family} state dict"
    return load_mapped(model.eval(), sd, fmt.rename, source=str(source))


def filter_official(state_dict, model: nn.Module) -> dict[str, torch.Tensor]:
    """timm `pretrained_filter_fn`: official keys renamed and laid out for `model` (timm then
    loads them strictly), so official checkpoints work through `timm.create_model`."""
    sd = read_checkpoint(state_dict)
    fmt = _format_for(sd, model, None)
    target = model.state_dict()
    out = {}
    for key, value in sd.items():
        key, value = fmt.rename(key, value)
        out[key] = _fit_layout(value, target[key].shape) if key in target else value
    return out
