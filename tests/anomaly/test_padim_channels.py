"""PaDiM's channel rules (issue 12): the variance rule against numpy, streaming fit, stride, errors."""

import json

import numpy as np
import pytest
import torch

from fovea.anomaly.padim import Padim, choose_by_variance
from fovea.errors import ConfigError


def _numpy_top_variance(e: np.ndarray, n: int, largest: bool = True) -> list[int]:
    """e (N, C, h, w): per channel and position the variance over images, averaged over positions."""
    var = e.reshape(e.shape[0], e.shape[1], -1).var(axis=0, ddof=1).mean(1)
    sign = -1 if largest else 1
    return sorted(sorted(range(len(var)), key=lambda c: (sign * var[c], c))[:n])


def test_choose_by_variance_matches_numpy():
    g = torch.Generator().manual_seed(0)
    e = torch.randn(6, 12, 4, 5, generator=g) * torch.linspace(0.1, 3.0, 12).roll(5)[None, :, None, None]
    assert choose_by_variance(e, 5).tolist() == _numpy_top_variance(e.double().numpy(), 5)
    low = choose_by_variance(e, 5, largest=False).tolist()
    assert low == _numpy_top_variance(e.double().numpy(), 5, largest=False)
    assert not set(low) & set(choose_by_variance(e, 5).tolist())


def test_variance_rule_fit_uses_first_images_and_streams_the_rest():
    torch.manual_seed(0)
    model = Padim(weights="random", n_features=8, rule_images=3, channel_rule="variance").eval()
    batches = [torch.randn(2, 3, 32, 32), torch.randn(2, 3, 32, 32), torch.randn(1, 3, 32, 32)]
    with torch.no_grad():
        full = torch.cat([model.all_channels(b) for b in batches]).double().numpy()  # (5, C, h, w)
    model.fit(iter(batches))  # a one-shot iterator, as the workflow passes
    chosen = _numpy_top_variance(full[:4], 8)  # the rule sees whole batches up to >= 3 images: 4
    assert model.channel_index.tolist() == chosen
    e = full[:, chosen]  # all 5 images enter the Gaussians
    n, d, h, w = e.shape
    samples = e.reshape(n, d, h * w)[:, :, 7]
    np.testing.assert_allclose(model.mean[7].numpy(), samples.mean(0), rtol=1e-4, atol=1e-5)
    cov = np.cov(samples, rowvar=False) + 0.01 * np.eye(d)
    np.testing.assert_allclose(model.inv_covariance[7].numpy(), np.linalg.inv(cov), rtol=2e-3, atol=2e-3)


@pytest.mark.parametrize("rule", ["variance", "low_variance"])
def test_variance_rules_with_fewer_images_than_rule_images(rule):
    torch.manual_seed(1)
    model = Padim(weights="random", n_features=6, rule_images=32, channel_rule=rule).eval()
    batches = [torch.randn(2, 3, 32, 32), torch.randn(2, 3, 32, 32)]
    with torch.no_grad():
        full = torch.cat([model.all_channels(b) for b in batches]).double().numpy()
    model.fit(batches)
    assert model.channel_index.tolist() == _numpy_top_variance(full, 6, largest=rule == "variance")
    assert model.mean.shape == (full.shape[2] * full.shape[3], 6)


def test_stride_and_random_rules():
    stride = Padim(weights="random", n_features=10, channel_rule="stride")
    total = sum(stride.extractor.channels)
    assert stride.channel_index.tolist() == [int(round(v)) for v in np.linspace(0, total - 1, 10)]
    a = Padim(weights="random", n_features=10, channel_rule="random", seed=1).channel_index
    b = Padim(weights="random", n_features=10, channel_rule="random", seed=2).channel_index
    assert len(set(a.tolist())) == 10 and not torch.equal(a, b)
    with pytest.raises(ConfigError, match="channel_rule 'best'"):
        Padim(weights="random", channel_rule="best")


def test_checkpoint_without_channel_rule_loads_as_random_with_its_saved_subset(tmp_path):
    from fovea.anomaly.models import build_model
    from fovea.anomaly.pipeline import AnomalyPipeline
    from fovea.engine.checkpoint import RECIPE_FILE

    torch.manual_seed(0)
    model = build_model("padim", weights="random", n_features=10)
    pipe = AnomalyPipeline(model, (32, 32)).eval()
    model.fit([torch.randn(3, 3, 32, 32)])
    pipe.save(tmp_path)
    recipe = json.loads((tmp_path / RECIPE_FILE).read_text())
    del recipe["config"]["model_config"]["channel_rule"]  # as written before the option existed
    (tmp_path / RECIPE_FILE).write_text(json.dumps(recipe))
    old = AnomalyPipeline.load(tmp_path)
    assert old.model.config.channel_rule == "random"
    assert torch.equal(old.model.channel_index, model.channel_index)
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(old.model(x)[0], model(x)[0])
