"""Exact, faster exports of a distilled CloFormer student for onnxruntime on the CPU.

Three steps, each exact (the same function up to float rounding; tests/label/test_export.py checks each against
the unrewritten model, torch against onnxruntime); `fast_student_export` runs all three:

1. `fused_student_export`: the student's ONNX export from an inference copy with CloFormer's export fusions
   (`fovea.models.cloformer.set_export_fusions`: depthwise kernels cropped to the map, stage 4's global Q/K/V
   from one conv) and the GroupNorm affines folded into the 1x1 convs they feed (`fold_norm_affines`). The
   checkpoint and the trained weights are not changed.
2. `resize_first_model`: fovea's exported graphs turn the uint8 (N, H, W, 3) input into NCHW and then resize it
   (transpose, cast, antialiased resize to the input size); resizing first, over axes 1 and 2 of the NHWC
   tensor, and transposing the small result is the same arithmetic on fewer moved bytes (a 128-px image to a
   48-px student: the transpose moves 7 k values instead of 49 k). Portable; applies to any such export (the
   benchmark gives the teacher's file the same step).
3. `nchwc_layer_norm_model`: onnxruntime's level-ALL graph of that export, saved for THIS CPU (the NCHWc
   convolutions' channel block is the CPU's vector width: 16 floats with AVX-512, 8 with AVX2), with every
   CloFormer norm moved onto the blocked layout: level ALL wraps each LayerNormalization over (C, H, W) in a
   ReorderOutput / ReorderInput pair (the norm has no NCHWc kernel), but a norm over all of C, H, W is the same
   whatever the order of the elements, so it runs on the blocked buffer as it is (the same LayerNormalization
   over axes 1.., its scale and bias permuted to the blocked order) and the pair is dropped. The block size is not read from the CPU: the rewrite is built for 16 and 8 and kept only
   if its outputs equal level ALL's on random images; none equal -> the level-ALL graph unchanged. The file
   is like onnxruntime's own offline-optimised models: for the CPU it was built on; load it with
   optimisation disabled (`ort_session`). A model without such norms (the teacher) is unchanged by step 2.
"""

from __future__ import annotations

import collections
import copy
from pathlib import Path

import numpy as np

from fovea.errors import ExportError

__all__ = ["CPU_LAYOUT_KEY", "fast_student_export", "fused_student_export", "nchwc_layer_norm_model", "ort_session",
           "resize_before_transpose", "resize_first_model", "rewrite_nchwc_layer_norms"]

CPU_LAYOUT_KEY = "fovea.ort_cpu_layout"  # metadata entry of a file written by `nchwc_layer_norm_model`


def fused_student_export(predictor, out_dir: str | Path, name: str) -> Path:
    """ONNX export of a classify predictor's CloFormer student with the export fusions on and the norm affines
    folded, from a copy (the predictor is not changed) -> the .onnx path."""
    from fovea.engine.export import export
    from fovea.models.cloformer import CloFormer, fold_norm_affines, set_export_fusions

    if getattr(predictor, "pipeline", None) is None:
        raise ExportError(f"fused_student_export needs an in-process student (a checkpoint folder), got a "
                          f"{getattr(predictor, 'runtime', '?')} file. Fix: pass `load_predictor(<student folder>)`.")
    pipeline = copy.deepcopy(predictor.pipeline).eval()
    net = pipeline.network
    if not any(isinstance(m, CloFormer) for m in net.modules()):
        raise ExportError(f"fused_student_export: {type(net).__name__} is not a CloFormer. Fix: export other "
                          "backbones with the predictor's own `export`.")
    fold_norm_affines(net)
    set_export_fusions(net, True)
    return export(pipeline, out_dir, ["onnx"], name, predictor.recipe.info)["onnx"]


