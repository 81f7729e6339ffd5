"""Reverse Distillation: loss/map against closed forms and a slow loop, shapes, a training step,
traceability of the eval forward."""

import numpy as np
import pytest
import torch

from fovea.anomaly.reverse_distillation import (ReverseDistillation, ReverseDistillationConfig, anomaly_map,
                                                cosine_distance_map, reverse_distillation_loss)
from fovea.errors import ConfigError


def _feats(seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(2, 8, 16, 16, generator=g), torch.randn(2, 12, 8, 8, generator=g)]


def test_loss_and_map_are_zero_when_student_equals_teacher():
    t = _feats()
    assert float(reverse_distillation_loss(t, t)) == pytest.approx(0.0, abs=1e-6)
    # cosine distance ignores scale: a student twice as large is still perfect
    assert float(reverse_distillation_loss(t, [2 * f for f in t])) == pytest.approx(0.0, abs=1e-6)
    m = anomaly_map(t, t, (32, 32))
    assert m.shape == (2, 1, 32, 32) and float(m.abs().max()) < 1e-6


def test_cosine_distance_closed_form_and_slow_loop():
    t = torch.zeros(1, 2, 1, 1)
    t[0, 0] = 1.0
    s = torch.zeros(1, 2, 1, 1)
    s[0, 1] = 1.0
    assert float(cosine_distance_map(t, s)) == pytest.approx(1.0)  # orthogonal
    assert float(cosine_distance_map(t, -t)) == pytest.approx(2.0)  # opposite
    # two scales, each orthogonal everywhere: loss = 1 + 1, summed map = 2, product map = 1
    tt, ss = [t.expand(1, 2, 4, 4), t.expand(1, 2, 2, 2)], [s.expand(1, 2, 4, 4), s.expand(1, 2, 2, 2)]
    assert float(reverse_distillation_loss(tt, ss)) == pytest.approx(2.0)
    assert torch.allclose(anomaly_map(tt, ss, (8, 8), "sum"), torch.full((1, 1, 8, 8), 2.0))
    assert torch.allclose(anomaly_map(tt, ss, (8, 8), "product"), torch.ones(1, 1, 8, 8))
    a, b = _feats(1)[0], _feats(2)[0]
    got = cosine_distance_map(a, b).numpy()
    an, bn = a.numpy(), b.numpy()
    for i in range(2):
        for y in range(0, 16, 5):
            for x in range(0, 16, 3):
                u, v = an[i, :, y, x], bn[i, :, y, x]
                ref = 1 - u @ v / (np.linalg.norm(u) * np.linalg.norm(v))
                assert got[i, 0, y, x] == pytest.approx(ref, abs=1e-5)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return ReverseDistillation(ReverseDistillationConfig(weights="random", embed_dim=32, decoder_blocks=1,
                                                         decoder_width=1.0))


def test_forward_shapes_and_student_mirrors_teacher(model):
    x = torch.randn(2, 3, 32, 32)
    model.eval()
    teacher, student = model.teacher_student(x)
    assert [t.shape for t in teacher] == [s.shape for s in student]
    scores, maps = model(x)
    assert scores.shape == (2,) and maps.shape == (2, 1, 32, 32) and bool((maps >= 0).all())


def test_a_training_step_lowers_the_loss(model):
    torch.manual_seed(1)
    x = torch.randn(4, 3, 32, 32)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    assert all(not p.requires_grad for p in model.extractor.parameters())
    opt = torch.optim.Adam(params, lr=1e-3)
    before = float(model.loss(x))
    for _ in range(5):
        opt.zero_grad()
        model.loss(x).backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        after = float(model.loss(x))
    assert after < before


def test_eval_forward_traces_and_matches(model):
    x = torch.randn(1, 3, 32, 32)
    model.eval()
    with torch.no_grad():
        traced = torch.jit.trace(model, x, check_trace=False)
        ref, got = model(x), traced(x)
    torch.testing.assert_close(got[0], ref[0])
    torch.testing.assert_close(got[1], ref[1])


def test_config_errors():
    with pytest.raises(ConfigError, match="map_mode"):
        ReverseDistillationConfig(map_mode="max")
    with pytest.raises(ConfigError, match=">= 2 teacher layers"):
        ReverseDistillationConfig(layers=(3,))


def test_fit_trains_student_with_the_engine_and_keeps_teacher_frozen(tmp_path):
    torch.manual_seed(0)
    m = ReverseDistillation(ReverseDistillationConfig(weights="random", embed_dim=16, decoder_blocks=1,
                                                      decoder_width=1.0, epochs=3, batch_size=4, lr=0.005,
                                                      out_dir=str(tmp_path)))
    teacher = {k: v.clone() for k, v in m.extractor.state_dict().items()}
    student = {k: v.clone() for k, v in m.decoder.state_dict().items()}
    x = torch.randn(4, 3, 32, 32)
    m.fit([x[:2], {"image": x[2:]}])  # tensors or dicts, as the anomaly workflow and loaders give them
    assert len(m.history) == 3 and all(np.isfinite(h["train_loss"]) for h in m.history)
    assert m.history[-1]["train_loss"] < m.history[0]["train_loss"]
    assert not m.training
    assert all(torch.equal(v, m.extractor.state_dict()[k]) for k, v in teacher.items())
    assert any(not torch.equal(v, m.decoder.state_dict()[k]) for k, v in student.items())
