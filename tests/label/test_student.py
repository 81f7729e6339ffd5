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
from fovea.models.cloformer import (CLOFORMER_CONFIGS, CloAttention, CloBlock, CloFormer, ErfGELU,
                                    set_inference_rewrites)


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
@pytest.mark.parametrize("side,multi_key_blocks", [(32, 0), (48, 2)])
def test_student_onnx_graph_after_rewrites_matches_the_plain_torch_model(tmp_path, side, multi_key_blocks):
    """The CloFormer-XXS classifier through fovea's ONNX export and onnxruntime (level ALL): single-key global
    heads need no Q, matmul, softmax, Expand or Concat (at 32 px every stage, at 48 px stages 1-3; stage 4's
    two blocks keep 4 keys, one K/V Split each), Q/K/V need no Split, each ConvFFN GELU is one Gelu node, and
    the probabilities equal the torch pipeline's with the inference rewrites off."""
    ort = pytest.importorskip("onnxruntime")
    import onnx

    from fovea.classify.model import ClassifierRecipe, build_classifier
    from fovea.engine.export import export_onnx

    torch.manual_seed(0)
    recipe = ClassifierRecipe(backbone="cloformer_xxs", class_names=["good", "damaged"], input_size=(side, side),
                              weights="random")
    pipe = build_classifier(recipe).eval()
    path = export_onnx(pipe, tmp_path / "student.onnx")
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.optimized_model_filepath = str(tmp_path / "opt.onnx")
    session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    ops = collections.Counter(n.op_type for n in onnx.load(opts.optimized_model_filepath).graph.node)
    assert ops["Softmax"] == 1 + multi_key_blocks and ops["MatMul"] + ops["FusedMatMul"] == 2 * multi_key_blocks
    assert ops["Expand"] == 0 and ops["Split"] == multi_key_blocks and ops["Erf"] == 0
    assert ops["Concat"] == 1 + multi_key_blocks  # the resize's output-size Concat, then one per multi-key block
    assert ops["Gelu"] == sum(CLOFORMER_CONFIGS["cloformer_xxs"].depths)
    images = np.random.default_rng(1).integers(0, 256, (3, 90, 70, 3), dtype=np.uint8)
    with torch.no_grad():
        expected = set_inference_rewrites(pipe, False).infer(torch.from_numpy(images)).numpy()
    np.testing.assert_allclose(session.run(None, {"images": images})[0], expected, atol=1e-4)


def test_cloformer_small_input_equals_general_path_on_a_whole_model():
    """A whole XXS at 32 px (every stage single-key) against the same weights forced through the explicit
    reference attention in every block."""
    torch.manual_seed(3)
    model = CloFormer(CLOFORMER_CONFIGS["cloformer_xxs"], num_classes=2).eval()
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        fast = model(x)  # with the inference rewrites (the default)
        set_inference_rewrites(model, False)  # the blocks call attn.forward, patched below
        for mod in model.modules():
            if isinstance(mod, CloAttention):
                mod.forward = (lambda m: (lambda t: _attention_reference(m, t)))(mod)
        slow = model(x)
    torch.testing.assert_close(fast, slow, atol=1e-5, rtol=1e-4)


def test_local_qkv_as_three_conv_pairs_equals_the_chunked_conv_pair():
    """Inference rewrite: Q, K, V from three 1x1 + depthwise conv pairs on weight slices = the training path's
    one conv pair over [Q | K | V] and a chunk (and both = a per-channel loop over the depthwise kernel)."""
    torch.manual_seed(5)
    mod = CloAttention(32, 4, (3, 1), kernel=3, pool=8)
    x = torch.randn(2, 32, 6, 7)
    with torch.no_grad():
        mod.eval()
        fast = mod.local_qkv(x)
        mod.train()
        plain = mod.local_qkv(x)
        y = mod.qkvs[0](x)
        yp = torch.nn.functional.pad(y, (1, 1, 1, 1))
        w, b = mod.convs[0].weight, mod.convs[0].bias
        ref = torch.stack([sum(w[c, 0, u, v] * yp[:, c, u:u + 6, v:v + 7] for u in range(3) for v in range(3)) + b[c]
                           for c in range(y.shape[1])], 1)
    for f, p, r in zip(fast, plain, ref.chunk(3, 1)):
        torch.testing.assert_close(f, p, atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(f, r, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("side,pool,folded", [(12, 8, True), (6, 4, True), (3, 2, True), (1, 1, True),
                                              (2, 1, False), (16, 4, False)])
def test_block_with_single_key_global_heads_folded_into_the_residual_equals_the_plain_block(side, pool, folded):
    """Inference rewrite: x + proj([local | V broadcast]) = (x + P_g (W_v pooled + b_v) + b) + P_l local, for the
    pooled-map sizes of CloFormer-XXS at 48 px (12/8, 6/4, 3/2) and 32 px (1/1); more than one pooled key keeps
    the plain path. Compared with the rewrites off and with explicit softmax attention."""
    torch.manual_seed(side * 10 + pool)
    blk = CloBlock(32, 32, 4, (2, 2), 3, pool, 5, 4, 1, 0.0).eval()
    x = torch.randn(2, 32, side, side)
    with torch.no_grad():
        assert (blk.attn.single_key_split(blk.norm1(x)) is not None) == folded
        fast = blk.forward_attention(x)
        reference = x + _attention_reference(blk.attn, blk.norm1(x))
        set_inference_rewrites(blk, False)
        plain = blk.forward_attention(x)
    torch.testing.assert_close(fast, plain, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(fast, reference, atol=1e-5, rtol=1e-5)


def test_training_mode_does_not_use_the_inference_rewrites():
    """Training runs the plain graph (one conv pair + chunk, V broadcast + concat): same loss path as before."""
    torch.manual_seed(0)
    blk = CloBlock(32, 32, 4, (2, 2), 3, 8, 5, 4, 1, 0.0).train()
    x = torch.randn(2, 32, 8, 8)
    calls = []
    blk.attn.single_key_split = lambda y: calls.append(1)  # would be called by the rewritten path
    blk.forward_attention(x)
    assert not calls


def test_cli_distill_defaults_are_the_library_defaults_and_the_judged_benchmark_recipe():
    """`fovea label distill` with no options trains what benchmarks/label.py judges (`--recipe` default)."""
    import importlib.util
    from pathlib import Path

    from fovea.cli.label import distill_cmd
    from fovea.label.distill import DEFAULT_AUGMENT, DEFAULT_CONSISTENCY, DEFAULT_INPUT_SIZE

    defaults = {p.name: p.default for p in distill_cmd.params}
    assert defaults["input_size"] == DEFAULT_INPUT_SIZE
    assert defaults["consistency"] == DEFAULT_CONSISTENCY and defaults["min_crop"] == DEFAULT_AUGMENT.scale[0]
    path = Path(__file__).resolve().parents[2] / "benchmarks" / "label.py"
    spec = importlib.util.spec_from_file_location("bench_label", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    recipe = bench.RECIPES["kd_cons"]
    assert bench.parse_student("kd_cons@48", 32) == ("kd_cons", DEFAULT_INPUT_SIZE)
    assert recipe["consistency"] == DEFAULT_CONSISTENCY and recipe["augment"]["scale"][0] == DEFAULT_AUGMENT.scale[0]
    assert "--recipe" in path.read_text() and 'default="kd_cons@48"' in path.read_text()
