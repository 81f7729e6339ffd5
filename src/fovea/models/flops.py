"""FLOPs as VMamba/SparX papers count them (fvcore conventions, 1 multiply-add = 1 FLOP).

Counted: convolutions, matrix products (mm/addmm/bmm/baddbmm, attention), norms as fvcore does
(LayerNorm/GroupNorm 5 per element with affine, eval BatchNorm 2), average pooling (1 per input
element), and each selective scan as 9*B*L*D*N + B*D*L (the authors' formula), reported by the
`SelectiveScanOp` module hook. Element-wise activations and additions are free, as in fvcore.
The scan kernel itself is not run while counting, so the count works on meta tensors too.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import flop_registry

from fovea.nn.ss2d import SelectiveScanOp, scan_flops

__all__ = ["count_flops", "flop_breakdown"]

_aten = torch.ops.aten
_NORMS = {_aten.native_layer_norm, _aten.native_group_norm}
_BATCH_NORM_EVAL = {_aten._native_batch_norm_legit_no_training}
_POOLS = {_aten.mean, _aten.adaptive_avg_pool2d, _aten._adaptive_avg_pool2d}


class _MacCounter(TorchDispatchMode):
    """Counts MACs of aten ops by kind; `paused` > 0 suspends counting (inside a scan)."""

    def __init__(self):
        super().__init__()
        self.counts = {"matmul_conv": 0, "norm_pool": 0, "selective_scan": 0}
        self.paused = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if self.paused:
            return out
        packet = func._overloadpacket
        if packet in flop_registry:
            self.counts["matmul_conv"] += int(flop_registry[packet](*args, **kwargs, out_val=out)) // 2
        elif packet in _NORMS:
            affine = len(args) > 1 and args[1] is not None
            self.counts["norm_pool"] += args[0].numel() * (5 if affine else 4)
        elif packet in _BATCH_NORM_EVAL:
            self.counts["norm_pool"] += args[0].numel() * (2 if args[1] is not None else 1)
        elif packet in _POOLS:
            self.counts["norm_pool"] += args[0].numel()
        return out


def flop_breakdown(model: nn.Module, input_size=(1, 3, 224, 224), device=None) -> dict[str, int]:
    """FLOPs by kind: {"matmul_conv", "norm_pool", "selective_scan", "total"} for one forward."""
    if device is None:
        device = next(model.parameters()).device
    counter = _MacCounter()
    handles = []

    def pre(_m, _inp):
        counter.paused += 1

    def post(_m, inp, _out):
        counter.paused -= 1
        u, a_mat = inp[0], inp[2]
        counter.counts["selective_scan"] += scan_flops(tuple(u.shape), a_mat.shape[1])

    for m in model.modules():
        if isinstance(m, SelectiveScanOp):
            handles.append(m.register_forward_pre_hook(pre))
            handles.append(m.register_forward_hook(post))
    was_training = model.training
    model.eval()
    SelectiveScanOp.skip_compute = True
    try:
        x = torch.empty(input_size, device=device)
        with torch.no_grad(), counter:
            model(x)
    finally:
        SelectiveScanOp.skip_compute = False
        for h in handles:
            h.remove()
        model.train(was_training)
    out = dict(counter.counts)
    out["total"] = sum(out.values())
    return out


def count_flops(model: nn.Module, input_size=(1, 3, 224, 224), device=None) -> int:
    """Total FLOPs (MACs) of one forward at `input_size`, scans included; see module docstring."""
    return flop_breakdown(model, input_size, device)["total"]


def gflops(model: nn.Module, input_size=(1, 3, 224, 224)) -> float:
    """count_flops in units of 1e9, rounded to 0.01."""
    return math.floor(count_flops(model, input_size) / 1e7 + 0.5) / 100
