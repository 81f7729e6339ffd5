"""Auto-labelling with a rule teacher of known answers, the review order, the CSV that classify reads,
ensembles, the distillation loss against its closed form, copy-paste synthesis."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch

from fovea.classify.data import load_samples
from fovea.classify.predictor import ClassifierPredictor
from fovea.errors import ConfigError, DataError
from fovea.io import write_image
from fovea.label.autolabel import EnsembleTeacher, label_folder, read_soft_labels, uncertainty_margin
from fovea.label.copy_paste import PasteObject, objects_from_mask, paste_objects
from fovea.label.distill import distillation_loss


def _brightness_teacher(names=("dark", "bright")):
    """p(bright) = mean intensity / 255: a teacher whose answer we know for every image."""
    def probs(images):
        p = np.asarray(images, np.float64).mean(axis=(1, 2, 3)) / 255.0
        return np.stack([1 - p, p], 1)
    return ClassifierPredictor.from_function(probs, list(names), source="rule")


@pytest.fixture()
def folder(tmp_path):
    d = tmp_path / "unlabelled"
    d.mkdir()
    levels = [10, 240, 120, 135, 60, 200]
    for i, v in enumerate(levels):
        write_image(d / f"img_{i}.png", np.full((16, 16, 3), v, np.uint8))
    return d, levels


def test_label_folder_writes_labels_classify_reads_and_review_sorted_by_uncertainty(folder, tmp_path):
    d, levels = folder
    run = label_folder(_brightness_teacher(), d, tmp_path / "out")
    p_bright = np.array(levels) / 255.0
    # labels as the rule says, read back through classify's own CSV reader
    samples, names = load_samples(run.csv, ["dark", "bright"])
    got = {s.path.name: names[s.label] for s in samples}
    assert got == {f"img_{i}.png": ("bright" if p > 0.5 else "dark") for i, p in enumerate(p_bright)}
    # review page: least certain (|2p - 1| smallest) first
    order = re.findall(r"img_(\d)\.png", run.html.read_text())
    assert [int(i) for i in order] == list(np.argsort(np.abs(2 * p_bright - 1), kind="stable"))
    paths, soft, cls, labels = read_soft_labels(run.csv)
    np.testing.assert_allclose(soft[:, 1], p_bright, atol=1e-6)
    assert cls == ["dark", "bright"] and len(paths) == 6


def test_ensemble_averages_and_refuses_other_classes(folder, tmp_path):
    d, levels = folder
    const = ClassifierPredictor.from_function(lambda im: np.tile([0.9, 0.1], (len(im), 1)), ["dark", "bright"])
    run = label_folder(EnsembleTeacher([_brightness_teacher(), const]), d, tmp_path / "ens")
    np.testing.assert_allclose(run.probs[:, 1], (np.array(levels) / 255.0 + 0.1) / 2, atol=1e-6)
    with pytest.raises(ConfigError, match="disagree"):
        EnsembleTeacher([_brightness_teacher(), _brightness_teacher(("a", "b"))])


def test_uncertainty_margin_and_missing_images_in_labels_csv(folder, tmp_path):
    np.testing.assert_allclose(uncertainty_margin(np.array([[0.5, 0.3, 0.2], [0.1, 0.9, 0.0]])), [0.2, 0.8])
    d, _ = folder
    run = label_folder(_brightness_teacher(), d, tmp_path / "out")
    (d / "img_3.png").unlink()
    with pytest.raises(DataError, match="img_3.png"):
        read_soft_labels(run.csv)


def test_distillation_loss_equals_closed_form():
    torch.manual_seed(0)
    s = torch.randn(4, 3)
    p = torch.softmax(torch.randn(4, 3), 1)
    y = torch.tensor([0, 2, 1, 1])
    t, a = 3.0, 0.6
    pt = p.log().div(t).softmax(1)
    qt = s.div(t).softmax(1)
    kl = (pt * (pt.log() - qt.log())).sum(1).mean()
    ce = -s.log_softmax(1)[torch.arange(4), y].mean()
    torch.testing.assert_close(distillation_loss(s, p, y, t, a), a * t * t * kl + (1 - a) * ce)
    # a student that reproduces the teacher has no soft loss
    assert float(distillation_loss(p.log(), p, y, t, 1.0)) == pytest.approx(0.0, abs=1e-6)


def test_copy_paste_puts_object_pixels_and_labels_where_it_says():
    obj_img = np.zeros((6, 6, 3), np.uint8)
    obj_img[1:5, 1:5] = (200, 10, 10)
    obj_lab = np.zeros((6, 6), np.int64)
    obj_lab[1:5, 1:5] = 3
    objs = objects_from_mask(obj_img, obj_lab, min_pixels=1)
    assert len(objs) == 1 and objs[0].labels.shape == (4, 4)
    bg = np.full((20, 20, 3), 50, np.uint8)
    img, lab = paste_objects(bg, objs, np.random.default_rng(0), scale=(1.0, 1.0), hflip=False)
    assert (lab == 3).sum() == 16 and set(np.unique(lab)) == {0, 3}
    assert (img[lab == 3] == (200, 10, 10)).all() and (img[lab == 0] == 50).all()
    with pytest.raises(ConfigError, match="non-empty"):
        PasteObject(obj_img, np.zeros((6, 6), np.int64))
    assert math.isclose(bg.mean(), 50)  # background untouched
