"""Self-contained HTML report of an anomaly test run, and the overlay image used by predict.

`write_anomaly_report` writes one `report.html` that opens offline: every chart and image is a
base64 PNG data URI and the CSS is inline. Charts use matplotlib (Agg); overlays use OpenCV.
Overlay colours: jet heatmap, ground truth contour white, predicted mask contour and boxes magenta
(neither colour occurs in the jet map).
"""

from __future__ import annotations

import base64
import html
import io
from datetime import datetime
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from fovea.core import AnomalyResult, check_image
from fovea.engine.metrics import roc_curve
from fovea.errors import DataError
from fovea.io import read_image

__all__ = ["heatmap_overlay", "overlay_png", "select_panels", "write_anomaly_report"]

GT_RGB = (255, 255, 255)
PRED_RGB = (255, 0, 255)
PANEL_HEIGHT = 200


# ------------------------------------------------------------------------- overlays (OpenCV)


def _check_image(image) -> np.ndarray:
    """(H, W, 3) uint8 RGB (a grey (H, W) uint8 image is repeated into three channels)."""
    img = np.asarray(image)
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    return check_image(img, "overlay image")


def _fit(a: np.ndarray, hw: tuple[int, int], interpolation: int) -> np.ndarray:
    if a.shape[:2] == hw:
        return a
    return cv2.resize(a, (hw[1], hw[0]), interpolation=interpolation)


def heatmap_overlay(image, anomaly_map, alpha: float = 0.45) -> np.ndarray:
    """Blend a jet-coloured map in [0, 1] (resized to the image if needed) over an RGB image -> (H, W, 3) uint8."""
    img = _check_image(image)
    amap = _fit(np.asarray(anomaly_map, np.float32), img.shape[:2], cv2.INTER_LINEAR)
    heat = cv2.applyColorMap(np.clip(amap * 255.0, 0, 255).astype(np.uint8), cv2.COLORMAP_JET)
    heat = cv2.cvtColor(heat, cv2.COLOR_BGR2RGB)
    return cv2.addWeighted(img, 1.0 - alpha, heat, alpha, 0.0)


