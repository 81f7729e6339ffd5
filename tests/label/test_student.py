"""The distilled student: two-view consistency loss against its closed form, the two-view data set, the
distillation task on two views, and CloFormer's exact rewrites for small inputs (single pooled key,
fusable GELU) against independent references and through onnxruntime."""

from __future__ import annotations

import collections
import math

import numpy as np
import pytest
import torch

from fovea.classify.data import Augment, Sample
from fovea.errors import ConfigError
from fovea.io import write_image
from fovea.label.distill import DistillationTask, TwoViewDataset, consistency_loss, distillation_loss
from fovea.models.cloformer import CLOFORMER_CONFIGS, CloAttention, CloFormer, ErfGELU


def test_consistency_loss_equals_symmetric_kl_closed_form():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(5, 3, generator=g), torch.randn(5, 3, generator=g)
    pa, pb = np.exp(a.numpy()) / np.exp(a.numpy()).sum(1, keepdims=True), \
        np.exp(b.numpy()) / np.exp(b.numpy()).sum(1, keepdims=True)
    kl_ab = float(np.mean(np.sum(pa * (np.log(pa) - np.log(pb)), 1)))
    kl_ba = float(np.mean(np.sum(pb * (np.log(pb) - np.log(pa)), 1)))
    assert float(consistency_loss(a, b)) == pytest.approx(0.5 * (kl_ab + kl_ba), rel=1e-5)
    assert float(consistency_loss(a, a)) == pytest.approx(0.0, abs=1e-7)
    # each side is pulled toward the other held fixed: the gradient of side a is d KL(p_b || p_a) / da / 2
    a.requires_grad_(True)
    consistency_loss(a, b).backward()
    pa_t, pb_t = torch.softmax(a.detach(), 1), torch.softmax(b, 1)
    torch.testing.assert_close(a.grad, 0.5 * (pa_t - pb_t) / 5)


def test_two_view_dataset_and_distillation_on_two_views(tmp_path):
    rng = np.random.default_rng(0)
    samples = []
    for i in range(4):
        write_image(tmp_path / f"{i}.png", rng.integers(0, 256, (40, 40, 3), dtype=np.uint8))
        samples.append(Sample(tmp_path / f"{i}.png", i % 2))
    torch.manual_seed(0)
    ds = TwoViewDataset(samples, ["a", "b"], (16, 16), train=True, augment=Augment(vflip=True))
    item = ds[1]
    assert item["image"].shape == item["image2"].shape == (16, 16, 3) and item["index"] == 1
    assert not torch.equal(item["image"], item["image2"])  # independent draws
    assert "image2" not in TwoViewDataset(samples, ["a", "b"], (16, 16), train=False)[0]

    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16 * 16 * 3, 2))
    model_f = lambda x: model(x.float() / 255)  # noqa: E731
    soft = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]], np.float32)
    task = DistillationTask(model_f, soft, temperature=2.0, alpha=0.5, consistency=0.3)
    batch = torch.utils.data.default_collate([ds[i] for i in range(4)])
    la, lb = model_f(batch["image"]), model_f(batch["image2"])
    st, y = torch.from_numpy(soft), batch["target"]
    expected = (0.5 * (distillation_loss(la, st, y, 2.0, 0.5) + distillation_loss(lb, st, y, 2.0, 0.5))
                + 0.3 * consistency_loss(la, lb))
    torch.testing.assert_close(task.training_loss(model_f, batch), expected)
    with pytest.raises(ConfigError, match="consistency"):
        DistillationTask(model_f, soft, consistency=-1.0)


def test_erf_gelu_is_torch_gelu():
    x = torch.linspace(-8, 8, 2001, dtype=torch.float64)
    torch.testing.assert_close(ErfGELU()(x), 0.5 * x * (1 + torch.erf(x / math.sqrt(2))))
    torch.testing.assert_close(ErfGELU()(x.float()), torch.nn.functional.gelu(x.float()), atol=1e-6, rtol=1e-6)


