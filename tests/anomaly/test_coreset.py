"""The pruned greedy k-center (C loop and torch loop) selects exactly what the plain greedy loop selects
(issue 12)."""

import numpy as np
import pytest
import torch

from fovea.anomaly.coreset import _exact_sq, greedy_k_center, greedy_k_center_reference
from fovea.nn._cbuild import compiler


def _have_cc() -> bool:
    try:
        compiler()
        return True
    except RuntimeError:
        return False


HAVE_CC = _have_cc()
PATHS = [pytest.param(True, id="C"), pytest.param(False, id="torch")]


def _native_or_skip(native: bool) -> None:
    if native and not HAVE_CC:
        pytest.skip("no C compiler on this machine: only the torch loop can run")


def _data(kind: str) -> torch.Tensor:
    g = torch.Generator().manual_seed(11)
    if kind == "gauss":
        return torch.randn(3000, 32, generator=g)
    if kind == "clusters":
        centres = torch.randn(30, 24, generator=g) * 5
        return centres[torch.randint(30, (4000,), generator=g)] + 0.3 * torch.randn(4000, 24, generator=g)
    if kind == "ties":  # many exact duplicates: ties must break on the first index, as argmax does
        return torch.randint(0, 3, (1500, 4), generator=g).float()
    if kind == "far_from_origin":  # large |x| relative to the spread: rounding of coordinates matters
        return 0.1 * torch.randn(3000, 48, generator=g) + 10.0
    raise ValueError(kind)


def _plain_python_greedy(x: np.ndarray, n_select: int, start: int) -> list[int]:
    """The textbook loop in Python floats (IEEE doubles), one coordinate at a time: no torch, no C."""
    n, d = x.shape
    rows = [[float(v) for v in r] for r in x]
    min_d = [float("inf")] * n
    out, cur = [], start
    for _ in range(n_select):
        out.append(cur)
        c = rows[cur]
        for i in range(n):
            s = 0.0
            for j in range(d):
                t = rows[i][j] - c[j]
                s = s + t * t
            if s < min_d[i]:
                min_d[i] = s
        best = max(min_d)
        cur = min_d.index(best)  # first maximum
    return out


def test_reference_equals_textbook_loop_in_python_floats():
    x = torch.randn(120, 6, generator=torch.Generator().manual_seed(3))
    x[40] = x[7]  # an exact duplicate
    assert greedy_k_center_reference(x, 30, start=2).tolist() == _plain_python_greedy(x.numpy(), 30, 2)


def test_exact_distance_is_the_sequential_float64_sum():
    x = torch.randn(50, 37, generator=torch.Generator().manual_seed(4)) * 3
    c = x[9]
    got = _exact_sq(x, c)
    for i in range(50):
        s = 0.0
        for j in range(37):
            t = float(x[i, j]) - float(c[j])
            s = s + t * t
        assert got[i].item() == s


@pytest.mark.parametrize("native", PATHS)
@pytest.mark.parametrize("kind", ["gauss", "clusters", "ties", "far_from_origin"])
@pytest.mark.parametrize("bound_dim", [4, 16])
def test_same_indices_as_plain_loop(kind, bound_dim, native):
    _native_or_skip(native)
    x = _data(kind)
    ref = greedy_k_center_reference(x, 300, start=5)
    fast = greedy_k_center(x, 300, start=5, bound_dim=bound_dim, native=native)
    assert torch.equal(ref, fast)


def test_native_minimum_distances_are_bit_identical_to_the_plain_loop():
    """The C loop's per-point minimum squared distances equal the reference loop's float64 values."""
    _native_or_skip(True)
    from fovea.anomaly._coreset_native import greedy_k_center_native
    from fovea.anomaly.coreset import BOUND_MARGIN, principal_coordinates

    x = _data("clusters")
    z, rest, scale2 = principal_coordinates(x, 8)
    sel, min_d = greedy_k_center_native(x, 200, 5, z, rest, BOUND_MARGIN * scale2)
    ref_min = torch.full((x.shape[0],), float("inf"), dtype=torch.float64)
    for c in sel.tolist():
        ref_min = torch.minimum(ref_min, _exact_sq(x, x[c]))
    assert torch.equal(min_d, ref_min)


def test_native_progress_and_interrupt():
    _native_or_skip(True)
    x = _data("gauss")
    seen = []
    greedy_k_center(x, 600, start=0, native=True, progress=lambda s, t: seen.append((s, t)))
    assert seen[-1] == (600, 600) and (256, 600) in seen

    def stop(step, total):
        if step >= 256:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        greedy_k_center(x, 600, start=0, native=True, progress=stop)


@pytest.mark.parametrize("native", PATHS)
def test_same_indices_on_real_patch_features(native):
    """PatchCore features of real photographs (scikit-image's brick texture, offline Lite0)."""
    _native_or_skip(native)
    from fovea.anomaly.patchcore import PatchCore
    from fovea.synth.textures import render_texture_sample

    model = PatchCore()
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    chunks = []
    with torch.no_grad():
        for seed in range(6):
            img, _ = render_texture_sample("brick", None, rng=seed, size=128, split="train")
            x = torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1)[None].float() / 255
            x = (x - mean) / std
            e = model.embed(x)
            chunks.append(e.permute(0, 2, 3, 1).reshape(-1, e.shape[1]))
    feats = torch.cat(chunks)
    proj = torch.randn(feats.shape[1], 64, generator=torch.Generator().manual_seed(0)) / 8.0
    x = feats @ proj
    k = x.shape[0] // 10
    ref = greedy_k_center_reference(x, k, start=0)
    assert torch.equal(ref, greedy_k_center(x, k, start=0, native=native))


@pytest.mark.parametrize("native", PATHS)
def test_degenerate_sizes(native):
    _native_or_skip(native)
    x = torch.randn(10, 3, generator=torch.Generator().manual_seed(0))
    assert greedy_k_center(x, 1, start=4, native=native).tolist() == [4]
    assert sorted(greedy_k_center(x, 10, start=0, native=native).tolist()) == list(range(10))
    assert torch.equal(greedy_k_center(x[:, :1], 5, start=2, native=native),
                      greedy_k_center_reference(x[:, :1], 5, start=2))
    dup = torch.zeros(6, 4)  # all points equal: every distance 0, the loop must still return n_select indices
    ref = greedy_k_center_reference(dup, 4, start=3)
    assert torch.equal(greedy_k_center(dup, 4, start=3, native=native), ref)
