"""PatchCore and PaDiM numerics against slow, obviously-correct references."""

import numpy as np
import pytest
import torch

from fovea.anomaly.patchcore import PatchCore, chunked_min_distance, chunked_nearest, greedy_coreset


def _slow_k_center(x: np.ndarray, n_select: int, start: int) -> list[int]:
    chosen = [start]
    while len(chosen) < n_select:
        best, best_d = -1, -1.0
        for i in range(len(x)):
            d = min(float(((x[i] - x[j]) ** 2).sum()) for j in chosen)
            if d > best_d:
                best, best_d = i, d
        chosen.append(best)
    return chosen


def test_greedy_coreset_matches_slow_k_center():
    x = torch.randn(120, 6, generator=torch.Generator().manual_seed(3))
    idx = greedy_coreset(x, 15, projection_dim=0, seed=7)
    start = int(torch.randint(120, (1,), generator=torch.Generator().manual_seed(7)))
    assert idx.tolist() == _slow_k_center(x.numpy().astype(np.float64), 15, start)


def test_coreset_covers_better_than_random_subset():
    """k-center minimises the covering radius: it must beat a random subset of the same size."""
    x = torch.randn(2000, 16, generator=torch.Generator().manual_seed(0))
    x[:1000] *= 0.1  # a dense cluster and a spread one
    idx = greedy_coreset(x, 100, projection_dim=8, seed=0)
    rnd = torch.randperm(2000, generator=torch.Generator().manual_seed(1))[:100]
    radius = torch.cdist(x, x[idx]).min(1).values.max()
    radius_random = torch.cdist(x, x[rnd]).min(1).values.max()
    assert radius < radius_random


@pytest.mark.parametrize("k", [1, 4])
@pytest.mark.parametrize("chunk", [1, 7, 50, 1000])
def test_chunked_nearest_equals_brute_force(chunk, k):
    g = torch.Generator().manual_seed(0)
    x, bank = torch.randn(40, 5, generator=g), torch.randn(123, 5, generator=g)
    x[3] = bank[17]  # an exact match: distance 0, not the NaN of a rounded-negative square
    d, i = chunked_nearest(x, bank, k, chunk)
    ref = torch.cdist(x.double(), bank.double())
    ref_d, ref_i = ref.topk(k, dim=1, largest=False)
    assert i[3, 0] == 17 and torch.isfinite(d).all()
    assert d[3, 0] < 5e-3  # float32 |x|^2 - 2x.y + |y|^2 of equal rows: ~1e-6 of rounding, square-rooted
    rest = torch.arange(40) != 3
    torch.testing.assert_close(d[rest].double(), ref_d[rest], atol=1e-4, rtol=1e-4)
    assert torch.equal(i, ref_i)


@pytest.mark.parametrize("chunk", [1, 7, 1000])
def test_chunked_min_distance_equals_brute_force(chunk):
    g = torch.Generator().manual_seed(1)
    x, bank = torch.randn(40, 5, generator=g) * 3, torch.randn(123, 5, generator=g) * 3
    ref = torch.cdist(x.double(), bank.double()).min(1).values
    torch.testing.assert_close(chunked_min_distance(x, bank, chunk).double(), ref, atol=1e-4, rtol=1e-4)


def test_patchcore_score_is_paper_reweighted_max_patch_distance():
    torch.manual_seed(0)
    model = PatchCore(weights="random", coreset_ratio=1.0, num_neighbors=3, chunk_size=64).eval()
    model.fit([torch.randn(2, 3, 64, 64)])
    x = torch.randn(2, 3, 64, 64)
    scores, maps = model(x)
    assert maps.shape == (2, 1, 64, 64)
    with torch.no_grad():
        emb = model.embed(x).permute(0, 2, 3, 1).reshape(2, -1, model.embedding_dim).double()
    bank = model.memory_bank.double()
    for b in range(2):
        d = torch.cdist(emb[b], bank)  # (P, M)
        patch = d.min(1).values
        p = int(patch.argmax())
        m_star = int(d[p].argmin())
        support = torch.cdist(bank[m_star:m_star + 1], bank)[0].topk(3, largest=False).indices
        dist_support = torch.cdist(emb[b, p:p + 1], bank[support])[0]
        w = 1 - torch.exp(dist_support[0]) / torch.exp(dist_support).sum()
        assert float(scores[b]) == pytest.approx(float(w * patch[p]), rel=1e-3)


