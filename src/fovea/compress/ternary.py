"""Ternarize any fovea model and store it packed: `ternarize`, `save_packed`, `load_packed`.

`ternarize` swaps plain nn.Linear / nn.Conv2d layers (and VMamba's per-pixel `Linear2d`) (selected by fnmatch patterns on their
qualified names) for `fovea.nn.ternary.BitLinear` / `BitConv2d` sharing the same Parameters, so
the model trains on as before with straight-through ternary weights (quantization-aware
fine-tuning). Other subclasses with their own forward (timm's Conv2dSame) are left alone and
listed as skipped with the reason.

`save_packed` writes one safetensors file: every ternary layer as `<name>.weight.packed` (uint8,
HF 2-bit layout, see packing.py) plus `<name>.weight.scale` (fp32), every other tensor of the state
dict unchanged, and the layer list in the header metadata. `load_packed` replaces those layers of a
model of the same architecture by frozen `PackedBitLinear` / `PackedBitConv2d` and loads it.
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

from fovea.compress.kernel import PackedBitConv2d, PackedBitLinear
from fovea.compress.packing import pack_ternary
from fovea.errors import CheckpointError
from fovea.nn.layers import Linear2d
from fovea.nn.ternary import BitConv2d, BitLinear, BitLinear2d, absmean_ternary

__all__ = ["FORMAT", "TernarizeReport", "load_packed", "save_packed", "ternarize", "ternary_layers"]

FORMAT = "fovea-ternary-packed"
LAYOUT = "hf-bitnet-dim0-2bit"  # transformers.integrations.bitnet.pack_weights


@dataclass
class TernarizeReport:
    """What `ternarize` did: converted layer names and (name, reason) of matching layers left alone."""

    converted: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)


def _matches(name: str, patterns) -> bool:
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)


def _set_child(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, module)


def ternarize(model: nn.Module, include=("*",), exclude=(), convs: bool = True,
              quantize_activations: bool = True) -> TernarizeReport:
    """Replace matching Linear (and, if `convs`, Conv2d) layers of `model` in place by ternary ones.

    include / exclude: fnmatch patterns on qualified module names ("head*", "*.qkv"); a layer is
    converted when it matches include and no exclude pattern. Returns a TernarizeReport.
    """
    if isinstance(include, str) or isinstance(exclude, str):
        raise TypeError("include / exclude take a sequence of patterns, e.g. include=('blocks.*',)")
    report = TernarizeReport()
    for name, module in list(model.named_modules()):
        if not name or not _matches(name, include) or _matches(name, exclude):
            continue
        if isinstance(module, (BitLinear, BitConv2d, PackedBitLinear, PackedBitConv2d)):
            continue
        if type(module) is Linear2d:  # per-pixel linear on (B, C, H, W) (VMamba)
            _set_child(model, name, BitLinear2d.from_linear(module, quantize_activations))
            report.converted.append(name)
            continue
        if isinstance(module, nn.Linear):
            if type(module).forward is not nn.Linear.forward:
                report.skipped.append((name, f"{type(module).__name__} has its own forward"))
                continue
            _set_child(model, name, BitLinear.from_linear(module, quantize_activations))
            report.converted.append(name)
        elif isinstance(module, nn.Conv2d) and convs:
            if type(module).forward is not nn.Conv2d.forward or module.padding_mode != "zeros":
                report.skipped.append((name, f"{type(module).__name__} has its own forward or padding mode"))
                continue
            _set_child(model, name, BitConv2d.from_conv(module, quantize_activations))
            report.converted.append(name)
    return report


def ternary_layers(model: nn.Module) -> dict[str, nn.Module]:
    """Qualified name -> module of every BitLinear / BitConv2d in `model`."""
    return {n: m for n, m in model.named_modules() if isinstance(m, (BitLinear, BitConv2d))}


def save_packed(model: nn.Module, path) -> dict[str, int]:
    """Write the ternarized `model` to `path` (.safetensors) with 2-bit packed ternary weights.

    Returns byte counts: {"packed_bytes": packed codes + scales, "fp32_bytes_of_ternary": what the
    same weights take in fp32, "file_bytes": size of the written file}.
    """
    layers = ternary_layers(model)
    if not layers:
        raise CheckpointError(f"save_packed({path}): the model has no ternary layers; call "
                              "fovea.compress.ternarize(model) first")
    tensors, meta, packed_bytes, fp32_bytes = {}, {}, 0, 0
    skip = set()
    for name, layer in layers.items():
        codes, scale = absmean_ternary(layer.weight)
        packed = pack_ternary(codes.reshape(codes.shape[0], -1))
        tensors[f"{name}.weight.packed"] = packed
        tensors[f"{name}.weight.scale"] = scale.reshape(())
        packed_bytes += packed.numel() + 4
        fp32_bytes += layer.weight.numel() * 4
        skip.add(f"{name}.weight")
        kind = "linear2d" if isinstance(layer, BitLinear2d) else "linear" if isinstance(layer, BitLinear) else "conv2d"
        meta[name] = {"kind": kind,
                      "shape": list(layer.weight.shape), "quantize_activations": layer.quantize_activations}
    for key, value in model.state_dict().items():
        if key not in skip:
            tensors[key] = value.detach().contiguous().clone()
    header = {"format": FORMAT, "version": "1", "layout": LAYOUT, "layers": json.dumps(meta)}
    save_file(tensors, str(path), metadata=header)
    return {"packed_bytes": packed_bytes, "fp32_bytes_of_ternary": fp32_bytes,
            "file_bytes": Path(path).stat().st_size}


def _packed_module(name: str, info: dict, model: nn.Module, path) -> nn.Module:
    try:
        old = model.get_submodule(name)
    except AttributeError as exc:
        raise CheckpointError(f"{path}: layer {name!r} of the packed file is not in the model ({exc}); "
                              "build the same architecture the file was saved from") from None
    if list(old.weight.shape) != info["shape"]:
        raise CheckpointError(f"{path}: layer {name!r} has weight shape {info['shape']} in the file but "
                              f"{list(old.weight.shape)} in the model; build the saved architecture")
    if info["kind"] in ("linear", "linear2d"):
        return PackedBitLinear(old.in_features, old.out_features, bias=old.bias is not None,
                               quantize_activations=info["quantize_activations"],
                               channels_first=info["kind"] == "linear2d")
    return PackedBitConv2d(old, quantize_activations=info["quantize_activations"])


def load_packed(model: nn.Module, path) -> nn.Module:
    """Load a `save_packed` file into `model` (same architecture, float or ternarized) and return it.

    The ternary layers become frozen PackedBitLinear / PackedBitConv2d holding the packed codes and
    scales bit for bit as saved; every other tensor is loaded strictly.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"load_packed: {path} does not exist; write it with fovea.compress.save_packed")
    with safe_open(str(path), framework="pt") as f:
        header = f.metadata() or {}
        if header.get("format") != FORMAT or header.get("layout") != LAYOUT:
            raise CheckpointError(f"{path}: not a fovea packed ternary file (metadata {header.get('format')!r}, "
                                  f"layout {header.get('layout')!r}); expected {FORMAT} / {LAYOUT}")
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    meta = json.loads(header["layers"])
    state = {}
    for name, info in meta.items():
        _set_child(model, name, _packed_module(name, info, model, path))
    for key, value in tensors.items():
        state[key[: -len(".weight.packed")] + ".packed" if key.endswith(".weight.packed") else
              key[: -len(".weight.scale")] + ".scale" if key.endswith(".weight.scale") else key] = value
    result = model.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise CheckpointError(f"{path}: keys do not match the model; missing {result.missing_keys[:8]}, "
                              f"unexpected {result.unexpected_keys[:8]}")
    return model
