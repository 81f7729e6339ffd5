"""The pruned greedy k-center selects exactly what the plain greedy loop selects (issue 12)."""

import numpy as np
import pytest
import torch

from fovea.anomaly.coreset import _rows_dot, greedy_k_center, greedy_k_center_reference


def _data(kind: str) -> torch.Tensor:
    g = torch.Generator().manual_seed(11)
    if kind == "gauss":
        return torch.randn(3000, 32, generator=g)
    if kind == "clusters":
        centres = torch.randn(30, 24, generator=g) * 5
        return centres[torch.randint(30, (4000,), generator=g)] + 0.3 * torch.randn(4000, 24, generator=g)
    if kind == "ties":  # many exact duplicates: ties must break on the first index, as argmax does
        return torch.randint(0, 3, (1500, 4), generator=g).float()
    if kind == "far_from_origin":  # large |x| makes the expanded distance's rounding large
        return 0.1 * torch.randn(3000, 48, generator=g) + 10.0
    raise ValueError(kind)


@pytest.mark.parametrize("kind", ["gauss", "clusters", "ties", "far_from_origin"])
@pytest.mark.parametrize("bound_dim", [4, 16])
def test_same_indices_as_plain_loop(kind, bound_dim):
    x = _data(kind)
    ref = greedy_k_center_reference(x, 300, start=5)
    fast = greedy_k_center(x, 300, start=5, bound_dim=bound_dim)
    assert torch.equal(ref, fast)


def test_same_indices_on_real_patch_features():
    """PatchCore features of real photographs (scikit-image's brick texture, offline Lite0)."""
    from fovea.anomaly.patchcore import PatchCore
    from fovea.synth.textures import render_texture_sample

    model = PatchCore()
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    chunks = []
    with torch.no_grad():
        for seed in range(6):
            img, _ = render_texture_sample("brick", None, rng=seed, size=128, split="train")
            x = (torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1)[None].float() / 255 - mean) / std
            e = model.embed(x)
            chunks.append(e.permute(0, 2, 3, 1).reshape(-1, e.shape[1]))
    feats = torch.cat(chunks)
    proj = torch.randn(feats.shape[1], 64, generator=torch.Generator().manual_seed(0)) / 8.0
    x = feats @ proj
    k = x.shape[0] // 10
    assert torch.equal(greedy_k_center_reference(x, k, start=0), greedy_k_center(x, k, start=0))


def test_gathered_rows_equal_full_product_bitwise():
    x = torch.randn(4099, 128, generator=torch.Generator().manual_seed(2))
    c = x[17]
    full = x @ c
    for m in (1, 2, 3, 7, 13, 100, 1001):
        idx = torch.randperm(4099, generator=torch.Generator().manual_seed(m))[:m]
        assert torch.equal(_rows_dot(x, idx, c), full[idx])


def test_degenerate_sizes():
    x = torch.randn(10, 3, generator=torch.Generator().manual_seed(0))
    assert greedy_k_center(x, 1, start=4).tolist() == [4]
    assert sorted(greedy_k_center(x, 10, start=0).tolist()) == list(range(10))
    assert torch.equal(greedy_k_center(x[:, :1], 5, start=2), greedy_k_center_reference(x[:, :1], 5, start=2))
