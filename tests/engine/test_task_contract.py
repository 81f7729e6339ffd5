"""The one Predictor contract, run over every registered task (issue 10).

For each task (and each anomaly model family) a tiny model is built or fitted, saved as a
checkpoint folder and exported to TorchScript and ONNX through the one export path. Then:
`fovea.load_predictor` opens the folder, the `.pt` and the `.onnx` (bare files, nothing beside
them) and they answer as the in-process model; batched `predict` equals `predict_one` per image;
results match post-processing written independently here (numpy / OpenCV on the raw network
outputs); every result round-trips through JSON; the ONNX signature is the same for all tasks.
A task registered without a case here fails `test_every_registered_task_has_a_contract_case`.
"""

from __future__ import annotations

import importlib
import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

import fovea
from fovea.core import AnomalyResult, CaptionResult, ClassResult, Frame, Predictor as PredictorProtocol, SegResult
from fovea.engine.checkpoint import FORMAT_VERSION, RECIPE_FILE, WEIGHTS_FILE
from fovea.engine.export import export
from fovea.engine.tasks import BUILTIN_TASK_MODULES, registered_tasks
from fovea.errors import CheckpointError, DataError, ExportError

TINY = "test_efficientnet"


def _textures(n: int, h: int, w: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    xx = np.arange(w)[None, :, None]
    return [(rng.integers(80, 170, (h, w, 3)) + 30 * np.sin(xx / 3.0 + i)).clip(0, 255).astype(np.uint8)
            for i in range(n)]


def _tasks() -> dict:
    """Every built-in task, registered (their predictor modules imported)."""
    for module in BUILTIN_TASK_MODULES:
        importlib.import_module(module)
    return registered_tasks()


def _json(x):
    return json.loads(json.dumps(x))


def _images() -> list[np.ndarray]:
    """Three images of one size (batched together) and two of other sizes; one with a bright defect."""
    imgs = _textures(3, 40, 48, 1) + _textures(1, 36, 52, 2) + _textures(1, 44, 40, 3)
    imgs[1][10:22, 14:30] = 255
    return imgs


# ----------------------------------------------------------------------------------- task cases

def _anomaly(name: str, fit: bool = True, **kw):
    from fovea.anomaly.models import build_model
    from fovea.anomaly.pipeline import AnomalyPipeline
    from fovea.anomaly.postprocess import Thresholds

    torch.manual_seed(0)
    pipe = AnomalyPipeline(build_model(name, backbone=TINY, weights="random", **kw), (32, 32), blur_sigma=1.0).eval()
    if fit:  # reverse distillation's student stays at its random init: export parity needs no training
        pipe.model.fit([torch.cat([pipe.preprocess(torch.from_numpy(t)[None]) for t in _textures(4, 32, 32, 0)])])
    with torch.no_grad():  # thresholds inside the observed ranges, so normalised values are not clamped
        raws = [pipe.raw(torch.from_numpy(t)[None]) for t in _images()]
    scores = np.array([float(s) for s, _ in raws])
    maps = np.concatenate([m.numpy().ravel() for _, m in raws])
    s_span, m_span = float(np.ptp(scores)) + 1.0, float(np.ptp(maps))
    pipe.set_thresholds(Thresholds(float(np.median(scores)), float(np.median(maps)), float(scores.min() - s_span),
                                   float(scores.max() + s_span), float(maps.min() - m_span),
                                   float(maps.max() + m_span)))
    return pipe


def _classify():
    from fovea.classify.model import ClassifierRecipe, build_classifier

    torch.manual_seed(0)
    pipe = build_classifier(ClassifierRecipe(backbone=TINY, class_names=["good", "scratch", "dent"],
                                             input_size=(32, 32), weights="random"))
    with torch.no_grad():  # a non-trivial head so the probabilities are far from uniform
        pipe.backbone.get_classifier().weight.normal_(0, 20.0)
    return pipe.eval()


def _segment():
    from fovea.segment.model import SegmentationModel, SegmentationPipeline, SegModelConfig

    torch.manual_seed(0)
    cfg = SegModelConfig(num_classes=3, class_names=("bg", "apple", "leaf"), backbone=TINY, weights="random",
                         input_size=(32, 32), inter_channels=8)
    pipe = SegmentationPipeline(SegmentationModel(cfg)).eval()
    with torch.no_grad():  # sharpen the head so the argmax is not a near-tie everywhere
        for p in pipe.model.head.parameters():
            p.mul_(4.0)
    return pipe


def _caption():
    from fovea.caption.pipeline import CaptionPipeline
    from fovea.caption.vocab import Vocab
    from fovea.models.captioner import Captioner, CaptionerConfig
    from fovea.models.text_decoder import TextDecoderConfig

    torch.manual_seed(0)
    vocab = Vocab.build(["a good apple", "a bruised apple with a cut", "dark spots at the top, small"])
    cfg = CaptionerConfig(backbone=TINY, weights="random", embed_dim=8, max_caption_len=6,
                          text=TextDecoderConfig(vocab_size=len(vocab), dim=16, depth=1, heads=2, max_len=12))
    pipe = CaptionPipeline(Captioner(cfg), vocab, (32, 32)).eval()
    with torch.no_grad():  # well separated logits: no near-tie argmax that a runtime's rounding could flip
        pipe.captioner.text.embed.weight.mul_(20.0)
    return pipe


def _forgery():
    from fovea.forgery.model import build_pipeline

    torch.manual_seed(0)
    pipe = build_pipeline("unet", (32, 32), {"widths": [8, 16], "stem_stride": 2}).eval()
    with torch.no_grad():  # a spread of probabilities on both sides of 0.5
        pipe.network.head.weight.mul_(8.0)
    return pipe


CASES = {  # case id -> (task, builder)
    "anomaly-patchcore": ("anomaly", lambda: _anomaly("patchcore", layers=(2, 3), coreset_ratio=0.25,
                                                      projection_dim=16)),
    "anomaly-padim": ("anomaly", lambda: _anomaly("padim", layers=(1, 2, 3), n_features=12)),
    "anomaly-rd": ("anomaly", lambda: _anomaly("reverse_distillation", fit=False, layers=(1, 2, 3), embed_dim=16,
                                               decoder_blocks=1, decoder_width=1.0)),
    "anomaly-vae": ("anomaly", lambda: _anomaly("vae", fit=False, width=8, n_down=2, latent_channels=4)),
    "anomaly-vqvae": ("anomaly", lambda: _anomaly("vqvae", fit=False, width=8, n_down=2, embed_dim=4, num_codes=8)),
    "anomaly-winclip": ("anomaly", lambda: _anomaly(  # tiny random two-tower; k_shot=1 saves a memory too
        "winclip", k_shot=1, normal_states=("{}",), anomalous_states=("damaged {}",), templates=("a {}.",),
        tower_config={"image_backbone": TINY, "image_size": 96, "text_tower": "clip", "embed_dim": 16,
                      "clip_text": {"vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}})),
    "caption": ("caption", _caption),
    "classify": ("classify", _classify),
    "forgery": ("forgery", _forgery),
    "segment": ("segment", _segment),
}


# ----------------------------------------------------------------------------------- independent references

def _softmax(x: np.ndarray, axis: int) -> np.ndarray:
    e = np.exp(x - x.max(axis, keepdims=True))
    return e / e.sum(axis, keepdims=True)


def _resize(a: np.ndarray, h: int, w: int) -> np.ndarray:
    """Bilinear, half-pixel centres (OpenCV), as an upsampling reference for torch's align_corners=False."""
    return cv2.resize(np.ascontiguousarray(a, np.float32), (w, h), interpolation=cv2.INTER_LINEAR)


def _reference(pipe, image: np.ndarray) -> dict[str, np.ndarray]:
    """The task's answer for one image from the raw network outputs, post-processed here in numpy/OpenCV."""
    h, w = image.shape[:2]
    with torch.no_grad():
        raw = pipe.raw(torch.from_numpy(image.copy())[None])
    if pipe.task == "classify":
        return {"probs": _softmax(raw.numpy()[0].astype(np.float64), 0)}
    if pipe.task == "caption":  # the cached incremental decoder, not the exported fixed-length loop
        from fovea.caption.vocab import BOS, EOS
        from fovea.models.text_decoder import greedy_decode

        cap = pipe.captioner
        with torch.no_grad():
            memory = cap.image_tokens(pipe.preprocess(torch.from_numpy(image.copy())[None]))
            tokens = greedy_decode(cap.text, torch.tensor([BOS]), cap.cfg.max_caption_len, eos=EOS, memory=memory)
            ids = torch.cat([torch.tensor([BOS]), tokens])[None]
            logp = torch.log_softmax(cap.lm_logits(ids, memory)[0, :-1], -1).gather(1, tokens[:, None])
        kept = tokens.tolist()
        n = kept.index(EOS) if EOS in kept else len(kept)
        return {"tokens": tokens[:n].numpy().astype(np.float64), "mean_logprob": np.array(float(logp.mean()))}
    if pipe.task == "segment":
        logits = raw.numpy()[0]
        up = np.stack([_resize(c, h, w) for c in logits])
        return {"probs": _softmax(up.astype(np.float64), 0)}
    if pipe.task == "forgery":  # one manipulation logit: probs = (1 - sigmoid, sigmoid) at the image size
        p = 1.0 / (1.0 + np.exp(-_resize(raw.numpy()[0, 0], h, w).astype(np.float64)))
        return {"probs": np.stack([1.0 - p, p])}
    t = pipe.get_thresholds()
    score, amap = float(raw[0][0]), raw[1].numpy()[0, 0]
    norm = lambda x, thr, lo, hi: np.clip((x - thr) / (hi - lo) + 0.5, 0.0, 1.0)  # noqa: E731
    return {"score": np.array(norm(score, t.image_threshold, t.score_min, t.score_max)),
            "raw_score": np.array(score),
            "anomaly_map": norm(_resize(amap, h, w), t.pixel_threshold, t.map_min, t.map_max)}


def _arrays(r) -> dict[str, np.ndarray]:
    """The numbers of a result, by name."""
    if isinstance(r, AnomalyResult):
        return {"score": np.array(r.score), "raw_score": np.array(r.raw_score), "anomaly_map": r.anomaly_map}
    if isinstance(r, (ClassResult, SegResult)):
        return {"probs": r.probs}
    if isinstance(r, CaptionResult):
        return {"tokens": r.tokens.astype(np.float64), "mean_logprob": np.array(r.mean_logprob)}
    raise AssertionError(f"unexpected result type {type(r).__name__}")


def _assert_same(a, b, atol: float, what: str) -> None:
    x, y = _arrays(a) if not isinstance(a, dict) else a, _arrays(b) if not isinstance(b, dict) else b
    assert x.keys() == y.keys(), what
    for k in x:
        np.testing.assert_allclose(x[k], y[k], atol=atol, rtol=0, err_msg=f"{what}: {k}")


# ----------------------------------------------------------------------------------- fixtures

@pytest.fixture(scope="module", params=sorted(CASES))
def case(request, tmp_path_factory):
    task, build = CASES[request.param]
    pipe = build()
    root = tmp_path_factory.mktemp(request.param)
    pipe_cls = _tasks()[task].predictor
    in_process = pipe_cls.from_pipeline(pipe)
    in_process.save(root / "ckpt", info={"note": "contract test"})
    files = export(pipe, root / "export", name="model")
    bare = root / "bare"  # exported files alone: the recipe must travel inside them
    bare.mkdir()
    for f in files.values():
        shutil.copy(f, bare / f.name)
    predictors = {"in-process": in_process, "folder": fovea.load_predictor(root / "ckpt"),
                  "torchscript": fovea.load_predictor(bare / "model.pt"),
                  "onnx": fovea.load_predictor(bare / "model.onnx")}
    return {"task": task, "pipe": pipe, "root": root, "files": files, "predictors": predictors}


# ----------------------------------------------------------------------------------- the contract

def test_every_registered_task_has_a_contract_case():
    assert set(_tasks()) == {task for task, _ in CASES.values()}


def test_kind_runtime_and_recipe(case):
    task, preds = case["task"], case["predictors"]
    assert case["pipe"].task == task
    assert {k: (p.kind, p.runtime) for k, p in preds.items()} == {
        "in-process": (task, "torch"), "folder": (task, "torch"), "torchscript": (task, "torchscript"),
        "onnx": (task, "onnx")}
    for p in preds.values():
        assert isinstance(p, registered_tasks()[task].predictor) and isinstance(p, PredictorProtocol)
        assert p.recipe.task == task and _json(p.config) == _json(case["pipe"].config())
    saved = json.loads((case["root"] / "ckpt" / RECIPE_FILE).read_text())
    assert (saved["task"], saved["format"], saved["info"]) == (task, FORMAT_VERSION, {"note": "contract test"})
    assert (case["root"] / "ckpt" / WEIGHTS_FILE).is_file()
    assert preds["folder"].recipe.info == {"note": "contract test"}


def test_folder_torchscript_and_onnx_answer_as_the_in_process_model(case):
    preds, images = case["predictors"], _images()
    ref = preds["in-process"].predict(images)
    for name in ("folder", "torchscript", "onnx"):
        got = preds[name].predict(images)
        assert [type(r) for r in got] == [type(r) for r in ref]
        for i, (a, b) in enumerate(zip(ref, got)):
            _assert_same(a, b, 1e-6 if name == "folder" else 1e-4, f"{name} image {i}")


def test_batched_predict_equals_predict_one(case):
    images = _images()
    for name, p in case["predictors"].items():
        p.max_batch = 2  # three same-size images: a batch of 2 and one of 1
        batched = p.predict(images, paths=[f"img{i}.png" for i in range(len(images))])
        assert [r.image_path for r in batched] == [f"img{i}.png" for i in range(len(images))]
        for i, img in enumerate(images):
            one = p.predict_one(img, f"img{i}.png")
            assert one.image_path == f"img{i}.png"
            _assert_same(batched[i], one, 1e-5, f"{name} image {i}")
    # a Frame's meta["path"] (a Path here) becomes the result's image_path, as a string
    r = case["predictors"]["onnx"].predict([Frame(images[0], meta={"path": Path("cam/0001.png")})])[0]
    assert r.image_path == str(Path("cam/0001.png"))


def test_batches_are_cut_by_count_and_by_pixels(case):
    p = case["predictors"]["in-process"]
    sizes: list[int] = []
    run = p.run
    p.run = lambda images: sizes.append(len(images)) or run(images)
    try:
        p.max_batch = 2
        p.predict(_images())
        assert sorted(sizes) == [1, 1, 1, 2]  # three 40x48 images as 2 + 1, two other sizes alone
        sizes.clear()
        p.max_batch, p.max_batch_pixels = 32, 2 * 40 * 48
        p.predict(_images())
        assert sorted(sizes) == [1, 1, 1, 2]
        sizes.clear()
        p.max_batch_pixels = 1  # never less than one image per call
        p.predict(_images())
        assert sizes == [1] * 5
    finally:
        p.run, p.max_batch = run, 32
        del p.max_batch_pixels  # back to the class default


def test_results_match_an_independent_post_process(case):
    pipe, p = case["pipe"], case["predictors"]["in-process"]
    for i, img in enumerate(_images()):
        r = p.predict_one(img)
        _assert_same(_arrays(r), _reference(pipe, img), 2e-5, f"image {i}")
        if isinstance(r, AnomalyResult):
            assert r.anomaly_map.shape == img.shape[:2] and 0.0 < r.score < 1.0  # not clamped
            np.testing.assert_array_equal(r.mask, r.anomaly_map > 0.5)
            assert r.label == (r.score > 0.5)
        elif isinstance(r, SegResult):
            assert r.class_map.shape == img.shape[:2]
            np.testing.assert_array_equal(r.class_map, r.probs.argmax(0))
        elif isinstance(r, CaptionResult):
            assert r.text == pipe.vocab.decode(r.tokens.tolist()) and np.isfinite(r.mean_logprob)
        else:
            assert r.class_names == ("good", "scratch", "dent") and r.probs.std() > 0.01


def test_every_result_round_trips(case):
    for r in case["predictors"]["onnx"].predict(_images()):
        back = type(r).from_dict(_json(r.to_dict(include_maps=True)))
        _assert_same(back, r, 0.0, type(r).__name__)
        assert back.to_dict() == _json(r.to_dict())


def test_onnx_signature_is_the_same_for_every_task(case):
    import onnxruntime as ort

    session = ort.InferenceSession(str(case["files"]["onnx"]), providers=["CPUExecutionProvider"])
    (inp,) = session.get_inputs()
    assert inp.name == "images" and inp.type == "tensor(uint8)"
    assert all(isinstance(d, str) for d in inp.shape[:3]) and inp.shape[3] == 3  # batch, H, W dynamic
    assert [o.name for o in session.get_outputs()] == list(case["pipe"].output_names)
    meta = json.loads(session.get_modelmeta().custom_metadata_map["fovea.recipe"])
    assert meta["task"] == case["task"] and meta["format"] == FORMAT_VERSION


# ----------------------------------------------------------------------------------- errors

def test_bad_paths_wrong_task_and_bad_images_give_clear_errors(case, tmp_path):
    preds, root = case["predictors"], case["root"]
    with pytest.raises(CheckpointError, match="does not exist"):
        fovea.load_predictor(tmp_path / "nope.onnx")
    with pytest.raises(CheckpointError, match="is not a fovea checkpoint"):
        fovea.load_predictor(tmp_path)
    (tmp_path / "m.bin").write_bytes(b"x")
    with pytest.raises(CheckpointError, match="unknown model file type"):
        fovea.load_predictor(tmp_path / "m.bin")
    other = next(t for name, t in registered_tasks().items() if name != case["task"])
    for path in (root / "ckpt", case["files"]["onnx"]):
        with pytest.raises(CheckpointError, match=f"holds a '{case['task']}' model, not a '{other.name}' one"):
            other.predictor.load(path)
    with pytest.raises(DataError, match="frame 1.*uint8"):
        preds["in-process"].predict([_images()[0], np.zeros((8, 8, 3), np.float32)])
    with pytest.raises(DataError, match="2 paths for 1 frames"):
        preds["in-process"].predict(_images()[:1], paths=["a.png", "b.png"])
    with pytest.raises(ExportError, match="cannot be exported"):
        preds["onnx"].export(tmp_path)


def test_an_onnx_file_without_a_recipe_is_refused(case, tmp_path):
    import onnx

    model = onnx.load(str(case["files"]["onnx"]))
    del model.metadata_props[:]
    onnx.save(model, str(tmp_path / "stripped.onnx"))
    with pytest.raises(ExportError, match="carries no fovea recipe"):
        fovea.load_predictor(tmp_path / "stripped.onnx")
