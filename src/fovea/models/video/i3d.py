"""I3D (Carreira & Zisserman, CVPR 2017): 2D ImageNet networks inflated to 3D.

`i3d_r50` is MMAction2's I3D-R50 (conv1 5x7x7, temporal strides 2 at conv1 and pool1, a (2,1,1)
pool after res2, inflated blocks ((1,1,1),(1,0,1,0),(1,0,1,0,1,0),(0,1,0)) in "3x1x1" style):
28.04 M parameters with a 400-way head, 33.13 GMACs at 32x224^2 (43.5 at MMAction2's 256^2 crop).
`inflate_resnet50` loads a torchvision-layout 2D ResNet-50 state dict into it; `i3d_lite0`
inflates the offline ImageNet EfficientNet-Lite0 (every k x k convolution -> k_t x k x k).
With temporal_pad="replicate" a static clip reproduces the 2D network's output exactly.
"""

from __future__ import annotations

import copy
import functools

import torch
import torch.nn.functional as F
from torch import nn

from fovea.errors import WeightsError
from fovea.models.video._registry import register_video_model
from fovea.models.video.resnet3d import Recognizer3d, ResNet3d, TemporalPadConv3d, conv3d, inflate_state_dict


def build_i3d_r50(num_classes: int = 400, *, temporal_pad: str = "zeros", features_only: bool = False,
                  dropout: float = 0.5, non_local=None, non_local_factory=None, in_channels: int = 3) -> Recognizer3d:
    """I3D-R50 recognizer; `non_local`/`non_local_factory` insert Non-local blocks (see non_local.py)."""
    kw = {} if non_local is None else {"non_local": non_local, "non_local_factory": non_local_factory}
    conv = functools.partial(conv3d, temporal_pad=temporal_pad)
    backbone = ResNet3d(50, in_channels=in_channels, conv1_kernel=(5, 7, 7), conv1_stride_t=2, pool1_stride_t=2,
                        with_pool2=True, conv=conv, **kw)
    return Recognizer3d(backbone, num_classes, dropout, features_only)


@register_video_model
def i3d_r50(*, num_classes: int = 400, **kwargs) -> Recognizer3d:
    """I3D-R50, MMAction2 `i3d_imagenet-pretrained-r50_8xb8-32x2x1-100e_kinetics400-rgb`."""
    return build_i3d_r50(num_classes, **kwargs)


@register_video_model
def i3d_r50_8x8(*, num_classes: int = 400, dropout: float = 0.5, features_only: bool = False) -> Recognizer3d:
    """I3D-R50 8x8 as PySlowFast / PyTorchVideo `i3d_r50` build it (no temporal stride in the stem,
    the (2,1,1) pool after res2): same blocks as `i3d_r50`, 28.04 M params, 28.41 GMACs at 8x224^2."""
    backbone = ResNet3d(50, conv1_kernel=(5, 7, 7), conv1_stride_t=1, pool1_stride_t=1, with_pool2=True)
    return Recognizer3d(backbone, num_classes, dropout, features_only)


def inflate_resnet50(model: Recognizer3d, sd2d: dict[str, torch.Tensor], with_fc: bool = False) -> Recognizer3d:
    """Load a torchvision-layout ResNet-50 state dict (conv1, bn1, layer1..4, fc) into an I3D-R50.

    The 2D classifier is copied too when `with_fc` and the class counts match."""
    sd3d = inflate_state_dict(sd2d, model.backbone, prefix="")
    missing = set(k for k in model.backbone.state_dict() if not k.endswith("num_batches_tracked")) - set(sd3d)
    if missing:
        raise WeightsError(f"2D ResNet-50 state dict lacks {len(missing)} tensors, e.g. {sorted(missing)[:3]}. "
                           "Fix: pass a torchvision-layout resnet50 state dict.")
    model.backbone.load_state_dict(sd3d, strict=False)
    if with_fc and model.head is not None:
        model.head.fc.load_state_dict({"weight": sd2d["fc.weight"], "bias": sd2d["fc.bias"]})
    return model