def _attention_reference(mod: CloAttention, x: torch.Tensor) -> torch.Tensor:
    """Local AttnConv and the global heads with explicit softmax(Q K^T d^-1/2) V over every pooled key."""
    b, _, h, w = x.shape
    parts = [mod.local_attention(x)] if mod.local_heads else []
    pooled = torch.nn.functional.avg_pool2d(x, mod.pool, mod.pool) if mod.pool > 1 else x
    q = mod.global_q(x).reshape(b, mod.global_heads, mod.d, h * w).transpose(-1, -2)
    kv = mod.global_kv(pooled).reshape(b, 2, mod.global_heads, mod.d, -1).transpose(-1, -2)
    attn = (q @ kv[:, 0].transpose(-1, -2) * mod.d ** -0.5).softmax(-1)
    parts.append((attn @ kv[:, 1]).transpose(-1, -2).reshape(b, -1, h, w))
    return mod.proj(torch.cat(parts, 1))


@pytest.mark.parametrize("side,pool", [(8, 8), (12, 8), (2, 2), (1, 1), (16, 4)])
def test_attention_with_a_single_pooled_key_equals_full_softmax_attention(side, pool):
    """(8, 8), (2, 2), (1, 1): one pooled key (the rewrite); (12, 8): one key from a floored pool (the top-left
    8 x 8, as nn.AvgPool2d); (16, 4): 16 keys, the general path."""
    torch.manual_seed(side + pool)
    mod = CloAttention(32, 4, (2, 2), kernel=3, pool=pool).eval()
    x = torch.randn(2, 32, side, side)
    with torch.no_grad():
        torch.testing.assert_close(mod(x), _attention_reference(mod, x), atol=1e-5, rtol=1e-5)


@pytest.mark.slow
def test_student_onnx_at_32px_has_no_attention_matmuls_fuses_gelu_and_matches_torch(tmp_path):
    """The 32-px CloFormer-XXS classifier through fovea's ONNX export and onnxruntime (level ALL): every
    stage's global heads take the single-key path (no MatMul; the one Softmax gives the class probabilities),
    each ConvFFN GELU is one Gelu node, and the probabilities equal the torch pipeline's."""
    ort = pytest.importorskip("onnxruntime")
    import onnx

    from fovea.classify.model import ClassifierRecipe, build_classifier
    from fovea.engine.export import export_onnx

    torch.manual_seed(0)
    recipe = ClassifierRecipe(backbone="cloformer_xxs", class_names=["good", "damaged"], input_size=(32, 32),
                              weights="random")
    pipe = build_classifier(recipe).eval()
    path = export_onnx(pipe, tmp_path / "student.onnx")
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.optimized_model_filepath = str(tmp_path / "opt.onnx")
    session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    ops = collections.Counter(n.op_type for n in onnx.load(opts.optimized_model_filepath).graph.node)
    assert ops["Softmax"] == 1 and ops["MatMul"] + ops["FusedMatMul"] == 0 and ops["Erf"] == 0
    assert ops["Gelu"] == sum(CLOFORMER_CONFIGS["cloformer_xxs"].depths)
    images = np.random.default_rng(1).integers(0, 256, (3, 90, 70, 3), dtype=np.uint8)
    with torch.no_grad():
        expected = pipe.infer(torch.from_numpy(images)).numpy()
    np.testing.assert_allclose(session.run(None, {"images": images})[0], expected, atol=1e-5)


def test_cloformer_small_input_equals_general_path_on_a_whole_model():
    """A whole XXS at 32 px (every stage single-key) against the same weights forced through the explicit
    reference attention in every block."""
    torch.manual_seed(3)
    model = CloFormer(CLOFORMER_CONFIGS["cloformer_xxs"], num_classes=2).eval()
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        fast = model(x)
        for mod in model.modules():
            if isinstance(mod, CloAttention):
                mod.forward = (lambda m: (lambda t: _attention_reference(m, t)))(mod)
        slow = model(x)
    torch.testing.assert_close(fast, slow, atol=1e-5, rtol=1e-4)
