"""Oil-spill assessment against the sea generator's exact ground truth."""

import json

import numpy as np
import pytest

from fovea.apps.oilspill.assess import (
    CLASS_NAMES, assess_class_maps, compare_surveys, grade_survey, load_rules, pixel_area_map,
)
from fovea.apps.oilspill.report import comparison_markdown, write_report
from fovea.cli.main import main
from fovea.errors import CalibrationError, ConfigError
from fovea.geometry.camera import CameraModel
from fovea.synth.sea import DroneCamera, render_survey, save_survey


@pytest.fixture(scope="module")
def survey():
    cam = DroneCamera.default()
    return cam, CameraModel.from_dict(cam.to_dict()), render_survey(4, seed=0, altitude_m=120.0, camera=cam)


def _truth_area(views):
    return {k: sum(v.truth["area_m2"][k] for v in views) for k in CLASS_NAMES}


def test_areas_within_5_percent_and_volume_range_contains_truth(survey):
    cam, model, views = survey
    a = assess_class_maps([v.mask for v in views], model, 120.0)
    truth = _truth_area(views)
    for k in CLASS_NAMES:
        assert truth[k] > 1000  # every class is really present
        assert a.area_m2[k] == pytest.approx(truth[k], rel=0.05)
    true_volume = sum(v.truth["total_volume_m3"] for v in views)
    assert a.volume_range_m3[0] <= true_volume <= a.volume_range_m3[1]
    lo, hi = load_rules().classes["rainbow"]["thickness_um"]
    assert a.volume_m3["rainbow"] == pytest.approx([a.area_m2["rainbow"] * lo * 1e-6, a.area_m2["rainbow"] * hi * 1e-6])
    assert a.gsd_m == pytest.approx(120.0 / cam.K[0, 0])


def test_pixel_area_map_closed_form_and_footprint(survey):
    cam, model, views = survey
    flat = CameraModel(cam.K, np.zeros(5), cam.image_size)
    pa = pixel_area_map(flat, 50.0)
    assert np.allclose(pa, 50.0**2 / (cam.K[0, 0] * cam.K[1, 1]), rtol=1e-9)  # GSD^2 without distortion
    # with distortion: the sum of pixel footprints equals the true footprint on the sea
    assert pixel_area_map(model, 120.0).sum() == pytest.approx(views[0].truth["footprint_m2"], rel=0.005)


def test_grades_follow_the_yaml_rules():
    rules = load_rules()
    assert grade_survey({"sheen": 100, "rainbow": 10, "true_colour": 0}, 0.01, rules)[0] == 1
    assert grade_survey({"sheen": 3000, "rainbow": 10, "true_colour": 0}, 0.5, rules)[:2] == (2, "moderate")
    g, name, resp = grade_survey({"sheen": 3000, "rainbow": 10, "true_colour": 100}, 60, rules)
    assert (g, name) == (4, "major") and "burning" in resp and "dispersant" in resp
    assert "skimmers" in grade_survey({"sheen": 3000}, 0.5, rules)[2]


def test_bad_inputs_give_clear_errors(survey, tmp_path):
    cam, model, views = survey
    for bad in (None, 0, -5, "high"):
        with pytest.raises(ConfigError, match="--altitude-m"):
            assess_class_maps([views[0].mask], model, bad)
    other = CameraModel(cam.K, cam.dist, (640, 480))
    with pytest.raises(CalibrationError, match="320x240 px but the calibration"):
        assess_class_maps([views[0].mask], other, 120.0, names=["a.png"])
    (tmp_path / "r.yaml").write_text("classes: {sheen: {oil: true, thickness_um: [1]}}\nseverity: []\n")
    with pytest.raises(ConfigError, match="thickness_um"):
        load_rules(tmp_path / "r.yaml")


def test_before_after_comparison_and_report(survey, tmp_path):
    cam, model, views = survey
    later = render_survey(4, seed=7, altitude_m=120.0, camera=cam, spread=1.4, spill_seed=0)
    b = assess_class_maps([v.mask for v in views], model, 120.0)
    a = assess_class_maps([v.mask for v in later], model, 120.0)
    cmp = compare_surveys(b, a)
    tb, ta = _truth_area(views), _truth_area(later)
    true_change = 100 * (sum(ta[k] for k in CLASS_NAMES[1:]) / sum(tb[k] for k in CLASS_NAMES[1:]) - 1)
    assert cmp["oiled_area_m2"]["change_pct"] == pytest.approx(true_change, abs=2.0)
    assert "Survey comparison" in comparison_markdown(cmp)
    rep = write_report(b, [v.image for v in views], [v.mask for v in views], tmp_path / "rep")
    text = rep.read_text()
    assert "Recommended response" in text and "true_colour" in text
    assert len(list((tmp_path / "rep" / "overlays").glob("*.png"))) == 4
    assert json.loads((tmp_path / "rep" / "assessment.json").read_text())["grade"] == b.grade


