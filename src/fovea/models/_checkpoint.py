"""Reading authors' released checkpoints without unpickling code, and strict key matching.

Files are read with safetensors or `torch.load(weights_only=True)` only. Official training
checkpoints that also pickle a config object (`{"model": ..., "config": <CfgNode>}`) are refused
with the one-line command that extracts their tensors, run by the user on a file they trust.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Mapping

import torch
from torch import nn

from fovea.errors import CheckpointError

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
        if new_value.shape != want and new_value.numel() == want.numel() and new_value.dim() != len(want):
            new_value = new_value.reshape(want)  # Linear <-> 1x1-conv layouts
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
