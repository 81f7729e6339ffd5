"""recalibrate_batchnorm against the closed form: each batch norm's running mean / variance is the plain
average over batches of that batch's channel mean / unbiased variance of the layer's input."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from fovea.compress import recalibrate_batchnorm, ternarize


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.Conv2d(8, 4, 1), nn.BatchNorm2d(4, momentum=0.3), nn.Dropout(0.5)).eval()


def test_running_statistics_are_the_average_of_per_batch_statistics():
    model = _model()
    ternarize(model)  # the case it is for: the fp32 statistics no longer fit the ternary outputs
    g = torch.Generator().manual_seed(1)
    batches = [torch.randn(5, 3, 6, 6, generator=g) * 2 + 1 for _ in range(3)]
    # independent reference: the inputs of each BN layer with batch statistics, layer by layer
    conv1, bn1, conv2, bn2 = model[0], model[1], model[3], model[4]
    means1, vars1, means2, vars2 = [], [], [], []
    with torch.no_grad():
        for x in batches:
            h = conv1(x)
            means1.append(h.mean((0, 2, 3)))
            vars1.append(h.var((0, 2, 3), unbiased=True))
            hn = (h - h.mean((0, 2, 3), keepdim=True)) / torch.sqrt(h.var((0, 2, 3), unbiased=False, keepdim=True) + bn1.eps)
            h2 = conv2(torch.relu(hn * bn1.weight[:, None, None] + bn1.bias[:, None, None]))
            means2.append(h2.mean((0, 2, 3)))
            vars2.append(h2.var((0, 2, 3), unbiased=True))
    weights = [p.clone() for p in model.parameters()]
    assert recalibrate_batchnorm(model, batches) == 2
    torch.testing.assert_close(bn1.running_mean, torch.stack(means1).mean(0), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(bn1.running_var, torch.stack(vars1).mean(0), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(bn2.running_mean, torch.stack(means2).mean(0), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(bn2.running_var, torch.stack(vars2).mean(0), rtol=1e-4, atol=1e-5)
    assert all(torch.equal(a, b) for a, b in zip(weights, model.parameters()))  # weights untouched
    assert not model.training and not bn1.training  # eval mode restored
    assert bn1.momentum == 0.1 and bn2.momentum == 0.3  # momenta restored
    assert int(bn1.num_batches_tracked) == 3


def test_dict_batches_and_train_mode_kept():
    model = _model().train()
    model[0].requires_grad_(False)
    batches = [{"image": torch.randn(4, 3, 5, 5)} for _ in range(2)]
    assert recalibrate_batchnorm(model, batches) == 2
    assert model.training and model[5].training


def test_no_batches_is_an_error_naming_the_fix():
    with pytest.raises(ValueError, match="no batches"):
        recalibrate_batchnorm(_model(), [])