def test_padim_gaussian_matches_numpy_per_position():
    from fovea.anomaly.padim import Padim

    torch.manual_seed(0)
    model = Padim(weights="random", n_features=10).eval()
    batches = [torch.randn(3, 3, 32, 32), torch.randn(2, 3, 32, 32)]
    model.fit(batches)
    with torch.no_grad():
        emb = torch.cat([model.embed(b) for b in batches]).double().numpy()  # (N, d, h, w)
    n, d, h, w = emb.shape
    pos = 5
    samples = emb.reshape(n, d, h * w)[:, :, pos]
    cov = np.cov(samples, rowvar=False) + 0.01 * np.eye(d)
    np.testing.assert_allclose(model.mean[pos].numpy(), samples.mean(0), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(model.inv_covariance[pos].numpy(), np.linalg.inv(cov), rtol=2e-3, atol=2e-3)
    x = torch.randn(1, 3, 32, 32)
    scores, maps = model(x)
    with torch.no_grad():
        e = model.embed(x).double().numpy().reshape(d, h * w)
    all_samples = emb.reshape(n, d, h * w)
    ref = np.empty(h * w)
    for p in range(h * w):  # slow loop: numpy covariance and Mahalanobis distance per position
        c = np.cov(all_samples[:, :, p], rowvar=False) + 0.01 * np.eye(d)
        delta = e[:, p] - all_samples[:, :, p].mean(0)
        ref[p] = np.sqrt(delta @ np.linalg.inv(c) @ delta)
    ref_map = torch.nn.functional.interpolate(torch.tensor(ref, dtype=torch.float32).reshape(1, 1, h, w),
                                              size=(32, 32), mode="bilinear", align_corners=False)
    torch.testing.assert_close(maps, ref_map, rtol=2e-3, atol=2e-3)
    # image score: max of the map smoothed with a sigma-4 Gaussian (independent reference: scipy,
    # mirror boundary = torch "reflect", radius 16 = truncate 4 sigma)
    from scipy.ndimage import gaussian_filter

    smooth = gaussian_filter(ref_map[0, 0].double().numpy(), sigma=4.0, mode="mirror", truncate=4.0)
    assert float(scores[0]) == pytest.approx(float(smooth.max()), rel=2e-3)
    assert float(scores[0]) < float(maps.max())  # smoothing lowers the single-patch peak
    model.config.score_sigma = 0.0  # checkpoints saved before the smoothed score load this way
    assert float(model(x)[0][0]) == pytest.approx(float(maps.max()), rel=1e-6)


def test_padim_checkpoint_saved_before_smoothed_scores_keeps_the_raw_max(tmp_path):
    import json

    from fovea.anomaly.models import build_model
    from fovea.anomaly.pipeline import AnomalyPipeline
    from fovea.engine.checkpoint import RECIPE_FILE

    torch.manual_seed(0)
    model = build_model("padim", weights="random", n_features=10)
    pipe = AnomalyPipeline(model, (32, 32)).eval()
    model.fit([torch.randn(3, 3, 32, 32)])
    pipe.save(tmp_path)
    assert AnomalyPipeline.load(tmp_path).model.config.score_sigma == 4.0
    recipe = json.loads((tmp_path / RECIPE_FILE).read_text())
    del recipe["config"]["model_config"]["score_sigma"]  # as written before the option existed
    (tmp_path / RECIPE_FILE).write_text(json.dumps(recipe))
    old = AnomalyPipeline.load(tmp_path)
    assert old.model.config.score_sigma == 0.0
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        scores, maps = old.model(x)
    assert float(scores[0]) == pytest.approx(float(maps.max()), rel=1e-6)
