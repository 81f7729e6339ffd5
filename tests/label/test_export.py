"""The student's exact fast export: cropped depthwise kernels, folded norm affines, stage 4's merged Q/K/V conv
(`fovea.models.cloformer`), and norms on onnxruntime's NCHWc layout (`fovea.label.export`), each against the
unrewritten model."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fovea.models.cloformer import (CLOFORMER_CONFIGS, CloAttention, CloFormer, cropped_same_conv, fold_norm_affines,
                                    set_export_fusions, set_inference_rewrites)


@pytest.mark.parametrize("k,h,w,groups", [(9, 2, 2, 6), (5, 2, 3, 6), (7, 3, 3, 6), (3, 1, 1, 6), (5, 6, 6, 6),
                                          (5, 2, 2, 1)])
def test_cropped_same_conv_equals_the_full_kernel_and_never_reads_the_cropped_taps(k, h, w, groups):
    """Against the full-kernel 'same' convolution; the taps outside +-(n - 1) are set to NaN, which the full
    convolution would spread (NaN * 0 = NaN) and the cropped one must never read."""
    torch.manual_seed(k * 100 + h * 10 + w)
    x = torch.randn(2, 6, h, w)
    weight, bias = torch.randn(6, 6 // groups, k, k), torch.randn(6)
    expected = F.conv2d(x, weight, bias, 1, k // 2, 1, groups)
    poisoned = weight.clone()
    c = k // 2
    mask = torch.ones(k, k, dtype=torch.bool)
    mask[max(0, c - h + 1):c + h, max(0, c - w + 1):c + w] = False  # the offsets that meet the map
    poisoned[..., mask] = float("nan")
    got = cropped_same_conv(x, poisoned, bias, groups)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def _random_student(seed: int) -> CloFormer:
    """CloFormer-XXS, 2 classes, with random norm affines (the initial ones / zeros would make folding trivial)."""
    torch.manual_seed(seed)
    model = CloFormer(CLOFORMER_CONFIGS["cloformer_xxs"], num_classes=2).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.copy_(torch.randn_like(p) * 0.3 + (1.0 if name.endswith("weight") else 0.0))
    return model


@pytest.mark.parametrize("side", [48, 64])
def test_folded_and_fused_student_equals_the_unrewritten_model(side):
    """48 px: stages 1-3 single-key, stage 4 on 2 x 2 maps (cropped 9 x 9 / 5 x 5 kernels, merged Q/K/V conv);
    64 px: stage 3 keeps 4 pooled keys (pool 2 on 4 x 4). The copy equals the original with all rewrites off;
    the original's weights are untouched and the parameter count is the same."""
    model = _random_student(side)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    fused = set_export_fusions(fold_norm_affines(copy.deepcopy(model)), True)
    x = torch.randn(2, 3, side, side)
    with torch.no_grad():
        plain = set_inference_rewrites(copy.deepcopy(model), False)(x)
        got = fused(x)
    torch.testing.assert_close(got, plain, atol=1e-4, rtol=1e-4)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert sum(p.numel() for p in fused.parameters()) == sum(p.numel() for p in model.parameters())
    assert sum(m.affine_folded for m in fused.modules() if hasattr(m, "affine_folded")) == 2 * 12 + 1


def test_merged_global_qkv_conv_equals_two_convs_and_training_ignores_the_fusions():
    """Pool 1 (stage 4): Q, K, V from one conv over [W_q | W_kv] = the separate convs; in training mode the flag
    changes nothing (the same graph and loss path as before)."""
    torch.manual_seed(7)
    mod = CloAttention(64, 8, (2, 6), kernel=9, pool=1)
    x = torch.randn(2, 64, 2, 2)
    calls = []
    mod.global_q.register_forward_hook(lambda *_: calls.append(1))  # the separate Q conv runs as a module
    with torch.no_grad():
        mod.eval()
        plain = mod(x)
        set_export_fusions(mod, True)
        fused = mod(x)
        assert len(calls) == 1  # the fused path read W_q directly
        mod.train()
        mod(x)
    torch.testing.assert_close(fused, plain, atol=1e-5, rtol=1e-5)
    assert len(calls) == 2  # training: the separate convs again


