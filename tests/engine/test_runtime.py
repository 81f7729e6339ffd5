"""FrozenGraph: the frozen TorchScript stand-in for frozen feature extractors in inference."""

from __future__ import annotations

import copy
import pickle

import pytest
import torch

from fovea.anomaly.features import FeatureExtractor
from fovea.engine.runtime import FrozenGraph, inference_graph_allowed


def eager(ex: FeatureExtractor, x: torch.Tensor) -> list[torch.Tensor]:
    with torch.no_grad():
        return list(ex.net(x))


@pytest.fixture(scope="module")
def extractor():
    torch.manual_seed(0)
    return FeatureExtractor("efficientnet_lite0", (1, 2), weights="random")


def test_extractor_uses_the_frozen_graph_and_matches_eager(extractor):
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        fast = extractor(x)
    assert extractor._frozen._graph is not None  # the graph was built and used
    assert extractor._frozen._checked == {((3, 64, 64), torch.float32): True}
    for a, b in zip(fast, eager(extractor, x)):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4 * float(b.abs().max()))
    y = torch.randn(1, 3, 96, 80)  # a new shape reuses the graph after one eager check
    with torch.no_grad():
        for a, b in zip(extractor(y), eager(extractor, y)):
            assert a.shape == b.shape
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4 * float(b.abs().max()))


def test_plain_modules_while_tracing_with_grad_or_when_disabled(monkeypatch):
    x = torch.randn(1, 3, 8, 8)
    assert not inference_graph_allowed(x)  # autograd on
    with torch.no_grad():
        assert inference_graph_allowed(x)
        assert not inference_graph_allowed(x.double())
        monkeypatch.setenv("FOVEA_FROZEN_GRAPH", "0")
        assert not inference_graph_allowed(x)
        monkeypatch.delenv("FOVEA_FROZEN_GRAPH")
        seen = []

        class Probe(torch.nn.Module):
            def forward(self, t):
                seen.append(inference_graph_allowed(t))
                return t * 2

        torch.jit.trace(Probe(), x, check_trace=False)
    assert seen == [False]


class ShapeBaked(torch.nn.Module):
    """Uses a Python int taken from the input's shape: a trace bakes it in as a constant."""

    def forward(self, x):
        return x * int(x.shape[-1])


def test_a_shape_the_graph_gets_wrong_runs_eagerly_with_a_warning():
    fg, m = FrozenGraph(), ShapeBaked()
    with torch.no_grad():
        a = torch.ones(1, 1, 2, 4)
        assert torch.equal(fg(m, a), a * 4)
        b = torch.ones(1, 1, 2, 6)
        with pytest.warns(RuntimeWarning, match="differs from eager for input \\[1, 1, 2, 6\\]"):
            out = fg(m, b)
        assert torch.equal(out, b * 6)  # eager answer, not the graph's b * 4
        assert fg._checked[((1, 2, 6), torch.float32)] is False
        assert torch.equal(fg(m, b), b * 6)


def test_a_graph_that_cannot_be_built_runs_eagerly(monkeypatch):
    import fovea.engine.runtime as rt

    def broken(module, x):
        raise RuntimeError("simulated TorchScript failure")

    monkeypatch.setattr(rt, "_freeze", broken)
    fg, m = FrozenGraph(), ShapeBaked()
    with torch.no_grad(), pytest.warns(RuntimeWarning, match="unavailable.*simulated TorchScript failure"):
        out = fg(m, torch.ones(1, 3))
    assert torch.equal(out, torch.full((1, 3), 3.0)) and fg._failed
    with torch.no_grad():
        assert torch.equal(fg(m, torch.ones(1, 5)), torch.full((1, 5), 5.0))


def test_weights_loaded_later_rebuild_the_graph_and_copies_pickle(extractor):
    ex = copy.deepcopy(extractor)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        ex(x)
    other = FeatureExtractor("efficientnet_lite0", (1, 2), weights="random")
    with torch.no_grad():
        for p in other.parameters():
            p.add_(0.05)
    ex.load_state_dict(other.state_dict())
    assert ex._frozen._graph is None  # the old graph held the old weights as constants
    with torch.no_grad():
        for a, b in zip(ex(x), eager(other, x)):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4 * float(b.abs().max()))
    clone = pickle.loads(pickle.dumps(ex))  # spawned DDP processes and deepcopy need this
    assert clone._frozen._graph is None
    with torch.no_grad():
        for a, b in zip(clone(x), eager(other, x)):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4 * float(b.abs().max()))