def _draw_contour(img: np.ndarray, mask: np.ndarray, rgb: tuple[int, int, int], thickness: int) -> None:
    m = _fit(np.asarray(mask).astype(np.uint8), img.shape[:2], cv2.INTER_NEAREST)
    found = cv2.findContours(m, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    contours = found[-2]  # OpenCV 3 returns 3 values, 4/5 return 2
    cv2.drawContours(img, contours, -1, rgb, thickness)


def _draw_boxes(img: np.ndarray, result: AnomalyResult, thickness: int) -> None:
    sy = img.shape[0] / result.anomaly_map.shape[0]
    sx = img.shape[1] / result.anomaly_map.shape[1]
    font_scale = max(0.35, min(img.shape[:2]) / 600.0)
    for (x1, y1, x2, y2), s in zip(result.boxes, result.box_scores):
        # boxes are pixel-edge xyxy with exclusive x2/y2; cv2 wants the last pixel inclusive
        p1 = (int(round(x1 * sx)), int(round(y1 * sy)))
        p2 = (max(p1[0], int(round(x2 * sx)) - 1), max(p1[1], int(round(y2 * sy)) - 1))
        cv2.rectangle(img, p1, p2, PRED_RGB, thickness)
        ty = p1[1] - 4 if p1[1] > 14 else p2[1] + 14
        cv2.putText(img, f"{s:.2f}", (p1[0], ty), cv2.FONT_HERSHEY_SIMPLEX, font_scale, PRED_RGB,
                    max(1, thickness - 1), cv2.LINE_AA)


def _annotate(img: np.ndarray, result: AnomalyResult, gt_mask) -> np.ndarray:
    out = img.copy()
    t = max(1, round(min(out.shape[:2]) / 200))
    if gt_mask is not None:
        _draw_contour(out, gt_mask, GT_RGB, t)
    _draw_contour(out, result.mask, PRED_RGB, t)
    _draw_boxes(out, result, t)
    return out


def overlay_png(image, result: AnomalyResult, gt_mask=None) -> np.ndarray:
    """Image + jet heatmap + predicted contour/boxes (magenta) + GT contour (white) -> (H, W, 3) uint8 RGB.

    Also stamps the normalised score and decision top-left. Does not modify its inputs.
    """
    out = _annotate(heatmap_overlay(image, result.anomaly_map), result, gt_mask)
    text = f"{'ANOMALY' if result.label else 'normal'} {result.score:.3f}"
    scale = max(0.4, min(out.shape[:2]) / 600.0)
    (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
    cv2.rectangle(out, (0, 0), (tw + 10, th + base + 8), (0, 0, 0), -1)
    cv2.putText(out, text, (5, th + 4), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1, cv2.LINE_AA)
    return out


def _panel(image, result: AnomalyResult, gt_mask) -> np.ndarray:
    """[image | heatmap overlay | contours + boxes] side by side at PANEL_HEIGHT (drawn after resizing)."""
    img = _check_image(image)
    h, w = img.shape[:2]
    nw = max(1, round(w * PANEL_HEIGHT / h))
    small = cv2.resize(img, (nw, PANEL_HEIGHT), interpolation=cv2.INTER_AREA)
    gap = np.full((PANEL_HEIGHT, 4, 3), 255, np.uint8)
    return np.concatenate([small, gap, heatmap_overlay(small, result.anomaly_map), gap,
                           _annotate(small, result, gt_mask)], axis=1)


# ------------------------------------------------------------------------- encoding


def _png_uri(rgb: np.ndarray) -> str:
    ok, buf = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    if not ok:
        raise DataError(f"cannot encode a {rgb.shape} image as PNG")
    return "data:image/png;base64," + base64.b64encode(buf.tobytes()).decode("ascii")


def _fig_uri(fig) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


# ------------------------------------------------------------------------- charts (matplotlib)


def _roc_chart(scores: np.ndarray, labels: np.ndarray, auc: float | None) -> str | None:
    if labels.all() or not labels.any():
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fpr, tpr, _ = roc_curve(scores, labels)
    fig, ax = plt.subplots(figsize=(4.2, 3.8))
    ax.plot(fpr, tpr, color="#c0392b", lw=2, label=f"AUROC {auc:.4f}" if auc is not None else "ROC")
    ax.plot([0, 1], [0, 1], color="#999", lw=1, ls="--", label="chance")
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title="Image ROC", xlim=(0, 1), ylim=(0, 1.01))
    ax.legend(loc="lower right")
    ax.grid(alpha=0.3)
    return _fig_uri(fig)


def _histogram_chart(scores: np.ndarray, labels: np.ndarray, raw_threshold: float) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.2, 3.8))
    bins = np.linspace(0, 1, 41)
    for lab, name, color in ((0, "normal", "#2e86c1"), (1, "anomalous", "#e67e22")):
        sel = scores[labels == lab]
        if sel.size:
            ax.hist(sel, bins=bins, alpha=0.6, color=color, label=f"{name} ({sel.size})")
    ax.axvline(0.5, color="#c0392b", lw=2, ls="--", label=f"threshold 0.5 (raw {raw_threshold:.4g})")
    ax.set(xlabel="normalised anomaly score", ylabel="images", title="Score histogram", xlim=(0, 1))
    ax.legend(loc="upper center", fontsize=8)
    return _fig_uri(fig)