def _tiny_norm_graph(path, block_channels: int = 32, side: int = 8):
    """uint8 images (N, side, side, 3) -> Conv 3->C 3x3 -> LayerNormalization over (C, H, W) with a random
    (C, H, W) scale and bias -> Conv C->C 1x1 -> (N, C, H, W), with a fovea recipe naming the input size."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    c = block_channels
    inits = [numpy_helper.from_array(rng.standard_normal((c, 3, 3, 3)).astype(np.float32) * 0.1, "w1"),
             numpy_helper.from_array(rng.standard_normal(c).astype(np.float32), "b1"),
             numpy_helper.from_array(rng.standard_normal((c, side, side)).astype(np.float32), "s"),
             numpy_helper.from_array(rng.standard_normal((c, side, side)).astype(np.float32), "t"),
             numpy_helper.from_array(rng.standard_normal((c, c, 1, 1)).astype(np.float32) * 0.1, "w2"),
             numpy_helper.from_array(rng.standard_normal(c).astype(np.float32), "b2")]
    nodes = [helper.make_node("Transpose", ["images"], ["nchw"], perm=[0, 3, 1, 2]),
             helper.make_node("Cast", ["nchw"], ["x"], to=TensorProto.FLOAT),
             helper.make_node("Conv", ["x", "w1", "b1"], ["y1"], pads=[1, 1, 1, 1]),
             helper.make_node("LayerNormalization", ["y1", "s", "t"], ["n"], axis=-3),
             helper.make_node("Conv", ["n", "w2", "b2"], ["out"])]
    graph = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("images", TensorProto.UINT8,
                                                                            ["N", side, side, 3])],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, None)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    model.metadata_props.add(key="fovea.recipe", value=json.dumps({"config": {"input_size": [side, side]}}))
    onnx.save(model, str(path))
    return path


def test_norm_on_the_nchwc_layout_equals_level_all_and_only_the_right_block_size_does(tmp_path):
    """The rewritten graph (norm on the blocked buffer, no reorder pair around it) answers as onnxruntime's
    level ALL and as a numpy reference; the rewrite built for the other block size (8 vs 16) does not, which is
    why `nchwc_layer_norm_model` checks each candidate."""
    pytest.importorskip("onnxruntime")
    import onnx

    from fovea.label.export import CPU_LAYOUT_KEY, nchwc_layer_norm_model, ort_session, rewrite_nchwc_layer_norms

    src = _tiny_norm_graph(tmp_path / "tiny.onnx")
    out, moved, diff = nchwc_layer_norm_model(src, tmp_path / "tiny.cpu.onnx", check_images=3)
    level_all = onnx.load(str(tmp_path / "tiny.cpu.level-all.onnx"))
    if not any(n.op_type == "ReorderOutput" for n in level_all.graph.node):
        pytest.skip("onnxruntime inserted no NCHWc layout conversions on this CPU")
    assert moved == 1 and diff <= 1e-5
    rewritten = onnx.load(str(out))
    assert [p.value for p in rewritten.metadata_props if p.key == CPU_LAYOUT_KEY]
    assert not any(n.op_type.startswith("Reorder") and n.output[0] in {"n"} for n in rewritten.graph.node)
    images = np.random.default_rng(5).integers(0, 256, (2, 8, 8, 3), dtype=np.uint8)
    got = ort_session(out, "DISABLE_ALL").run(None, {"images": images})[0]
    # numpy reference: conv 3x3 (pad 1), norm over (C, H, W) with the affine, conv 1x1
    init = {i.name: onnx.numpy_helper.to_array(i) for i in onnx.load(str(src)).graph.initializer}
    x = np.pad(images.transpose(0, 3, 1, 2).astype(np.float64), ((0, 0), (0, 0), (1, 1), (1, 1)))
    patches = np.stack([np.stack([x[:, :, u:u + 8, v:v + 8] for v in range(3)], 2) for u in range(3)], 2)
    y1 = np.einsum("ocuv,ncuvhw->nohw", init["w1"], patches) + init["b1"][None, :, None, None]
    mu = y1.mean(axis=(1, 2, 3), keepdims=True)
    var = y1.var(axis=(1, 2, 3), keepdims=True)
    n = (y1 - mu) / np.sqrt(var + 1e-5) * init["s"] + init["t"]
    ref = np.einsum("oc,nchw->nohw", init["w2"][:, :, 0, 0], n) + init["b2"][None, :, None, None]
    np.testing.assert_allclose(got, ref, atol=1e-3, rtol=1e-4)
    block = int([p.value for p in rewritten.metadata_props if p.key == CPU_LAYOUT_KEY][0].split()[2].rstrip(","))
    wrong = onnx.load(str(tmp_path / "tiny.cpu.level-all.onnx"))
    assert rewrite_nchwc_layer_norms(wrong, 8 if block == 16 else 16) == 1
    onnx.save(wrong, str(tmp_path / "wrong.onnx"))
    bad = ort_session(tmp_path / "wrong.onnx", "DISABLE_ALL").run(None, {"images": images})[0]
    assert np.abs(bad - ref).max() > 1e-2


def _resize_graph(path, out_side: int):
    """fovea's export preamble: uint8 (N, H, W, 3) -> Transpose -> Cast -> Resize (antialiased bilinear, sizes =
    Concat(Shape(x)[0:2], [side, side])) -> Sub 10 -> output; H and W dynamic."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes = [helper.make_node("Transpose", ["images"], ["nchw"], perm=[0, 3, 1, 2]),
             helper.make_node("Cast", ["nchw"], ["x"], to=TensorProto.FLOAT),
             helper.make_node("Shape", ["x"], ["nc"], start=0, end=2),
             helper.make_node("Constant", [], ["hw"], value=numpy_helper.from_array(np.array([out_side] * 2, np.int64))),
             helper.make_node("Concat", ["nc", "hw"], ["sizes"], axis=0),
             helper.make_node("Resize", ["x", "", "", "sizes"], ["r"], mode="linear", antialias=1,
                              coordinate_transformation_mode="half_pixel", exclude_outside=1),
             helper.make_node("Sub", ["r", "ten"], ["out"])]
    graph = helper.make_graph(nodes, "pre", [helper.make_tensor_value_info("images", TensorProto.UINT8,
                                                                           ["N", "H", "W", 3])],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, None)],
                              [numpy_helper.from_array(np.array(10.0, np.float32), "ten")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    onnx.save(model, str(path))
    return path


@pytest.mark.parametrize("out_side", [48, 224])
def test_resize_before_the_layout_transpose_equals_the_original_and_torch(tmp_path, out_side):
    """Down (128 -> 48) and up (-> 224), square and not: the rewritten preamble (cast, resize over axes 1 and 2,
    transpose) equals the original graph and torch's antialiased bilinear resize; a graph without the pattern is
    left as it is."""
    pytest.importorskip("onnxruntime")
    import onnx

    from fovea.label.export import ort_session, resize_before_transpose, resize_first_model

    src = _resize_graph(tmp_path / "pre.onnx", out_side)
    out = resize_first_model(src, tmp_path / "pre_first.onnx")
    ops = [n.op_type for n in onnx.load(str(out)).graph.node]
    assert ops == ["Cast", "Resize", "Transpose", "Sub"]
    a, b = ort_session(src), ort_session(out)
    for h, w in [(128, 128), (90, 70)]:
        im = np.random.default_rng(h).integers(0, 256, (2, h, w, 3), dtype=np.uint8)
        got = b.run(None, {"images": im})[0]
        np.testing.assert_allclose(got, a.run(None, {"images": im})[0], atol=1e-5)
        ref = F.interpolate(torch.from_numpy(im).permute(0, 3, 1, 2).float(), size=(out_side, out_side),
                            mode="bilinear", align_corners=False, antialias=True) - 10
        np.testing.assert_allclose(got, ref.numpy(), atol=5e-3)  # pixel values 0-255: 2e-5 of the range
    tiny = onnx.load(str(_tiny_norm_graph(tmp_path / "tiny.onnx")))
    assert not resize_before_transpose(tiny)


@pytest.mark.slow
def test_fast_student_export_through_onnxruntime_equals_the_plain_torch_model(tmp_path):
    """The CloFormer-XXS classifier at 48 px (random weights and norm affines) through `fast_student_export`
    (fusions and folded affines, resize first, NCHWc norms): probabilities equal the torch pipeline with every rewrite off (atol 1e-4),
    the norms moved onto the NCHWc layout where onnxruntime uses one, and the predictor is unchanged."""
    pytest.importorskip("onnxruntime")
    import onnx

    from fovea.classify.model import ClassifierRecipe, ClassifierPipeline
    from fovea.classify.predictor import ClassifierPredictor
    from fovea.label.export import fast_student_export, ort_session

    recipe = ClassifierRecipe(backbone="cloformer_xxs", class_names=["good", "damaged"], input_size=(48, 48),
                              weights="random")
    pipe = ClassifierPipeline(_random_student(48).to(memory_format=torch.channels_last), recipe).eval()
    predictor = ClassifierPredictor.from_pipeline(pipe)
    path, out, moved = fast_student_export(predictor, tmp_path, "student")
    assert predictor.pipeline is pipe and not any(getattr(m, "export_fusions", False) for m in pipe.modules())
    assert [n.op_type for n in onnx.load(str(path)).graph.node[:3]] == ["Cast", "Resize", "Transpose"]
    images = np.random.default_rng(1).integers(0, 256, (3, 90, 70, 3), dtype=np.uint8)
    with torch.no_grad():
        expected = set_inference_rewrites(copy.deepcopy(pipe), False).infer(torch.from_numpy(images)).numpy()
    for file, level in ((path, "ALL"), (out, "DISABLE_ALL")):
        np.testing.assert_allclose(ort_session(file, level).run(None, {"images": images})[0], expected, atol=1e-4)
    assert moved in (0, 22)  # 0 where onnxruntime keeps NCHW (no NCHWc kernels); 22 of the 26 norms otherwise


def test_fast_export_refuses_files_and_other_backbones(tmp_path):
    from fovea.classify.predictor import ClassifierPredictor
    from fovea.errors import ExportError
    from fovea.label.export import fused_student_export

    fn = ClassifierPredictor.from_function(lambda x: np.full((len(x), 2), 0.5), ["a", "b"])
    with pytest.raises(ExportError, match="in-process student"):
        fused_student_export(fn, tmp_path, "x")

    class NotCloFormer:  # an in-process predictor whose backbone is something else
        pipeline = type("P", (), {"network": torch.nn.Linear(2, 2), "eval": lambda self: self})()
    with pytest.raises(ExportError, match="not a CloFormer"):
        fused_student_export(NotCloFormer(), tmp_path, "x")


@pytest.mark.slow
def test_cli_label_export_writes_both_files_with_the_checkpoint_numbers(tmp_path):
    """`fovea label export STUDENT_DIR` on a saved 32-px CloFormer student: NAME.onnx and NAME.cpu.onnx answer as
    the checkpoint does in torch."""
    pytest.importorskip("onnxruntime")
    from click.testing import CliRunner

    from fovea.classify.model import ClassifierPipeline, ClassifierRecipe, save_classifier
    from fovea.classify.predictor import load_predictor
    from fovea.cli.label import label
    from fovea.label.export import ort_session

    recipe = ClassifierRecipe(backbone="cloformer_xxs", class_names=["good", "damaged"], input_size=(32, 32),
                              weights="random")
    save_classifier(ClassifierPipeline(_random_student(32), recipe), recipe, tmp_path / "student")
    result = CliRunner().invoke(label, ["export", str(tmp_path / "student"), "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    images = np.random.default_rng(2).integers(0, 256, (2, 64, 64, 3), dtype=np.uint8)
    expected = load_predictor(tmp_path / "student").predict_probs(list(images))
    for name, level in (("student.onnx", "ALL"), ("student.cpu.onnx", "DISABLE_ALL")):
        got = ort_session(tmp_path / "out" / name, level).run(None, {"images": images})[0]
        np.testing.assert_allclose(got, expected, atol=1e-4)
