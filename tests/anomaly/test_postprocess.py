"""Post-processing: blur vs scipy, threshold rules, normalisation parity, boxes, export paths."""

import numpy as np
import pytest
import torch
from scipy import ndimage
from sklearn.metrics import f1_score as sk_f1

from fovea.anomaly import postprocess as P
from fovea.errors import DataError


@pytest.mark.parametrize("path", ["eager", "export"])
@pytest.mark.parametrize("sigma", [4.0, 1.5])
def test_gaussian_blur_matches_scipy_mirror(sigma, path, monkeypatch):
    """Both implementations: dense blur matrices (eager) and the 1-D convolutions (traced/exported)."""
    if path == "export":
        monkeypatch.setattr(P, "plain_eager", lambda x: False)
    rng = np.random.default_rng(0)
    x = rng.random((2, 1, 40, 36)).astype(np.float32)
    out = P.gaussian_blur_map(torch.from_numpy(x), sigma).numpy()
    # torch "reflect" (edge not repeated) == scipy "mirror"; scipy radius = int(4 * sigma + 0.5)
    ref = np.stack([ndimage.gaussian_filter(x[i, 0].astype(np.float64), sigma, mode="mirror", truncate=4.0)
                    for i in range(2)])[:, None]
    assert P.gaussian_kernel_size(sigma) == 2 * int(4 * sigma + 0.5) + 1
    np.testing.assert_allclose(out, ref, atol=1e-5)
    assert P.gaussian_kernel_size(4) == 33


def test_blur_on_tiny_map_caps_radius_and_keeps_mass():
    x = torch.ones(1, 1, 5, 7)
    np.testing.assert_allclose(P.gaussian_blur_map(x, 4.0).numpy(), 1.0, atol=1e-6)


def test_thresholds_best_f1_with_both_classes():
    rng = np.random.default_rng(1)
    y = np.r_[np.zeros(30), np.ones(10)].astype(int)
    s = rng.normal(size=40) + 2.5 * y
    t = P.fit_thresholds(s, y)
    best = max(sk_f1(y, s >= v) for v in s)  # brute force over observed scores
    assert sk_f1(y, s > t.image_threshold) == pytest.approx(best)
    assert t.pixel_threshold == t.image_threshold and "matched" in t.pixel_rule
    assert (t.score_min, t.score_max) == (s.min(), s.max())
    assert P.Thresholds.from_dict(t.to_dict()) == t


def test_thresholds_normal_only_validation_flags_no_normal_image():
    rng = np.random.default_rng(2)
    val = rng.gamma(4.0, 1.0, size=25)          # normal-only validation scores
    t = P.fit_thresholds(val, np.zeros(25))
    med = np.median(val)
    assert t.image_threshold == pytest.approx(val.max() + 0.1 * (val.max() - med))
    assert t.image_threshold > val.max()
    assert "normal-only" in t.image_rule
    # every validation normal, and a new normal scoring like the worst validation normal, is not flagged
    for raw in np.r_[val, val.max()]:
        r = P.make_anomaly_result(raw, np.zeros((4, 4), np.float32), t)
        assert not r.label and r.score < 0.5
    # a clear defect is flagged
    assert P.make_anomaly_result(val.max() * 2, np.zeros((4, 4), np.float32), t).label
    # documented quantile option
    t95 = P.fit_thresholds(val, np.zeros(25), normal_only_quantile=0.95, normal_only_margin=0.0)
    assert t95.image_threshold == pytest.approx(np.quantile(val, 0.95))


def test_thresholds_pixel_f1_when_masks_exist_and_bad_inputs():
    rng = np.random.default_rng(3)
    masks = np.zeros((6, 12, 12), bool)
    masks[3:, 4:8, 4:8] = True
    maps = (rng.normal(size=masks.shape) + 2 * masks).astype(np.float32)
    scores = maps.reshape(6, -1).max(1)
    t = P.fit_thresholds(scores, [0, 0, 0, 1, 1, 1], maps, masks)
    assert "pixels" in t.pixel_rule
    assert sk_f1(masks.ravel(), maps.ravel() > t.pixel_threshold) == pytest.approx(
        max(sk_f1(masks.ravel(), maps.ravel() >= v) for v in np.unique(maps)))
    assert (t.map_min, t.map_max) == (float(maps.min()), float(maps.max()))
    with pytest.raises(DataError, match="all 2 validation images are anomalous"):
        P.fit_thresholds([1.0, 2.0], [1, 1])
    with pytest.raises(DataError, match="differ in size"):
        P.fit_thresholds(scores, [0, 0, 0, 1, 1, 1], maps, masks[:, :6])


def test_normalize_numpy_and_torch_agree_and_threshold_is_half():
    thr, lo, hi = 3.7, 1.2, 9.9
    x = np.linspace(-5, 20, 1001, dtype=np.float32)
    a = P.normalize(x, thr, lo, hi)
    b = P.normalize_torch(torch.from_numpy(x), torch.tensor(thr), torch.tensor(lo), torch.tensor(hi)).numpy()
    np.testing.assert_array_equal(a, b)
    ref = np.clip((x.astype(np.float64) - thr) / (hi - lo) + 0.5, 0, 1)
    np.testing.assert_allclose(a, ref, atol=1e-6)
    assert P.normalize(thr, thr, lo, hi) == 0.5
    assert P.normalize_torch(torch.tensor([thr]), torch.tensor(thr), torch.tensor(lo), torch.tensor(hi)).item() == 0.5
    assert P.normalize(np.float32(thr), thr, lo, hi) == 0.5
    with pytest.raises(DataError, match="vmax > vmin"):
        P.normalize(1.0, 0.0, 2.0, 2.0)


