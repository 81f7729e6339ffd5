"""Exact k-NN of the memory bank (fovea.anomaly.knn) against a slow float64 loop (issue 12)."""

import numpy as np
import pytest
import torch

from fovea.anomaly.knn import BankIndex
from fovea.anomaly.patchcore import chunked_nearest
from fovea.errors import ConfigError, DataError


def _slow_knn(x: torch.Tensor, bank: torch.Tensor, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Row by row in float64 with direct differences; ties ordered by bank index."""
    xs, bs = x.double().numpy(), bank.double().numpy()
    dist, idx = [], []
    for row in xs:
        d = np.sqrt(((bs - row) ** 2).sum(1))
        order = sorted(range(len(bs)), key=lambda j: (d[j], j))[:k]
        dist.append(d[order])
        idx.append(order)
    return np.array(dist), np.array(idx)


@pytest.mark.parametrize("k", [1, 3, 9])
@pytest.mark.parametrize("tiles", [(7, 13), (256, 2048)])
@pytest.mark.parametrize("method", ["gemm", "auto"])
def test_equals_slow_loop_on_random_features(k, tiles, method):
    g = torch.Generator().manual_seed(k)
    bank, x = torch.rand(300, 20, generator=g) * 4, torch.rand(45, 20, generator=g) * 4
    index = BankIndex(bank, query_tile=tiles[0], bank_tile=tiles[1], method=method)
    d, i = index.search(x, k)
    ref_d, ref_i = _slow_knn(x, bank, k)
    assert np.array_equal(i.numpy(), ref_i)
    np.testing.assert_allclose(d.double().numpy(), ref_d, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(index.min_distance(x).double().numpy(), ref_d[:, 0], rtol=1e-5, atol=1e-6)


def test_guard_catches_float32_cancellation():
    """Two tight clusters far apart: the bank mean lies between them, so even centred the expanded
    form |x|^2 - 2x.b + |b|^2 cancels away the within-cluster distances. The plain expansion then
    picks wrong neighbours; the guarded index must notice and still return the exact ones."""
    g = torch.Generator().manual_seed(0)
    axis = torch.zeros(16)
    axis[0] = 3000.0
    bank = torch.cat([axis + 0.05 * torch.randn(200, 16, generator=g), -axis + 0.05 * torch.randn(200, 16, generator=g)])
    x = axis + 0.05 * torch.randn(40, 16, generator=g)
    ref_d, ref_i = _slow_knn(x, bank, 2)
    _, plain_i = chunked_nearest(x, bank, 2, 64)
    assert not np.array_equal(plain_i.numpy(), ref_i)  # the failure the guard exists for
    index = BankIndex(bank, query_tile=16, bank_tile=64)
    d, i = index.search(x, 2)
    assert index.rechecked_rows > 0
    assert np.array_equal(i.numpy(), ref_i)
    np.testing.assert_allclose(d.double().numpy(), ref_d, rtol=1e-4)


def test_duplicate_bank_rows_and_exact_matches():
    g = torch.Generator().manual_seed(3)
    bank = torch.randn(50, 8, generator=g)
    bank[30] = bank[10]  # a duplicate: equal distances, the lower index first
    x = torch.stack([bank[10], bank[4] + 1e-3, torch.randn(8, generator=g)])
    d, i = BankIndex(bank, bank_tile=16).search(x, 3)
    ref_d, ref_i = _slow_knn(x, bank, 3)
    assert i[0, :2].tolist() == [10, 30] and float(d[0, 0]) == 0.0
    assert np.array_equal(i.numpy(), ref_i)
    np.testing.assert_allclose(d.double().numpy(), ref_d, rtol=1e-5, atol=1e-6)


def test_k_larger_than_bank_and_bad_input():
    bank = torch.randn(4, 3, generator=torch.Generator().manual_seed(0))
    d, i = BankIndex(bank).search(bank[:2], 10)
    assert d.shape == (2, 4) and sorted(i[0].tolist()) == [0, 1, 2, 3]
    with pytest.raises(ConfigError, match="non-empty"):
        BankIndex(torch.zeros(0, 3))
    with pytest.raises(DataError, match=r"\(N, 3\)"):
        BankIndex(bank).search(torch.zeros(2, 5), 1)


def test_patchcore_traced_graph_scores_like_eager():
    """Export keeps the plain chunked expansion; it must agree with the guarded eager path."""
    from fovea.anomaly.patchcore import PatchCore

    torch.manual_seed(0)
    model = PatchCore(weights="random", coreset_ratio=0.5, chunk_size=100).eval()
    model.fit([torch.randn(2, 3, 64, 64)])
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        eager_scores, eager_maps = model(x)
        traced = torch.jit.trace(model, x, check_trace=False)
        traced_scores, traced_maps = traced(x)
    torch.testing.assert_close(traced_scores, eager_scores, rtol=1e-3, atol=1e-4)
    torch.testing.assert_close(traced_maps, eager_maps, rtol=1e-3, atol=1e-3)


# ------------------------------------------------------------------ low-rank bound + native kernel (k = 1)
def _float64_nn(x: torch.Tensor, bank: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Vectorised float64 brute force with direct differences; np.argmin keeps the lowest index on ties."""
    xs, bs = x.double().numpy(), bank.double().numpy()
    d2 = np.stack([((bs - row) ** 2).sum(1) for row in xs])
    i = d2.argmin(1)
    return np.sqrt(d2[np.arange(len(xs)), i]), i


@pytest.mark.parametrize("rank", [1, 4, 20])
def test_lowrank_equals_slow_loop_on_random_features(rank):
    g = torch.Generator().manual_seed(rank)
    bank, x = torch.rand(300, 20, generator=g) * 4, torch.rand(70, 20, generator=g) * 4
    index = BankIndex(bank, method="lowrank", rank=rank)
    d, i = index.search(x, 1)
    ref_d, ref_i = _slow_knn(x, bank, 1)
    assert np.array_equal(i.numpy(), ref_i)
    np.testing.assert_allclose(d.double().numpy(), ref_d, rtol=1e-6, atol=1e-7)
    assert index.exact_evaluations >= x.shape[0]


def test_lowrank_on_structured_features_prunes_and_stays_exact():
    """CNN-like features (a decaying spectrum plus noise, far from the origin): the same neighbours as
    float64 brute force, with exact distances for a small share of (query, bank row) pairs."""
    g = torch.Generator().manual_seed(7)
    basis = torch.randn(12, 152, generator=g) * torch.logspace(1, -0.5, 12)[:, None]
    bank = torch.randn(3000, 12, generator=g) @ basis + 0.05 * torch.randn(3000, 152, generator=g) + 40.0
    x = torch.cat([torch.randn(200, 12, generator=g) @ basis + 0.05 * torch.randn(200, 152, generator=g) + 40.0,
                   bank[:50] + 1e-4 * torch.randn(50, 152, generator=g),    # near-copies of bank rows
                   40.0 + 30.0 * torch.randn(20, 152, generator=g)])          # far from everything
    index = BankIndex(bank)                                                   # auto: low-rank (k = 1)
    d, i = index.search(x, 1)
    ref_d, ref_i = _float64_nn(x, bank)
    assert np.array_equal(i[:, 0].numpy(), ref_i)
    np.testing.assert_allclose(d[:, 0].double().numpy(), ref_d, rtol=1e-6, atol=1e-6)
    assert index.exact_evaluations < 0.05 * x.shape[0] * bank.shape[0]
    strict = BankIndex(bank, defer_cap=1)                                     # most rows take the GEMM instead
    d1, i1 = strict.search(x, 1)
    assert strict.deferred_rows > 0 and np.array_equal(i1[:, 0].numpy(), ref_i)
    np.testing.assert_allclose(d1[:, 0].double().numpy(), ref_d, rtol=1e-5, atol=1e-3)
    gemm_d, gemm_i = BankIndex(bank, method="gemm").search(x, 1)   # float32 direct sums: close, not as exact
    assert np.array_equal(gemm_i.numpy(), i.numpy())
    np.testing.assert_allclose(index.min_distance(x).numpy(), gemm_d[:, 0].numpy(), atol=1e-3)


def test_lowrank_cancellation_ties_and_bad_input():
    g = torch.Generator().manual_seed(0)
    axis = torch.zeros(16)
    axis[0] = 3000.0
    bank = torch.cat([axis + 0.05 * torch.randn(200, 16, generator=g), -axis + 0.05 * torch.randn(200, 16, generator=g)])
    bank[150] = bank[20]                                                       # duplicate: lower index wins
    x = torch.cat([axis + 0.05 * torch.randn(80, 16, generator=g), bank[20:21], bank[7:8]])
    d, i = BankIndex(bank, method="lowrank", rank=3).search(x, 1)
    ref_d, ref_i = _slow_knn(x, bank, 1)
    assert np.array_equal(i.numpy(), ref_i) and int(i[-2, 0]) == 20 and float(d[-1, 0]) == 0.0
    np.testing.assert_allclose(d.double().numpy(), ref_d, rtol=1e-5, atol=1e-6)
    bad = x.clone()
    bad[3, 2] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        BankIndex(bank, method="lowrank").search(bad, 1)
    with pytest.raises(ConfigError, match="method"):
        BankIndex(bank, method="faiss")


def test_lowrank_threads_split_queries_and_agree():
    """With 2 torch threads the kernel runs two query ranges side by side; results equal 1 thread's."""
    g = torch.Generator().manual_seed(11)
    bank, x = torch.randn(700, 24, generator=g), torch.randn(600, 24, generator=g)
    old = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        d1, i1 = BankIndex(bank).search(x, 1)
        torch.set_num_threads(2)
        d2, i2 = BankIndex(bank, defer_cap=2).search(x, 1)     # deferred rows of both ranges too
    finally:
        torch.set_num_threads(old)
    ref_d, ref_i = _float64_nn(x, bank)
    assert np.array_equal(i1[:, 0].numpy(), ref_i) and np.array_equal(i2[:, 0].numpy(), ref_i)
    np.testing.assert_allclose(d2[:, 0].double().numpy(), ref_d, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("m", [1, 2, 17, 33])
def test_lowrank_tiny_banks_and_full_rank(m):
    """Banks smaller than one panel pair (padding rows must never win) and rank >= D (no remainder)."""
    g = torch.Generator().manual_seed(m)
    bank, x = torch.randn(m, 5, generator=g), torch.randn(9, 5, generator=g)
    d, i = BankIndex(bank, method="lowrank").search(x, 1)
    ref_d, ref_i = _float64_nn(x, bank)
    assert np.array_equal(i[:, 0].numpy(), ref_i)
    np.testing.assert_allclose(d[:, 0].double().numpy(), ref_d, rtol=1e-6, atol=1e-6)
