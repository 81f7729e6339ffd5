"""Batch-norm statistics for quantized models: `recalibrate_batchnorm`.

After `ternarize` the layers' outputs no longer have the statistics the fp32 BatchNorms hold; training
with those statistics frozen, or evaluating with them, gave the ternary apple classifier chance accuracy
(docs/benchmarks/compress.md, qat section).
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["recalibrate_batchnorm"]


def recalibrate_batchnorm(model: nn.Module, batches) -> int:
    """Re-estimate every BatchNorm's running mean / variance with the model as it is now (no gradients).

    After `ternarize` the layers' outputs no longer have the statistics the fp32 BatchNorms hold (on the
    apple classifier the unchanged fp32 statistics gave chance accuracy, before and after QAT): run this on
    training images after ternarizing and again after quantization-aware training. `batches` yields model
    inputs (or dicts with "image"); each batch weighs the same (PyTorch's cumulative average, momentum
    None), the variance is the unbiased one as in training. The model's train/eval mode and each layer's
    momentum are restored. Returns the number of BatchNorm layers re-estimated.
    """
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    if not bns:
        return 0
    modes = {m: m.training for m in model.modules()}
    momenta = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
    seen = 0
    try:
        model.train()
        with torch.no_grad():
            for batch in batches:
                model(batch["image"] if isinstance(batch, dict) else batch)
                seen += 1
    finally:
        for m, momentum in zip(bns, momenta):
            m.momentum = momentum
        for m, mode in modes.items():
            m.training = mode
    if not seen:
        raise ValueError("recalibrate_batchnorm got no batches; pass an iterable of training images")
    return len(bns)
