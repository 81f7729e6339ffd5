"""LoRA for any fovea backbone: `add_lora`, `merge_lora` / `unmerge_lora`, adapters saved alone.

    from fovea.compress import lora
    report = lora.add_lora(model, rank=8, include=("blocks.*",), train_also=("head*",))
    ...fit only the adapters (the engine trains parameters with requires_grad)...
    lora.save_lora(model, "adapters.safetensors")          # a few hundred KB, not the backbone
    lora.load_lora(fresh_model_with_same_add_lora, "adapters.safetensors")
    lora.remove_lora(model, merge=True)                    # plain layers again, adapters folded in

Wraps nn.Linear, VMamba's per-pixel `Linear2d` and ungrouped nn.Conv2d (subclasses with their own
forward and grouped / depthwise convs are listed as skipped with the reason). Patterns are fnmatch on qualified module names.
"""

from __future__ import annotations

import fnmatch
import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from fovea.errors import CheckpointError
from fovea.nn.layers import Linear2d
from fovea.nn.lora import LoRAConv2d, LoRALinear

__all__ = ["LoRAReport", "add_lora", "load_lora", "lora_modules", "lora_state_dict", "merge_lora",
           "remove_lora", "save_lora", "unmerge_lora"]

FORMAT = "fovea-lora"


@dataclass
class LoRAReport:
    """What `add_lora` did: wrapped names, (name, reason) left alone, and trainable parameter counts."""

    wrapped: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    trainable_params: int = 0
    total_params: int = 0


def _match(name: str, patterns) -> bool:
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)


def _set_child(model: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, module)


def _wrap(module: nn.Module, rank: int, alpha: float, dropout: float) -> nn.Module | str:
    """The LoRA wrapper for `module`, or the reason it is not wrapped."""
    if isinstance(module, Linear2d):
        return LoRALinear(module, rank, alpha, dropout, channels_first=True)
    if isinstance(module, nn.Linear):
        if type(module).forward is not nn.Linear.forward:
            return f"{type(module).__name__} has its own forward"
        return LoRALinear(module, rank, alpha, dropout)
    if isinstance(module, nn.Conv2d):
        if type(module).forward is not nn.Conv2d.forward or module.padding_mode != "zeros":
            return f"{type(module).__name__} has its own forward or padding mode"
        if module.groups != 1:
            return f"grouped conv (groups={module.groups})"
        return LoRAConv2d(module, rank, alpha, dropout)
    return ""


def add_lora(model: nn.Module, rank: int = 8, alpha: float = 16.0, dropout: float = 0.0, include=("*",),
             exclude=(), train_also=()) -> LoRAReport:
    """Wrap matching Linear / Conv2d layers of `model` in place; freeze everything but the adapters.

    train_also: patterns of parameter names that stay trainable too (e.g. a new head, "head.*").
    """
    if any(isinstance(p, str) for p in (include, exclude, train_also)):
        raise TypeError("include / exclude / train_also take sequences of patterns, e.g. include=('blocks.*',)")
    for p in model.parameters():
        p.requires_grad_(False)
    report = LoRAReport()
    for name, module in list(model.named_modules()):
        if not name or not _match(name, include) or _match(name, exclude):
            continue
        parent = name.rpartition(".")[0]
        if isinstance(module, (LoRALinear, LoRAConv2d)) or isinstance(
                model.get_submodule(parent) if parent else model, (LoRALinear, LoRAConv2d)):
            continue  # already wrapped, or the base layer inside a wrapper
        if not isinstance(module, (nn.Linear, nn.Conv2d)):
            continue
        if _match(name, train_also):
            report.skipped.append((name, "trained in full (train_also)"))
            continue
        wrapped = _wrap(module, rank, alpha, dropout)
        if isinstance(wrapped, str):
            report.skipped.append((name, wrapped))
            continue
        _set_child(model, name, wrapped)
        report.wrapped.append(name)
    for name, p in model.named_parameters():
        if _match(name, train_also) or ".lora_" in f".{name}":
            p.requires_grad_(True)
    report.trainable_params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    report.total_params = sum(p.numel() for p in model.parameters())
    return report


def lora_modules(model: nn.Module) -> dict[str, nn.Module]:
    """Qualified name -> LoRALinear / LoRAConv2d of every adapter in `model`."""
    return {n: m for n, m in model.named_modules() if isinstance(m, (LoRALinear, LoRAConv2d))}


def merge_lora(model: nn.Module) -> None:
    """Fold every adapter into its base weight (outputs unchanged up to float rounding)."""
    for m in lora_modules(model).values():
        m.merge()


def unmerge_lora(model: nn.Module) -> None:
    """Undo `merge_lora`: every base weight back bit for bit."""
    for m in lora_modules(model).values():
        m.unmerge()


def remove_lora(model: nn.Module, merge: bool = True) -> None:
    """Replace every wrapper by its base layer, with the adapter folded in when `merge`."""
    for name, m in lora_modules(model).items():
        if merge:
            m.merge()
        else:
            m.unmerge()
        _set_child(model, name, m.base)


def lora_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The trainable tensors only: adapter A/B of every wrapper plus parameters kept trainable."""
    return {n: p.detach().contiguous().clone() for n, p in model.named_parameters() if p.requires_grad}


def save_lora(model: nn.Module, path) -> int:
    """Write the adapters (and any other trainable parameters) to `path`; returns the file size in bytes."""
    mods = lora_modules(model)
    if not mods:
        raise CheckpointError(f"save_lora({path}): the model has no LoRA adapters; call add_lora first")
    if any(m.merged for m in mods.values()):
        raise CheckpointError(f"save_lora({path}): adapters are merged; call unmerge_lora(model) first")
    meta = {n: {"rank": m.rank, "alpha": m.alpha} for n, m in mods.items()}
    save_file(lora_state_dict(model), str(path), metadata={"format": FORMAT, "adapters": json.dumps(meta)})
    return Path(path).stat().st_size


def load_lora(model: nn.Module, path) -> None:
    """Load a `save_lora` file into a model that got the same `add_lora` call."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"load_lora: {path} does not exist; write it with fovea.compress.lora.save_lora")
    with safe_open(str(path), framework="pt") as f:
        if (f.metadata() or {}).get("format") != FORMAT:
            raise CheckpointError(f"{path}: not a fovea LoRA file (no format={FORMAT!r} metadata)")
        tensors = {k: f.get_tensor(k) for k in f.keys()}
        meta = json.loads(f.metadata()["adapters"])
    mods = lora_modules(model)
    missing = sorted(set(meta) - set(mods))
    wrong = [n for n in meta if n in mods and (mods[n].rank, mods[n].alpha) != (meta[n]["rank"], meta[n]["alpha"])]
    if missing or wrong:
        raise CheckpointError(f"{path}: adapters {missing[:5]} are not in the model and {wrong[:5]} differ in "
                              "rank/alpha; call add_lora with the settings the file was saved with")
    params = dict(model.named_parameters())
    unknown = sorted(set(tensors) - set(params))
    if unknown:
        raise CheckpointError(f"{path}: tensors {unknown[:5]} have no parameter in the model")
    with torch.no_grad():
        for k, v in tensors.items():
            if params[k].shape != v.shape:
                raise CheckpointError(f"{path}: {k} has shape {tuple(v.shape)}, the model {tuple(params[k].shape)}")
            params[k].copy_(v)