def test_boxes_from_hand_drawn_mask_two_blobs():
    mask = np.zeros((20, 30), bool)
    mask[2:5, 3:9] = True          # blob A: rows 2-4, cols 3-8 -> [3, 2, 9, 5]
    mask[10:18, 20:22] = True      # blob B: rows 10-17, cols 20-21 -> [20, 10, 22, 18]
    mask[10, 22] = True            # diagonal-free extension of B (shares an edge)
    mask[0, 29] = True             # single pixel C
    amap = np.zeros(mask.shape, np.float32)
    amap[3, 4] = 0.9               # A's max
    amap[15, 21] = 0.7             # B's max
    amap[0, 29] = 0.6
    amap[19, 0] = 5.0              # outside every blob: must not leak into a score
    res = P.boxes_from_mask(mask, amap)
    boxes, scores = res
    np.testing.assert_array_equal(boxes, [[3, 2, 9, 5], [20, 10, 23, 18], [29, 0, 30, 1]])
    np.testing.assert_allclose(scores, [0.9, 0.7, 0.6])
    assert boxes.dtype == np.float32 and res.removed == 0
    filtered = P.boxes_from_mask(mask, amap, min_area=2)
    assert len(filtered.boxes) == 2 and filtered.removed == 1
    # 8- vs 4-connectivity on a diagonal pair
    diag = np.zeros((4, 4), bool)
    diag[0, 0] = diag[1, 1] = True
    assert len(P.boxes_from_mask(diag, diag.astype(np.float32)).boxes) == 1
    assert len(P.boxes_from_mask(diag, diag.astype(np.float32), connectivity=4).boxes) == 2
    assert P.boxes_from_mask(np.zeros((3, 3), bool), np.zeros((3, 3))).boxes.shape == (0, 4)


def test_make_anomaly_result_end_to_end():
    t = P.Thresholds(image_threshold=2.0, pixel_threshold=1.0, score_min=0.0, score_max=4.0, map_min=0.0,
                     map_max=2.0)
    raw_map = np.zeros((1, 8, 10), np.float32)
    raw_map[0, 2:4, 5:8] = 1.6
    r = P.make_anomaly_result(3.0, raw_map, t, image_path="a.png")
    assert r.score == pytest.approx(0.75) and r.label and r.raw_score == 3.0
    assert r.anomaly_map.shape == (8, 10) and r.anomaly_map.dtype == np.float32
    assert r.mask.sum() == 6
    np.testing.assert_array_equal(r.boxes, [[5, 2, 8, 4]])
    np.testing.assert_allclose(r.box_scores, [0.8])
    r2 = P.anomaly_result_from_normalized(r.score, r.anomaly_map, r.raw_score, "a.png")
    assert r2.to_dict() == r.to_dict()


class _Post(torch.nn.Module):
    """Blur + normalisation as an exported graph would hold them."""

    def __init__(self):
        super().__init__()
        self.register_buffer("t", torch.tensor([0.3, 0.1, 0.9]))

    def forward(self, maps: torch.Tensor) -> torch.Tensor:
        return P.normalize_torch(P.gaussian_blur_map(maps, 2.0), self.t[0], self.t[1], self.t[2])


def test_blur_and_normalize_export_torchscript_and_onnx(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    m = _Post().eval()
    x = torch.rand(2, 1, 24, 20)
    ref = m(x)
    scripted = torch.jit.script(m)
    torch.testing.assert_close(scripted(x), ref)
    torch.testing.assert_close(torch.jit.trace(m, x)(x), ref)
    path = tmp_path / "post.onnx"
    torch.onnx.export(m, (x,), str(path), dynamo=True, input_names=["maps"], output_names=["out"])
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    out = sess.run(None, {"maps": x.numpy()})[0]
    np.testing.assert_allclose(out, ref.numpy(), atol=1e-5)


def test_component_scores_equal_ndimage_maximum_on_random_masks():
    """The box-scan maximum equals scipy's sort-based ndimage.maximum, including components whose
    bounding boxes overlap (a ring around a blob) and single pixels."""
    from scipy import ndimage

    rng = np.random.default_rng(3)
    for trial in range(20):
        mask = rng.random((64, 80)) > 0.7
        mask[10:30, 10:30] = True
        mask[14:26, 14:26] = False          # ring
        mask[18:22, 18:22] = True           # blob inside the ring's box
        amap = rng.normal(size=mask.shape).astype(np.float32)
        labels, n = ndimage.label(mask, structure=ndimage.generate_binary_structure(2, 2))
        ref = np.asarray(ndimage.maximum(amap, labels, np.arange(1, n + 1)), np.float32)
        got = P._component_max(amap, labels, ndimage.find_objects(labels))
        np.testing.assert_array_equal(got, ref)
        res = P.boxes_from_mask(mask, amap)
        np.testing.assert_array_equal(res.scores, np.sort(ref)[::-1])
