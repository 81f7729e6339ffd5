"""Name -> builder table behind `fovea.video.create_model` / `list_models` (filled on import)."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from fovea.errors import ConfigError

_BUILDERS: dict[str, Callable[..., nn.Module]] = {}


def register_video_model(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """Decorator: register a keyword-only builder under its function name."""
    _BUILDERS[fn.__name__] = fn
    return fn


def list_models() -> list[str]:
    """Names of every registered video model, sorted."""
    return sorted(_BUILDERS)


def create_model(name: str, **kwargs) -> nn.Module:
    """Build video model `name` (random init unless the builder takes `weights=`)."""
    if name not in _BUILDERS:
        raise ConfigError(f"unknown video model {name!r}. Fix: pick one of {', '.join(list_models())}")
    return _BUILDERS[name](**kwargs)
