"""Report: self-contained HTML with the metric values, decodable embedded PNGs, errors first; overlays."""

import base64
import re

import cv2
import numpy as np
import pytest

from fovea.anomaly.evaluate import evaluate_anomaly
from fovea.anomaly.postprocess import Thresholds, make_anomaly_result
from fovea.anomaly.report import PANEL_HEIGHT, overlay_png, select_panels, write_anomaly_report

T = Thresholds(image_threshold=2.0, pixel_threshold=1.5, score_min=0.0, score_max=4.0, map_min=-1.0, map_max=3.0,
               image_rule="best F1 on validation", pixel_rule="matched")


def _case(n=10, seed=0):
    rng = np.random.default_rng(seed)
    images, labels, masks, results = [], [], [], []
    for i in range(n):
        img = rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)
        g = np.zeros((48, 64), bool)
        lab = i % 2
        if lab:
            g[24:34, 20:34] = True
        raw = rng.normal(0, 0.3, g.shape).astype(np.float32) + 2.5 * g
        score = float(raw.max())
        if i == 2:
            score = 3.5      # a false positive
        if i == 3:
            score = 1.0      # a false negative
        results.append(make_anomaly_result(score, raw, T, f"img_{i}.png"))
        images.append(img)
        labels.append(lab)
        masks.append(g)
    return images, labels, masks, results


def test_report_is_self_contained_and_shows_metrics(tmp_path):
    images, labels, masks, results = _case()
    metrics = evaluate_anomaly(results, labels, masks)
    # images may be paths too
    paths = []
    for i, img in enumerate(images):
        p = tmp_path / f"img_{i}.png"
        cv2.imwrite(str(p), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
        paths.append(p if i % 2 else img)
    path = write_anomaly_report(tmp_path / "out", results, labels, masks, paths, metrics, T, title="unit <test>",
                                max_panels=4, notes=["1 file skipped: bad.png"])
    assert path == tmp_path / "out" / "report.html"
    page = path.read_text()
    # offline: no external URL, script, stylesheet link or CSS url()
    text = re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]+", "DATA", page)
    assert not re.search(r"https?:|//[a-z]|<script|<link|<iframe|@import|url\(", text, re.I)
    for m in re.finditer(r"(?:src|href)\s*=\s*['\"]([^'\"]*)", page):
        assert m.group(1).startswith("data:image/png;base64,")
    # metric values and notes appear
    for key in ("image_auroc", "pixel_auroc", "aupro", "image_f1", "pixel_f1"):
        assert f"<th>{key}</th><td class=\"num\">{metrics[key]:.4f}</td>" in page
    assert "1 file skipped: bad.png" in page and "unit &lt;test&gt;" in page
    assert "Showing 4 of 10 images: 2 of the 2 misclassified first" in page
    assert page.count("class=panel>") == 4
    tags = re.findall(r"class='tag (\w+)'", page)
    assert tags[:2] == ["fp", "fn"]
    # every embedded PNG decodes; panels have the panel height and three images side by side
    pngs = [cv2.imdecode(np.frombuffer(base64.b64decode(u), np.uint8), cv2.IMREAD_COLOR)
            for u in re.findall(r"data:image/png;base64,([A-Za-z0-9+/=]+)", page)]
    assert len(pngs) == 2 + 4 and all(p is not None for p in pngs)
    assert pngs[-1].shape[0] == PANEL_HEIGHT and pngs[-1].shape[1] > 3 * PANEL_HEIGHT


def test_report_without_masks_and_one_class(tmp_path):
    images, labels, _, results = _case(4)
    metrics = evaluate_anomaly(results[::2], [0, 0], None)
    page = write_anomaly_report(tmp_path, results[::2], [0, 0], None, images[::2], metrics, T).read_text()
    assert "pixel metrics skipped: no ground-truth masks." in page
    assert "ROC curve not drawn" in page


def test_select_panels_order():
    _, labels, _, results = _case(10)
    idx = select_panels(results, labels, max_panels=10)
    assert idx[:2] == [2, 3] and sorted(idx) == list(range(10))


def test_overlay_png_draws_prediction_gt_and_boxes_without_mutating():
    images, labels, masks, results = _case(2)
    img, res, gt = images[1], results[1], masks[1]
    before = img.copy()
    out = overlay_png(img, res, gt)
    assert out.shape == img.shape and out.dtype == np.uint8
    np.testing.assert_array_equal(img, before)
    assert len(res.boxes) == 1
    magenta = (out[..., 0] == 255) & (out[..., 1] == 0) & (out[..., 2] == 255)
    x1, y1, x2, y2 = res.boxes[0].astype(int)
    assert magenta[y1:y2, x1].sum() >= (y2 - y1) - 1          # left edge of the box
    # GT contour (white) where prediction differs: use a shifted GT
    gt2 = np.zeros_like(gt)
    gt2[30:40, 40:50] = True
    out2 = overlay_png(img, res, gt2)
    white = (out2 == 255).all(-1)
    assert white[30, 40:50].all() and not white[32:38, 42:48].any()
    with pytest.raises(Exception, match="uint8"):
        overlay_png(img.astype(np.float32), res)