# ------------------------------------------------------------------------- HTML


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px auto;max-width:1200px;
color:#222;padding:0 16px}
h1{font-size:1.6em;margin-bottom:4px}h2{font-size:1.2em;border-bottom:1px solid #ddd;padding-bottom:4px;
margin-top:28px}
.meta{color:#666;font-size:.9em}
table{border-collapse:collapse;margin:8px 0}td,th{border:1px solid #ccc;padding:4px 10px;text-align:left}
th{background:#f4f4f4}td.num{text-align:right;font-variant-numeric:tabular-nums}
.charts{display:flex;flex-wrap:wrap;gap:16px;align-items:flex-start}
.cm td{width:90px;text-align:center;font-size:1.1em}.cm .ok{background:#d5f5e3}.cm .bad{background:#fadbd8}
.panel{margin:14px 0;padding:8px;border:1px solid #e3e3e3;border-radius:6px}
.panel img{max-width:100%}.cap{font-size:.9em;margin-bottom:4px}
.tag{display:inline-block;padding:1px 7px;border-radius:9px;font-size:.8em;color:#fff;margin-right:6px}
.fp,.fn{background:#c0392b}.tp,.tn{background:#27ae60}
.legend span{display:inline-block;width:14px;height:4px;vertical-align:middle;margin:0 4px 0 12px}
.notes li{color:#8a5a00}
"""


def _fmt(v) -> str:
    if v is None:
        return "&mdash;"
    if isinstance(v, (bool, np.bool_)):
        return str(bool(v))
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, (float, np.floating)):
        return f"{float(v):.4f}"
    return html.escape(str(v))


def _metrics_table(metrics: dict) -> str:
    rows = []
    for k, v in metrics.items():
        if k == "notes" or isinstance(v, (list, tuple, dict)):
            continue
        cls = ' class="num"' if isinstance(v, (int, float, np.number)) and not isinstance(v, bool) else ""
        rows.append(f"<tr><th>{html.escape(str(k))}</th><td{cls}>{_fmt(v)}</td></tr>")
    return "<table>" + "".join(rows) + "</table>"


_NUM = ' class="num"'


def _thresholds_table(thresholds) -> str:
    d = thresholds.to_dict() if hasattr(thresholds, "to_dict") else dict(thresholds)
    rows = "".join(f"<tr><th>{html.escape(k)}</th><td{_NUM if isinstance(v, float) else ''}>{_fmt(v)}</td></tr>"
                   for k, v in d.items() if v != "")
    return f"<table>{rows}</table><p class=meta>Raw model units; each threshold maps to 0.5 after normalisation.</p>"


def _confusion(labels: np.ndarray, pred: np.ndarray) -> str:
    tp, fp = int((pred & labels).sum()), int((pred & ~labels).sum())
    tn, fn = int((~pred & ~labels).sum()), int((~pred & labels).sum())
    return ("<table class=cm><tr><th></th><th>predicted normal</th><th>predicted anomalous</th></tr>"
            f"<tr><th>normal</th><td class=ok>{tn}</td><td class=bad>{fp}</td></tr>"
            f"<tr><th>anomalous</th><td class=bad>{fn}</td><td class=ok>{tp}</td></tr></table>")


def select_panels(results: Sequence[AnomalyResult], labels, max_panels: int = 24, seed: int = 0) -> list[int]:
    """Indices to draw: false positives (highest score first), false negatives (lowest first), then a
    seeded sample of the correct ones alternating anomalous/normal, at most `max_panels` in all."""
    y = np.asarray(labels).astype(bool)
    s = np.array([r.score for r in results])
    pred = np.array([r.label for r in results], bool)
    fp = [int(i) for i in np.flatnonzero(pred & ~y)[np.argsort(-s[pred & ~y], kind="stable")]]
    fn = [int(i) for i in np.flatnonzero(~pred & y)[np.argsort(s[~pred & y], kind="stable")]]
    rng = np.random.default_rng(seed)
    tp = [int(i) for i in rng.permutation(np.flatnonzero(pred & y))]
    tn = [int(i) for i in rng.permutation(np.flatnonzero(~pred & ~y))]
    rest = [i for pair in zip(tp, tn) for i in pair]  # alternate anomalous / normal, then the longer tail
    rest += tp[len(tn):] + tn[len(tp):]
    return (fp + fn + rest)[:max_panels]


def write_anomaly_report(out_dir, results: Sequence[AnomalyResult], labels, gt_masks, images, metrics: dict,
                         thresholds, title: str = "fovea anomaly report", *, max_panels: int = 24,
                         notes: Sequence[str] = (), seed: int = 0) -> Path:
    """Write `out_dir/report.html` (offline, self-contained) and return its path.

    results/labels/gt_masks (None or per-image (H, W) bool or None)/images (uint8 RGB arrays or paths)
    are aligned lists; metrics: e.g. from `evaluate_anomaly`; thresholds: a `Thresholds`.
    Shows metrics, thresholds, ROC, score histogram, confusion matrix, and at most `max_panels`
    per-image panels (errors first), saying how many of how many are shown.
    """
    n = len(results)
    y = np.asarray(labels).astype(bool).ravel()
    if y.size != n or len(images) != n or (gt_masks is not None and len(gt_masks) != n):
        raise DataError(f"report inputs differ in length: {n} results, {y.size} labels, {len(images)} images, "
                        f"{'no' if gt_masks is None else len(gt_masks)} masks")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    scores = np.array([r.score for r in results], np.float64)
    raw = np.array([r.raw_score for r in results], np.float64)
    pred = np.array([r.label for r in results], bool)
    roc_scores = raw if np.isfinite(raw).all() else scores
    raw_thr = float(getattr(thresholds, "image_threshold", float("nan")))
    roc = _roc_chart(roc_scores, y, metrics.get("image_auroc"))
    hist = _histogram_chart(scores, y, raw_thr)

    idx = select_panels(results, y, max_panels, seed)
    n_err = int((pred != y).sum())
    panels = []
    for i in idx:
        r = results[i]
        img = images[i] if isinstance(images[i], np.ndarray) else read_image(images[i])
        g = None if gt_masks is None else gt_masks[i]
        kind = ("tp" if y[i] else "fp") if pred[i] else ("fn" if y[i] else "tn")
        name = html.escape(str(r.image_path or (images[i] if not isinstance(images[i], np.ndarray) else f"#{i}")))
        panels.append(
            f"<div class=panel><div class=cap><span class='tag {kind}'>{kind.upper()}</span><b>{name}</b> &middot; "
            f"truth {'anomalous' if y[i] else 'normal'} &middot; score {r.score:.3f} (raw {r.raw_score:.4g}) &middot; "
            f"{len(r.boxes)} box(es), {int(r.mask.sum())} anomalous px</div>"
            f"<img alt='{name}' src='{_png_uri(_panel(img, r, g))}'></div>")

    order = (f"{min(n_err, len(idx))} of the {n_err} misclassified first (false positives by highest score, then "
             "false negatives by lowest), then " if n_err else "no image is misclassified; ")
    order += f"a random sample of correct ones, alternating anomalous and normal (seed {seed})."
    all_notes = list(metrics.get("notes", [])) + list(notes)
    notes_html = ("<ul class=notes>" + "".join(f"<li>{html.escape(str(s))}</li>" for s in all_notes) + "</ul>"
                  if all_notes else "")
    roc_html = (f"<img alt='ROC curve' src='{roc}'>" if roc else
                "<p class=meta>ROC curve not drawn: the test set holds one class only.</p>")
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>{_CSS}</style></head><body>
<h1>{html.escape(title)}</h1>
<p class=meta>{n} test images ({int((~y).sum())} normal, {int(y.sum())} anomalous) &middot;
generated {datetime.now().strftime('%Y-%m-%d %H:%M')}</p>
<h2>Metrics</h2>{_metrics_table(metrics)}{notes_html}
<h2>Thresholds</h2>{_thresholds_table(thresholds)}
<h2>Charts</h2><div class=charts>{roc_html}<img alt='score histogram' src='{hist}'>
<div><b>Confusion matrix</b> (threshold 0.5){_confusion(y, pred)}</div></div>
<h2>Images</h2>
<p>Showing {len(idx)} of {n} images: {order}</p>
<p class=legend>Each row: image &middot; heatmap (jet, 0.5 = threshold) &middot; contours:
<span style="background:#ccc;border:1px solid #555"></span>ground truth (white)
<span style="background:#f0f"></span>prediction and boxes with scores (magenta)</p>
{''.join(panels)}
</body></html>
"""
    path = out / "report.html"
    path.write_text(page, encoding="utf-8")
    return path