def test_cli_assess_and_compare(survey, tmp_path, capsys):
    cam, model, views = survey
    d = save_survey(views, cam, tmp_path / "s")
    imgs = str(d / "images")
    assert main(["oilspill", "assess", imgs, "--altitude-m", "120", "--calib", str(d / "cam.json"),
                 "--masks", str(d / "masks"), "--out", str(tmp_path / "r1")]) == 0
    assert (tmp_path / "r1" / "report.md").is_file()
    assert main(["oilspill", "compare", str(tmp_path / "r1"), str(tmp_path / "r1")]) == 0
    assert main(["oilspill", "assess", imgs, "--calib", str(d / "cam.json"), "--masks", str(d / "masks")]) == 2
    assert "--altitude-m" in capsys.readouterr().err
    wrong = CameraModel(cam.K, cam.dist, (640, 480))
    wrong.save(tmp_path / "wrong.json")
    assert main(["oilspill", "assess", imgs, "--altitude-m", "120", "--calib", str(tmp_path / "wrong.json"),
                 "--masks", str(d / "masks")]) == 2
    assert "recalibrate" in capsys.readouterr().err


def test_training_path_runs_and_gives_areas(tmp_path):
    """Fast version of the slow test: 1 epoch on tiny images through the engine; checks the pipeline
    (train -> checkpoint -> predictor -> class maps -> areas), not accuracy."""
    from fovea.apps.oilspill.assess import segment_images
    from fovea.apps.oilspill.train import train_oilspill_segmenter
    from fovea.segment.predictor import SegmentationPredictor

    cam = DroneCamera.default(64, 48)
    res = train_oilspill_segmenter(tmp_path, n_train_surveys=1, n_val_surveys=1, epochs=1, camera=cam,
                                   images_per_survey=2, weights="random", batch_size=2)
    assert res.checkpoint == tmp_path / "model" and set(res.metrics) >= {"val_miou", "val_loss"}
    pred = SegmentationPredictor.load(res.checkpoint)
    assert pred.class_names == CLASS_NAMES
    views = render_survey(2, seed=5, altitude_m=100.0, camera=cam)
    maps = segment_images([v.image for v in views], pred)
    assert all(m.shape == (48, 64) and m.min() >= 0 and m.max() < 4 for m in maps)
    model = CameraModel.from_dict(cam.to_dict())
    a = assess_class_maps(maps, model, 100.0)
    # whatever the (untrained) model says, the class areas partition the true footprint of the images
    assert sum(a.area_m2.values()) == pytest.approx(sum(v.truth["footprint_m2"] for v in views), rel=0.01)
    reloaded = SegmentationPredictor.load(tmp_path / "model")
    assert all(np.array_equal(m, r) for m, r in zip(maps, segment_images([v.image for v in views], reloaded)))


@pytest.mark.slow
def test_trained_model_areas_within_5_percent(tmp_path):
    """Trains the engine segmenter on synthetic surveys (minutes on CPU), then assesses a new survey.

    Training surveys have seeds >= 2**20 (drawn from seeds 0 and 1000); the evaluation survey is seed
    123 and was not used to choose the recipe (that was done on surveys 901 and 902)."""
    from fovea.apps.oilspill.assess import segment_images
    from fovea.apps.oilspill.train import train_oilspill_segmenter

    from fovea.segment.predictor import SegmentationPredictor

    pred = SegmentationPredictor.load(train_oilspill_segmenter(tmp_path, seed=0).checkpoint)
    cam = DroneCamera.default()
    model = CameraModel.from_dict(cam.to_dict())
    views = render_survey(4, seed=123, altitude_m=120.0, camera=cam)
    maps = segment_images([v.image for v in views], pred)
    a = assess_class_maps(maps, model, 120.0)
    truth = _truth_area(views)
    errors = {k: 100 * (a.area_m2[k] / truth[k] - 1) for k in CLASS_NAMES}
    print("area error %:", {k: round(v, 2) for k, v in errors.items()})
    for k in CLASS_NAMES:
        assert a.area_m2[k] == pytest.approx(truth[k], rel=0.05), (k, errors)
    true_volume = sum(v.truth["total_volume_m3"] for v in views)
    assert a.volume_range_m3[0] <= true_volume <= a.volume_range_m3[1]