class BatchNormAct3d(nn.Module):
    """A 2D BatchNorm (optionally with timm's fused activation) applied to (B, C, T, H, W)."""

    def __init__(self, bn2d: nn.BatchNorm2d):
        super().__init__()
        self.bn = nn.BatchNorm3d(bn2d.num_features, bn2d.eps, bn2d.momentum, bn2d.affine, bn2d.track_running_stats)
        self.bn.load_state_dict(bn2d.state_dict())
        self.act = copy.deepcopy(getattr(bn2d, "act", nn.Identity()))
        self.drop = copy.deepcopy(getattr(bn2d, "drop", nn.Identity()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.drop(self.bn(x)))


class GlobalAvgPool3d(nn.Module):
    """(B, C, T, H, W) -> (B, C): the inflated form of a 2D global average pool + flatten."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3, 4))


def inflate_module(model2d: nn.Module, time_kernel: int = 3, temporal_pad: str = "zeros") -> nn.Module:
    """A 3D copy of a 2D CNN: each k x k (k > 1) Conv2d -> time_kernel x k x k Conv3d with the 2D
    kernel repeated over time / time_kernel, 1x1 -> 1x1x1; BatchNorm2d -> BatchNorm3d; global pools
    -> over (T, H, W). Works for networks built from modules (timm EfficientNet, ResNet)."""
    model = copy.deepcopy(model2d)

    def swap(parent: nn.Module) -> None:
        for name, child in parent.named_children():
            new = None
            if isinstance(child, nn.Conv2d):
                kt = time_kernel if max(child.kernel_size) > 1 else 1
                new = TemporalPadConv3d(child.in_channels, child.out_channels, (kt, *child.kernel_size),
                                        (1, *child.stride), (kt // 2, *child.padding), (1, *child.dilation),
                                        child.groups, child.bias is not None, temporal_pad=temporal_pad)
                with torch.no_grad():
                    new.weight.copy_(child.weight.unsqueeze(2).repeat(1, 1, kt, 1, 1) / kt)
                    if child.bias is not None:
                        new.bias.copy_(child.bias)
            elif isinstance(child, nn.BatchNorm2d):
                new = BatchNormAct3d(child)
            elif type(child).__name__ in ("SelectAdaptivePool2d", "AdaptiveAvgPool2d"):
                new = GlobalAvgPool3d()
            if new is not None:
                setattr(parent, name, new)
            else:
                swap(child)

    swap(model)
    return model


class InflatedLite0(nn.Module):
    """EfficientNet-Lite0 inflated to 3D (ImageNet weights from the offline package when weights="default").

    forward (B, 3, T, H, W) -> (B, num_classes); `forward_features` -> (B, 1280, T, H/32, W/32)."""

    def __init__(self, num_classes: int = 1000, weights: str | None = "default", time_kernel: int = 3,
                 temporal_pad: str = "zeros", dropout: float = 0.2):
        super().__init__()
        from fovea.weights import create_backbone

        net2d = create_backbone("efficientnet_lite0", weights=weights)
        if num_classes != 1000:
            net2d.reset_classifier(num_classes)
        self.net = inflate_module(net2d, time_kernel, temporal_pad)
        self.net.drop_rate = dropout
        self.num_features = 1280

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.forward_features(x)

    def forward_head(self, feats: torch.Tensor) -> torch.Tensor:
        x = self.net.global_pool(feats)
        x = F.dropout(x, self.net.drop_rate, self.training)
        return self.net.classifier(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


@register_video_model
def i3d_lite0(*, num_classes: int = 1000, weights: str | None = "default", **kwargs) -> InflatedLite0:
    """I3D from the offline ImageNet EfficientNet-Lite0 (1000 ImageNet classes unless num_classes)."""
    return InflatedLite0(num_classes, weights, **kwargs)
