"""LoRA adapters (Hu et al. 2021) around nn.Linear and nn.Conv2d, with exact merge and unmerge.

y = base(x) + scaling * B(A(dropout(x))), scaling = alpha / rank. A starts as kaiming-uniform
(a = sqrt(5), the nn.Linear default, as peft does), B at zero, so a fresh adapter changes nothing.
For a conv, A is a conv with the base's kernel, stride, padding and dilation to `rank` channels and
B a 1x1 conv back to C_out, so the update is one weight of the base's shape:
delta_W[o, i, y, x] = scaling * sum_r B[o, r] A[r, i, y, x]. Grouped convs are not wrapped.

`merge()` adds delta_W to the base weight and `unmerge()` restores the weight saved at merge
time, bit for bit (a subtraction would leave rounding residue).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["LoRAConv2d", "LoRALinear"]


class _LoRABase(nn.Module):
    """Common state: the frozen base layer, rank, scaling, dropout and the merged flag."""

    def __init__(self, base: nn.Module, rank: int, alpha: float, dropout: float):
        super().__init__()
        if rank < 1:
            raise ValueError(f"LoRA rank must be >= 1, got {rank}")
        self.base = base
        self.rank, self.alpha = int(rank), float(alpha)
        self.scaling = self.alpha / self.rank
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.merged = False
        self._weight_before_merge: torch.Tensor | None = None
        for p in base.parameters():
            p.requires_grad_(False)

    def delta_weight(self) -> torch.Tensor:
        raise NotImplementedError

    @torch.no_grad()
    def merge(self) -> None:
        """Fold the adapter into the base weight (inference without the extra matmuls)."""
        if self.merged:
            return
        self._weight_before_merge = self.base.weight.detach().clone()
        self.base.weight.add_(self.delta_weight().to(self.base.weight.dtype))
        self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        """Restore the base weight exactly as it was before `merge`."""
        if not self.merged:
            return
        self.base.weight.copy_(self._weight_before_merge)
        self._weight_before_merge = None
        self.merged = False


class LoRALinear(_LoRABase):
    """LoRA around nn.Linear: (..., in_features) -> (..., out_features).

    `channels_first=True` is for per-pixel linears on (B, C, H, W) maps (VMamba's `Linear2d`): the
    adapter then acts on dim 1, as the base does.
    """

    def __init__(self, base: nn.Linear, rank: int = 8, alpha: float = 16.0, dropout: float = 0.0,
                 channels_first: bool = False):
        super().__init__(base, rank, alpha, dropout)
        self.channels_first = channels_first
        self.lora_A = nn.Parameter(torch.empty(rank, base.in_features))
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, rank))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))

    def delta_weight(self) -> torch.Tensor:
        """(out_features, in_features) = scaling * B A."""
        return (self.lora_B @ self.lora_A) * self.scaling

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.base(x)
        if self.merged:
            return y
        if self.channels_first:
            h = F.conv2d(self.dropout(x), self.lora_A[:, :, None, None])
            return y + F.conv2d(h, self.lora_B[:, :, None, None]) * self.scaling
        return y + F.linear(F.linear(self.dropout(x), self.lora_A), self.lora_B) * self.scaling


class LoRAConv2d(_LoRABase):
    """LoRA around nn.Conv2d (groups = 1): (B, C_in, H, W) -> (B, C_out, H', W')."""

    def __init__(self, base: nn.Conv2d, rank: int = 8, alpha: float = 16.0, dropout: float = 0.0):
        if base.groups != 1:
            raise ValueError(f"LoRAConv2d wraps ungrouped convs only, got groups={base.groups}")
        super().__init__(base, rank, alpha, dropout)
        c_out, c_in, kh, kw = base.weight.shape
        self.lora_A = nn.Parameter(torch.empty(rank, c_in, kh, kw))
        self.lora_B = nn.Parameter(torch.zeros(c_out, rank, 1, 1))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))

    def delta_weight(self) -> torch.Tensor:
        """(C_out, C_in, kh, kw) = scaling * sum_r B[:, r] A[r]."""
        a = self.lora_A.flatten(1)
        return (self.lora_B.flatten(1) @ a).reshape(self.base.weight.shape) * self.scaling

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.base(x)
        if self.merged:
            return y
        b = self.base
        h = F.conv2d(self.dropout(x), self.lora_A, None, b.stride, b.padding, b.dilation)
        return y + F.conv2d(h, self.lora_B) * self.scaling
