"""Captions agree with the generators' ground truth; the zero-shot prompt ensemble follows open_clip's
recipe; training on the engine runs and saves; bad input (captions CSV with missing images, empty
prompts, mismatched tower checkpoints) gives clear errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fovea.errors import CheckpointError, ConfigError, DataError
from fovea.io import write_image
from fovea.synth import apples
from fovea.synth.captions import apple_caption_sample, damage_position, damage_size_word, make_caption_samples
from fovea.vl.zeroshot import build_zero_shot_classifier, zero_shot_predictor


def test_damage_words_closed_form():
    assert damage_position(0.1, -0.1) == "in the centre"
    assert damage_position(-0.6, 0.2) == "on the left side"
    assert damage_position(0.1, -0.5) == "at the top"
    assert damage_position(0.2, 0.7) == "at the bottom"
    assert [damage_size_word(f) for f in (0.01, 0.08, 0.3)] == ["small", "medium", "large"]


def test_apple_captions_name_the_damage_the_generator_drew():
    for i in range(12):
        rng_a, rng_b = np.random.default_rng([5, i]), np.random.default_rng([5, i])
        s = apple_caption_sample(rng_a, 64, damaged=bool(i % 2))
        _, _, meta = apples.render_apple(rng_b, 64, damaged=bool(i % 2))  # same draw: the generator's own record
        assert s.truth["damaged"] == meta["damaged"]
        if meta["damaged"]:
            assert set(s.truth["kinds"]) <= set(meta["damage_types"])
            noun = {"bruise": "bruise", "spot": "spots", "cut": "cut"}[s.truth["main_kind"]]
            assert all("damaged" in c or noun in c or "bruised" in c or "spotted" in c for c in s.captions)
        else:
            assert not any(w in c for c in s.captions for w in ("bruise", "spot", "cut"))
        assert len(s.captions) >= 3 and len(set(s.captions)) == len(s.captions)


class _FakeTextModel:
    """encode_text: a fixed random vector per prompt (unit or not); encode_image: given embeddings."""

    def __init__(self, dim=5):
        self.dim, self.table = dim, {}

    def eval(self):
        return self

    def encode_text(self, prompts, normalize=True):
        rows = []
        for p in prompts:
            if p not in self.table:
                self.table[p] = torch.randn(self.dim, generator=torch.Generator().manual_seed(len(self.table)))
            rows.append(F.normalize(self.table[p], dim=0) if normalize else self.table[p])
        return torch.stack(rows)

    def logit(self):
        return torch.tensor(100.0)

    def encode_image(self, images):
        return F.normalize(images.float().reshape(len(images), -1)[:, : self.dim], dim=-1)


def test_zero_shot_classifier_is_mean_of_normalised_template_embeddings():
    m = _FakeTextModel()
    templates = ("a photo of a {}.", "{} on a belt")
    clf = build_zero_shot_classifier(m, ["good apple", "bruised apple"], templates)
    for c, name in enumerate(["good apple", "bruised apple"]):
        mean = sum(F.normalize(m.table[t.format(name)], dim=0) for t in templates) / 2
        torch.testing.assert_close(clf[:, c], mean / mean.norm())
    torch.testing.assert_close(clf.norm(dim=0), torch.ones(2))


def test_zero_shot_predictor_answers_as_the_nearest_class_embedding():
    m = _FakeTextModel(dim=3)
    pred = zero_shot_predictor(m, ["a", "b"], templates=("{}",))
    clf = build_zero_shot_classifier(m, ["a", "b"], ("{}",))
    img = np.zeros((1, 1, 1, 3), np.uint8)
    img[0, 0, 0] = (clf[:, 1] * 100).clamp(min=0).round().to(torch.uint8).numpy()  # an image pointing at "b"-ish
    probs = pred.predict_probs([img[0]])
    expected = torch.softmax(100 * F.normalize(torch.from_numpy(img[0].reshape(-1)[:3]).float(), dim=0) @ clf, 0)
    np.testing.assert_allclose(probs[0], expected.numpy(), atol=1e-5)


def test_empty_or_repeated_class_prompts_are_refused():
    m = _FakeTextModel()
    with pytest.raises(ConfigError, match="empty"):
        build_zero_shot_classifier(m, ["good apple", " "])
    with pytest.raises(ConfigError, match=">= 2"):
        build_zero_shot_classifier(m, ["good apple"])
    with pytest.raises(ConfigError, match="repeat"):
        build_zero_shot_classifier(m, ["x", "x"])


def test_captions_csv_with_a_missing_image_names_the_row(tmp_path):
    from fovea.vl.train import read_captions_csv

    write_image(tmp_path / "a.png", np.zeros((8, 8, 3), np.uint8))
    (tmp_path / "caps.csv").write_text("path,caption\na.png,a black square\na.png,dark\nb.png,missing one\n")
    with pytest.raises(DataError, match=r"line 4: image .*b\.png does not exist"):
        read_captions_csv(tmp_path / "caps.csv")
    (tmp_path / "ok.csv").write_text("a.png,a black square\na.png,dark\n")
    (item,) = read_captions_csv(tmp_path / "ok.csv")
    assert item.captions == ["a black square", "dark"]


TINY = dict(image_backbone="efficientnet_lite0", image_weights="random", image_size=32, text_tower="clip",
            clip_text=dict(width=32, heads=2, layers=1), embed_dim=16)


def test_a_checkpoint_whose_weights_do_not_fit_its_towers_is_refused(tmp_path):
    pytest.importorskip("open_clip")  # BPE tokenizer of the CLIP text tower (dev dependency)
    from fovea.models.vl.two_tower import TwoTowerConfig, build_two_tower, load_two_tower, save_two_tower

    save_two_tower(build_two_tower(TwoTowerConfig(**TINY)), tmp_path / "vl")
    cfg = json.loads((tmp_path / "vl" / "two_tower.json").read_text())
    cfg["config"]["embed_dim"] = 8  # e.g. the weights of another run beside this config
    (tmp_path / "vl" / "two_tower.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="does not fit the towers"):
        load_two_tower(tmp_path / "vl")
    with pytest.raises(CheckpointError, match="not a two-tower checkpoint"):
        load_two_tower(tmp_path)


@pytest.mark.slow
def test_tiny_training_on_the_engine_lowers_the_loss_and_reloads(tmp_path):
    pytest.importorskip("open_clip")
    from fovea.engine.train import TrainConfig
    from fovea.models.vl.two_tower import TwoTowerConfig, load_two_tower
    from fovea.vl.train import train_two_tower

    torch.manual_seed(0)
    samples = make_caption_samples({"textures": 16}, size=32, seed=3)
    model, summary = train_two_tower(samples, tmp_path / "vl", config=TwoTowerConfig(**TINY),
                                     train=TrainConfig(lr=1e-2, batch_size=16, max_epochs=15))
    losses = [row["train_loss"] for row in summary["history"]]
    assert losses[-1] < 0.9 * losses[0]  # 15 optimizer steps
    x = torch.from_numpy(np.stack([s.image for s in samples[:3]]))
    torch.testing.assert_close(load_two_tower(tmp_path / "vl").encode_image(x), model.encode_image(x))


def test_coop_context_initialised_from_words_reproduces_the_written_prompt_and_learns():
    pytest.importorskip("open_clip")
    from fovea.models.vl.two_tower import TwoTowerConfig, build_two_tower
    from fovea.vl.fewshot import CoOpPrompts, fit_coop, fit_linear_probe

    torch.manual_seed(0)
    model = build_two_tower(TwoTowerConfig(**TINY)).eval()
    names = ["good apple", "bruised apple", "apple with a cut"]
    prompts = CoOpPrompts(model, names, init="a photo of a")
    with torch.no_grad():
        torch.testing.assert_close(prompts(), model.encode_text([f"a photo of a {n}" for n in names]),
                                   atol=1e-5, rtol=1e-4)
    feats = torch.randn(12, model.visual.trunk.num_features)
    labels = [i % 3 for i in range(12)]
    coop = fit_coop(model, names, feats, labels, epochs=200, init="a photo of a")  # the paper's SGD lr 0.002
    with torch.no_grad():
        img = model.project_image(feats)
        before = (img @ prompts().T).argmax(1).numpy()
        after = (img @ coop().T).argmax(1).numpy()
    assert (after == labels).mean() > max((before == labels).mean(), 0.5)
    probe = fit_linear_probe(model, feats, labels, 3)
    with torch.no_grad():
        assert (probe(img).argmax(1).numpy() == labels).all()  # 12 points in 16-d: separable


def test_zero_shot_graph_is_the_deployed_classifier_as_one_module():
    """ZeroShotGraph (what benchmarks export to ONNX) = softmax(t * unit image embedding @ classifier), written out."""
    pytest.importorskip("open_clip")
    from fovea.models.vl.two_tower import TwoTowerConfig, build_two_tower
    from fovea.vl.zeroshot import ZeroShotGraph

    torch.manual_seed(0)
    model = build_two_tower(TwoTowerConfig(**TINY)).eval()
    clf = build_zero_shot_classifier(model, ["good apple", "bruised apple"], ("a {}",))
    images = torch.randint(0, 256, (2, 40, 48, 3), dtype=torch.uint8)
    with torch.no_grad():
        z = model.visual.head(model.visual.trunk(model.preprocess(images)))
        expected = torch.softmax(model.logit() * (z / z.norm(dim=-1, keepdim=True)) @ clf, dim=-1)
        torch.testing.assert_close(ZeroShotGraph(model, clf)(images), expected)
