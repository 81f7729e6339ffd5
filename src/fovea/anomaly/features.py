"""Frozen multi-stage feature extraction from any timm backbone with `features_only`."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from fovea.engine.runtime import FrozenGraph, inference_graph_allowed
import fovea.models  # noqa: F401  (registers fovea's own backbones, vmamba_* / sparx_*, in timm)
from fovea.weights import create_backbone


def _weights_changed(module: "FeatureExtractor", incompatible_keys) -> None:
    module._frozen.clear()


class FeatureExtractor(nn.Module):
    """Frozen timm backbone returning the feature maps of `layers` (timm feature indices).

    forward(x (B, 3, H, W) normalised) -> list of (B, C_i, H / r_i, W / r_i).

    Without autograd (fit, predict, a frozen teacher under no_grad) the backbone runs as a frozen
    TorchScript graph (`fovea.engine.runtime.FrozenGraph`: batch norm folded, oneDNN convolutions),
    checked against eager execution on each new input shape; while tracing or exporting, and with
    FOVEA_FROZEN_GRAPH=0, it runs eagerly. The exported graph is therefore always the plain one.
    """

    def __init__(self, backbone: str, layers: Sequence[int], weights: str | None = "default"):
        super().__init__()
        self.backbone_name = backbone
        self.layers = tuple(int(i) for i in layers)
        self.net = create_backbone(backbone, weights=weights, features_only=True, out_indices=self.layers)
        self.weights_source = getattr(self.net, "fovea_weights", None)
        self.channels = list(self.net.feature_info.channels())
        self.reductions = list(self.net.feature_info.reduction())
        self.net.eval()
        for p in self.net.parameters():
            p.requires_grad_(False)
        self.__dict__["_frozen"] = FrozenGraph()  # a plain attribute: not a submodule, not in state_dict
        self.register_load_state_dict_post_hook(_weights_changed)

    def _apply(self, fn, *args, **kwargs):  # .to(), .double(), ...: the frozen graph holds old weights
        out = super()._apply(fn, *args, **kwargs)
        self._frozen.clear()
        return out

    def train(self, mode: bool = True) -> "FeatureExtractor":
        super().train(mode)
        self.net.eval()  # BN statistics stay frozen even while a wrapper trains
        return self

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        if inference_graph_allowed(x):
            return self._frozen(self.net, x)
        return list(self.net(x))
