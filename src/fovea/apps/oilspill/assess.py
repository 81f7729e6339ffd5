"""Oil-spill assessment from segmented nadir drone images: areas, volumes, severity, response.

Area: each pixel's footprint on the sea for a nadir camera at `altitude_m`, from the calibrated
lens model (pixel corners unprojected to rays and intersected with the sea plane), so lens
distortion is accounted for; the nominal ground sampling distance is altitude / fx metres per
pixel. Volume range per class: area x the class's Bonn Agreement thickness band (rules.yaml).
Severity and response: the first matching rule of the YAML. Images of one survey are assumed
not to overlap (areas add up).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import yaml

from fovea.errors import CalibrationError, ConfigError, DataError
from fovea.geometry.camera import CameraModel

CLASS_NAMES = ("water", "sheen", "rainbow", "true_colour")
_CONDITIONS = {"volume_max_m3_at_least", "true_colour_area_m2_at_least", "oiled_area_m2_at_least",
               "thick_fraction_at_least"}


# ---- rules ----------------------------------------------------------------------------------------
@dataclass
class Rules:
    """Parsed rules.yaml: per-class thickness bands (um) and ordered severity rules."""

    classes: dict[str, dict[str, Any]]
    severity: list[dict[str, Any]]
    source: str = ""
    path: str = "<builtin>"

    @property
    def oil_classes(self) -> list[str]:
        return [k for k, v in self.classes.items() if v.get("oil")]


def load_rules(path: str | Path | None = None) -> Rules:
    """Read and validate a rules YAML (default: the one shipped in this package)."""
    if path is None:
        text = resources.files("fovea.apps.oilspill").joinpath("rules.yaml").read_text()
        where = "fovea/apps/oilspill/rules.yaml"
    else:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"rules file {p} does not exist. Fix: pass --rules PATH or omit it for the defaults.")
        text, where = p.read_text(), str(p)
    try:
        d = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{where} is not valid YAML: {exc}") from None
    if not isinstance(d, dict) or "classes" not in d or "severity" not in d:
        raise ConfigError(f"{where} needs top-level keys 'classes' and 'severity'.")
    for name, c in d["classes"].items():
        if c.get("oil"):
            band = c.get("thickness_um")
            if not (isinstance(band, (list, tuple)) and len(band) == 2 and 0 < float(band[0]) <= float(band[1])):
                raise ConfigError(f"{where}: classes.{name}.thickness_um = {band!r}; Fix: give [min_um, max_um] "
                                  "with 0 < min <= max.")
    for i, r in enumerate(d["severity"]):
        bad = set(r.get("when", {}) or {}) - _CONDITIONS
        if bad or "grade" not in r or "response" not in r:
            raise ConfigError(f"{where}: severity rule {i} has unknown conditions {sorted(bad)} or lacks grade/"
                              f"response. Allowed conditions: {sorted(_CONDITIONS)}.")
    return Rules(d["classes"], d["severity"], d.get("source", ""), where)


# ---- areas -----------------------------------------------------------------------------------------
def check_altitude(altitude_m) -> float:
    """The altitude as a positive float, or a ConfigError that says how to give it."""
    try:
        a = float(altitude_m)
    except (TypeError, ValueError):
        a = float("nan")
    if not np.isfinite(a) or a <= 0:
        raise ConfigError(f"altitude {altitude_m!r} is missing or not a positive number of metres; areas need the "
                          "drone's height above the sea. Fix: pass --altitude-m (e.g. --altitude-m 120).")
    return a


def pixel_area_map(model: CameraModel, altitude_m: float) -> np.ndarray:
    """(H, W) sea-surface area in m^2 covered by each pixel of a nadir camera at `altitude_m`."""
    a = check_altitude(altitude_m)
    w, h = model.image_size
    uu, vv = np.meshgrid(np.arange(w + 1) - 0.5, np.arange(h + 1) - 0.5)
    xy = model.unproject(np.stack([uu.ravel(), vv.ravel()], 1)).reshape(h + 1, w + 1, 2) * a
    p00, p01, p11, p10 = xy[:-1, :-1], xy[:-1, 1:], xy[1:, 1:], xy[1:, :-1]
    cross = lambda p, q: p[..., 0] * q[..., 1] - p[..., 1] * q[..., 0]  # noqa: E731
    return 0.5 * np.abs(cross(p00, p01) + cross(p01, p11) + cross(p11, p10) + cross(p10, p00))


# ---- assessment ----------------------------------------------------------------------------------
@dataclass
class SurveyAssessment:
    """Totals over a survey. volume_m3: class -> [min, max]; images: per-image areas (m^2)."""

    area_m2: dict[str, float]
    volume_m3: dict[str, list[float]]
    volume_range_m3: list[float]
    grade: int
    grade_name: str
    response: str
    altitude_m: float
    gsd_m: float
    images: list[dict[str, Any]] = field(default_factory=list)
    rules_source: str = ""

    @property
    def oiled_area_m2(self) -> float:
        return float(sum(v for k, v in self.area_m2.items() if k != "water"))

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["oiled_area_m2"] = self.oiled_area_m2
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = "dict") -> "SurveyAssessment":
        try:
            keys = cls.__dataclass_fields__
            return cls(**{k: d[k] for k in keys if k in d})
        except TypeError as exc:
            raise DataError(f"{source} is not an oil-spill assessment JSON ({exc}). Fix: pass the "
                            "assessment.json written by `fovea oilspill assess`.") from None

    def save(self, path) -> Path:
        path = Path(path)
        path.write_text(json.dumps(self.to_dict(), indent=2))
        return path

    @classmethod
    def load(cls, path) -> "SurveyAssessment":
        p = Path(path)
        if not p.is_file():
            raise DataError(f"assessment {p} does not exist. Fix: run `fovea oilspill assess ... --out DIR` first.")
        return cls.from_dict(json.loads(p.read_text()), str(p))


def grade_survey(area_m2: dict[str, float], volume_max_m3: float, rules: Rules) -> tuple[int, str, str]:
    """(grade, name, response) of the first severity rule whose conditions all hold."""
    oiled = sum(area_m2.get(k, 0.0) for k in rules.oil_classes)
    tc = area_m2.get("true_colour", 0.0)
    facts = {"volume_max_m3_at_least": volume_max_m3, "true_colour_area_m2_at_least": tc,
             "oiled_area_m2_at_least": oiled, "thick_fraction_at_least": tc / oiled if oiled else 0.0}
    for r in rules.severity:
        if all(facts[k] >= float(v) for k, v in (r.get("when") or {}).items()):
            return int(r["grade"]), str(r.get("name", "")), " ".join(str(r["response"]).split())
    raise ConfigError(f"no severity rule in {rules.path} matched; Fix: end the list with a rule `when: {{}}`.")


def assess_class_maps(class_maps: Sequence[np.ndarray], model: CameraModel, altitude_m, rules: Rules | None = None,
                      names: Sequence[str] | None = None, class_names: Sequence[str] = CLASS_NAMES) -> SurveyAssessment:
    """Areas, volume range and severity from per-image (H, W) class-index maps of one survey."""
    altitude_m = check_altitude(altitude_m)
    rules = rules or load_rules()
    area_px = pixel_area_map(model, altitude_m)
    names = list(names) if names is not None else [f"image_{i}" for i in range(len(class_maps))]
    if not class_maps:
        raise DataError("no images to assess. Fix: pass at least one survey image.")
    totals = {n: 0.0 for n in class_names}
    per_image = []
    for name, cm in zip(names, class_maps):
        cm = np.asarray(cm)
        model.check_image_size((cm.shape[1], cm.shape[0]), name)
        if cm.max() >= len(class_names) or cm.min() < 0:
            raise DataError(f"{name}: class index {int(cm.max())} outside {list(class_names)}.")
        sums = np.bincount(cm.ravel().astype(np.int64), weights=area_px.ravel(), minlength=len(class_names))
        a = {n: float(sums[k]) for k, n in enumerate(class_names)}
        per_image.append({"name": name, "area_m2": a})
        for n in class_names:
            totals[n] += a[n]
    vol = {}
    for n in rules.oil_classes:
        lo, hi = (float(v) for v in rules.classes[n]["thickness_um"])
        vol[n] = [totals.get(n, 0.0) * lo * 1e-6, totals.get(n, 0.0) * hi * 1e-6]
    vrange = [sum(v[0] for v in vol.values()), sum(v[1] for v in vol.values())]
    g, gname, resp = grade_survey(totals, vrange[1], rules)
    return SurveyAssessment(totals, vol, vrange, g, gname, resp, altitude_m, altitude_m / model.fx, per_image,
                            rules.source)


def compare_surveys(before: SurveyAssessment, after: SurveyAssessment) -> dict[str, Any]:
    """Change from one survey to the next: per-class area (m^2, %), volume range, grade."""
    def pct(a, b):
        return float("nan") if a == 0 else 100.0 * (b - a) / a

    classes = [k for k in before.area_m2 if k != "water"]
    return {
        "area_m2": {k: {"before": before.area_m2[k], "after": after.area_m2.get(k, 0.0),
                        "change_pct": pct(before.area_m2[k], after.area_m2.get(k, 0.0))} for k in classes},
        "oiled_area_m2": {"before": before.oiled_area_m2, "after": after.oiled_area_m2,
                          "change_pct": pct(before.oiled_area_m2, after.oiled_area_m2)},
        "volume_range_m3": {"before": before.volume_range_m3, "after": after.volume_range_m3},
        "grade": {"before": before.grade, "after": after.grade},
        "trend": ("worse" if after.grade > before.grade else "better" if after.grade < before.grade else "same grade"),
    }


def segment_images(images: Sequence[np.ndarray], predictor, class_names: Sequence[str] = CLASS_NAMES) -> list[np.ndarray]:
    """Class maps from a `fovea.segment` predictor, re-indexed to `class_names` by name."""
    pred_names = list(getattr(predictor, "class_names", class_names))
    missing = [n for n in class_names if n not in pred_names]
    if missing:
        raise ConfigError(f"the segmentation model's classes {pred_names} lack {missing}. Fix: use a model trained "
                          "on water/sheen/rainbow/true_colour (fovea.apps.oilspill.train).")
    lut = np.array([class_names.index(n) if n in class_names else 0 for n in pred_names])
    return [lut[predictor.predict_one(im).class_map] for im in images]


def calib_for(path, images: Sequence[np.ndarray], names: Sequence[str]) -> CameraModel:
    """Load a camera model and check every image has its size (clear error otherwise)."""
    if path is None:
        raise CalibrationError("no camera calibration given; areas need the intrinsics. Fix: pass --calib cam.json "
                               "(from `fovea calibrate`).")
    m = CameraModel.load(path)
    for n, im in zip(names, images):
        m.check_image_size((im.shape[1], im.shape[0]), n)
    return m