def fast_student_export(predictor, out_dir: str | Path, name: str) -> tuple[Path, Path, int]:
    """All three steps -> (portable .onnx: fusions, folded affines, resize first; this CPU's .cpu.onnx with the
    norms on the NCHWc layout; norms moved)."""
    fused = fused_student_export(predictor, out_dir, f"{name}.fused")
    portable = resize_first_model(fused, Path(out_dir) / f"{name}.onnx")
    cpu, moved, _ = nchwc_layer_norm_model(portable)
    return portable, cpu, moved


def _dead_code_free(nodes, outputs) -> list:
    nodes = list(nodes)
    while True:
        used = {i for n in nodes for i in n.input} | set(outputs)
        kept = [n for n in nodes if any(o in used for o in n.output)]
        if len(kept) == len(nodes):
            return kept
        nodes = kept


def resize_before_transpose(model) -> bool:
    """In place on an ONNX model (onnx.ModelProto) whose input `images` (N, H, W, 3) is transposed to NCHW, cast to
    float and resized to a constant (h, w) (sizes = Concat(Shape(x)[:2], [h, w]), as fovea's exports write it):
    cast, resize over axes 1 and 2 (`axes` attribute, same mode and options), then the transpose. Returns False
    (model unchanged) when the graph does not start that way."""
    from onnx import helper, numpy_helper

    g = model.graph
    nodes = list(g.node)
    first = lambda pred: next((n for n in nodes if pred(n)), None)  # noqa: E731
    tr = first(lambda n: n.op_type == "Transpose" and n.input[0] == "images" and list(_attr(n, "perm", [])) == [0, 3, 1, 2])
    cast = tr and first(lambda n: n.op_type == "Cast" and n.input[0] == tr.output[0])
    rs = cast and first(lambda n: n.op_type == "Resize" and n.input[0] == cast.output[0] and len(n.input) == 4)
    sizes = rs and first(lambda n: n.output[0] == rs.input[3] and n.op_type == "Concat")
    if not sizes or len(sizes.input) != 2 or _attr(rs, "axes") is not None:
        return False
    consts = {i.name: numpy_helper.to_array(i) for i in g.initializer}
    consts.update({n.output[0]: numpy_helper.to_array(n.attribute[0].t) for n in nodes
                   if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value"})
    shape = first(lambda n: n.output[0] == sizes.input[0] and n.op_type == "Shape")
    hw = consts.get(sizes.input[1])
    if shape is None or hw is None or hw.shape != (2,) or (_attr(shape, "start", 0), _attr(shape, "end")) != (0, 2):
        return False
    g.initializer.append(numpy_helper.from_array(np.asarray(hw, np.int64), "fovea_resize_first_sizes"))
    attrs = {a.name: helper.get_attribute_value(a) for a in rs.attribute}
    new = [helper.make_node("Cast", ["images"], ["fovea_resize_first_in"], name="fovea_resize_first_cast",
                            to=_attr(cast, "to")),
           helper.make_node("Resize", ["fovea_resize_first_in", "", "", "fovea_resize_first_sizes"],
                            ["fovea_resize_first_nhwc"], name="fovea_resize_first", axes=[1, 2], **attrs),
           helper.make_node("Transpose", ["fovea_resize_first_nhwc"], [rs.output[0]], name="fovea_resize_first_nchw",
                            perm=[0, 3, 1, 2])]
    rest = [n for n in nodes if n is not rs]
    kept = _dead_code_free(new + rest, [o.name for o in g.output])
    if any(n is tr or n is cast for n in kept):  # the NCHW float image is read elsewhere too: leave the graph
        g.initializer.pop()
        return False
    _set_nodes(g, kept)
    return True


def _set_nodes(g, nodes) -> None:
    """Make `nodes` the graph's nodes and drop the initializers no node reads any more."""
    del g.node[:]
    g.node.extend(nodes)
    used = {i for n in g.node for i in n.input}
    kept = [i for i in g.initializer if i.name in used]
    del g.initializer[:]
    g.initializer.extend(kept)


def resize_first_model(onnx_path: str | Path, out_path: str | Path, check_sides=((128, 128), (90, 70)),
                       atol: float = 1e-5, seed: int = 0) -> Path:
    """`resize_before_transpose` on a file, checked against the original through onnxruntime (level ALL) on random
    uint8 images of `check_sides` -> out_path (a copy of the original when the graph does not match the pattern or
    the outputs differ by more than `atol`)."""
    import onnx

    onnx_path, out_path = Path(onnx_path), Path(out_path)
    model = onnx.load(str(onnx_path))
    if resize_before_transpose(model):
        onnx.save(model, str(out_path))
        rng = np.random.default_rng(seed)
        a, b = ort_session(onnx_path), ort_session(out_path)
        for h, w in check_sides:
            im = rng.integers(0, 256, (2, h, w, 3), dtype=np.uint8)
            diff = max(float(np.abs(x - y).max()) for x, y in zip(a.run(None, {"images": im}),
                                                                   b.run(None, {"images": im})))
            if diff > atol:
                break
        else:
            return out_path
    onnx.save(onnx.load(str(onnx_path)), str(out_path))
    return out_path


def _attr(node, name, default=None):
    from onnx import helper

    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def rewrite_nchwc_layer_norms(model, block: int) -> int:
    """In place on an onnxruntime level-ALL graph (onnx.ModelProto): every LayerNormalization over (C, H, W)
    (axis -3 or 1 of a 4-D input, constant scale / bias of shape (C, H, W), C a multiple of `block`) whose input
    is a ReorderOutput of an NCHWc tensor runs on that tensor's blocked buffer; its ReorderInput consumers are
    bypassed (a ReorderOutput is kept for any other consumer). Returns the number of norms moved."""
    from onnx import helper, numpy_helper

    g = model.graph
    inits = {i.name: i for i in g.initializer}
    producer = {o: n for n in g.node for o in n.output}
    consumers = collections.defaultdict(list)
    for n in g.node:
        for i in n.input:
            consumers[i].append(n)
    outputs = {o.name for o in g.output}
    replace, remove, moved = {}, set(), 0
    for n in g.node:
        if n.op_type != "LayerNormalization" or n.domain not in ("", "ai.onnx"):
            continue
        src = producer.get(n.input[0])
        if src is None or src.op_type != "ReorderOutput" or _attr(src, "channels_last", 0):
            continue
        if _attr(n, "axis", -1) not in (-3, 1) or n.input[1] not in inits or len(n.output) > 1:
            continue
        has_bias = len(n.input) > 2 and bool(n.input[2])
        if has_bias and n.input[2] not in inits:
            continue
        scale = numpy_helper.to_array(inits[n.input[1]])
        if scale.ndim != 3 or scale.shape[0] % block or n.output[0] in outputs:
            continue
        c, h, w = scale.shape

        def blocked(a: np.ndarray) -> np.ndarray:  # (C, H, W) in the NCHWc order (C / b, H, W, b), relabelled (C, H, W)
            return np.ascontiguousarray(a.reshape(c // block, block, h, w).transpose(0, 2, 3, 1).reshape(c, h, w))

        tag = f"fovea_nchwc_ln_{moved}"
        g.initializer.append(numpy_helper.from_array(blocked(scale), f"{tag}_scale"))
        ln_in = [src.input[0], f"{tag}_scale"]
        if has_bias:
            g.initializer.append(numpy_helper.from_array(blocked(numpy_helper.to_array(inits[n.input[2]])),
                                                         f"{tag}_bias"))
            ln_in.append(f"{tag}_bias")
        eps = _attr(n, "epsilon", 1e-5)
        # the blocked buffer of one image is C*H*W contiguous floats, as the NCHW one: a norm over axes 1.. reads
        # it as it is, with scale / bias in the same (blocked) order
        new = [helper.make_node("LayerNormalization", ln_in, [f"{tag}_blocked"], name=f"{tag}_norm", axis=1,
                                epsilon=eps)]
        plain_consumers = False
        for cons in consumers[n.output[0]]:
            if cons.op_type == "ReorderInput" and not _attr(cons, "channels_last", 0) and cons.output[0] not in outputs:
                for d in consumers[cons.output[0]]:
                    for k, name in enumerate(d.input):
                        if name == cons.output[0]:
                            d.input[k] = f"{tag}_blocked"
                remove.add(id(cons))
            else:
                plain_consumers = True
        if plain_consumers:  # the NCHW result is still read by someone: convert once, as level ALL did
            new.append(helper.make_node("ReorderOutput", [f"{tag}_blocked"], [n.output[0]], name=f"{tag}_to_nchw",
                                        domain="com.microsoft.nchwc", channels=c, channels_last=0))
        replace[id(n)] = new
        if len(consumers[src.output[0]]) == 1:
            remove.add(id(src))
        moved += 1
    nodes = []
    for n in g.node:
        if id(n) in replace:
            nodes += replace[id(n)]
        elif id(n) not in remove:
            nodes.append(n)
    _set_nodes(g, nodes)
    return moved


def ort_session(path: str | Path, level: str = "ALL", threads: int = 1):
    """A CPU onnxruntime session: `level` BASIC / EXTENDED / ALL, or DISABLE_ALL (no graph optimisation: for a
    file written by `nchwc_layer_norm_model`, already optimised for this CPU)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = opts.inter_op_num_threads = int(threads)
    opts.log_severity_level = 3
    opts.graph_optimization_level = getattr(ort.GraphOptimizationLevel,
                                            "ORT_DISABLE_ALL" if level == "DISABLE_ALL" else f"ORT_ENABLE_{level}")
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def nchwc_layer_norm_model(onnx_path: str | Path, out_path: str | Path | None = None, check_images: int = 4,
                           atol: float = 1e-5, seed: int = 0) -> tuple[Path, int, float]:
    """onnxruntime's level-ALL graph of `onnx_path` for this CPU with the norms on the NCHWc layout
    (`rewrite_nchwc_layer_norms`), checked against the level-ALL session on `check_images` random uint8 images of
    the model's input size -> (path, norms moved, max |difference| of the outputs). Writes `<stem>.cpu.onnx`
    beside the input unless `out_path` is given. Load it with `ort_session(path, "DISABLE_ALL")`."""
    import onnx

    onnx_path = Path(onnx_path)
    out_path = Path(out_path) if out_path else onnx_path.with_suffix(".cpu.onnx")
    optimised = out_path.with_suffix(".level-all.onnx")
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    opts.optimized_model_filepath = str(optimised)
    try:
        reference = ort.InferenceSession(str(onnx_path), opts, providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise ExportError(f"onnxruntime cannot load {onnx_path}: {exc}. Fix: re-export the model.") from exc
    side = _input_side(onnx_path)
    images = np.random.default_rng(seed).integers(0, 256, (check_images, side, side, 3), dtype=np.uint8)
    name = reference.get_inputs()[0].name
    expected = [reference.run(None, {name: im[None]}) for im in images]
    for block in (16, 8):
        model = onnx.load(str(optimised))
        moved = rewrite_nchwc_layer_norms(model, block)
        if not moved:
            break
        model.metadata_props.add(key=CPU_LAYOUT_KEY, value=f"nchwc block {block}, {moved} norms")
        onnx.save(model, str(out_path))
        session = ort_session(out_path, "DISABLE_ALL")
        got = [session.run(None, {name: im[None]}) for im in images]
        diff = max(float(np.abs(a - b).max()) for ga, ea in zip(got, expected) for a, b in zip(ga, ea))
        if diff <= atol:
            return out_path, moved, diff
    model = onnx.load(str(optimised))  # no norm to move, or no block size reproduces level ALL: keep level ALL
    onnx.save(model, str(out_path))
    return out_path, 0, 0.0


def _input_side(onnx_path: Path) -> int:
    """The image side the export's recipe names (its `input_size`), else 128."""
    import json

    import onnx

    meta = {p.key: p.value for p in onnx.load(str(onnx_path), load_external_data=False).metadata_props}
    try:
        return int(max(json.loads(meta["fovea.recipe"])["config"]["input_size"]))
    except (KeyError, ValueError, TypeError):
        return 128
