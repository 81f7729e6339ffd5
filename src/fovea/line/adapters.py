"""Any predictor drives the line: one small adapter per result type turns a prediction on an
object crop into lane evidence.

The decision policy combines `ClassResult` votes whose classes are lane names (tracker `votes`,
`policy.combine_votes`). An adapter maps one task's result to such a vote:

- `ClassLaneAdapter`: class -> lane (default: each class is its own lane); probabilities of
  classes that share a lane add up.
- `AnomalyLaneAdapter`: normalised anomaly score -> (good lane, reject lane); the confidence
  grows with the distance from the threshold (0.5, as `AnomalyResult` normalises it), so a score
  near the threshold is a weak vote that the policy routes to the default.
- `SegAreaAdapter`: segmentation class areas inside the crop -> a rule ("reject if the defect
  classes cover >= reject_fraction of the object pixels"; otherwise the lane of the largest
  object class); too few object pixels give an `unknown` vote.

`AdaptedPredictor(predictor, adapter)` has the Predictor shape (`predict(frames) ->
list[ClassResult]`), so the runner, tracker and policy stay unchanged. Lanes an adapter emits
that `LineConfig.lanes` does not list (e.g. "reject", "unknown", "box") take the default route.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from fovea.core import AnomalyResult, ClassResult, Frame, SegResult, check_config_keys
from fovea.errors import ConfigError, DataError

UNKNOWN = "unknown"   # lane of a crop the adapter cannot judge (never listed in LineConfig.lanes)


def _unique(seq) -> tuple[str, ...]:
    return tuple(dict.fromkeys(seq))


class ClassLaneAdapter:
    """`ClassResult` over model classes -> `ClassResult` over lanes.

    class_to_lane: {class name: lane}; None = identity. Given, it must name every class of the
    model (a class with no lane is an error, never a silent default); map a class to "default"
    to keep it off every gate.
    """

    result_type = ClassResult
    kind = "class"

    def __init__(self, class_to_lane: Mapping[str, str] | None = None):
        self.class_to_lane = None if class_to_lane is None else {str(k): str(v) for k, v in class_to_lane.items()}
        self.class_names: tuple[str, ...] | None = None
        self.lanes: tuple[str, ...] | None = None
        self._index: np.ndarray | None = None

    def bind(self, class_names: Sequence[str], source: str = "the model") -> None:
        """Fix the model's class order and the lane of each class (checks the mapping)."""
        names = tuple(str(c) for c in class_names)
        if not names:
            raise ConfigError(f"{source} gives no class names; a class -> lane adapter needs them. Fix: use a "
                              "checkpoint that records its class names")
        mapping = self.class_to_lane if self.class_to_lane is not None else {c: c for c in names}
        missing = [c for c in names if c not in mapping]
        if missing:
            raise ConfigError(f"classes {missing} of {source} have no lane in class_to_lane {mapping}. Fix: add "
                              f"e.g. {missing[0]!r}: 'default' (never diverted) or the lane it belongs to")
        extra = sorted(set(mapping) - set(names))
        if extra:
            raise ConfigError(f"class_to_lane names {extra}, which {source} does not predict (its classes: "
                              f"{list(names)}). Fix: correct the class names in the mapping")
        self.class_names = names
        self.lanes = _unique(mapping[c] for c in names)
        self._index = np.array([self.lanes.index(mapping[c]) for c in names])

    def __call__(self, result: ClassResult) -> ClassResult:
        if self.class_names is None:
            self.bind(result.class_names)
        elif result.class_names and tuple(result.class_names) != self.class_names:
            raise DataError(f"a ClassResult with classes {result.class_names} reached an adapter bound to "
                            f"{self.class_names}; one adapter serves one model")
        probs = np.asarray(result.probs, np.float64).reshape(-1)
        if len(probs) != len(self.class_names):
            raise DataError(f"ClassResult has {len(probs)} probabilities for classes {self.class_names}")
        lane_probs = np.bincount(self._index, weights=probs, minlength=len(self.lanes))
        return ClassResult(probs=lane_probs.astype(np.float32), class_names=self.lanes,
                           image_path=result.image_path)


class AnomalyLaneAdapter:
    """Normalised anomaly score s -> probabilities over (good_lane, reject_lane).

    p_reject is piecewise linear in s: 0 at `low`, 0.5 at `threshold`, 1 at `high` (clipped),
    so the confidence max(p_good, p_reject) grows with the distance of the score from the
    threshold. The defaults (0, 0.5, 1) give p_reject = s. `calibrated(...)` sets `low` to where
    the model's lowest validation score lands after normalisation, so "certainly good" means "as
    normal as the most normal validation image" rather than a score no image reaches.
    """

    result_type = AnomalyResult
    kind = "anomaly"

    def __init__(self, good_lane: str = "good", reject_lane: str = "reject", threshold: float = 0.5,
                 low: float = 0.0, high: float = 1.0):
        if not 0 <= low < threshold < high <= 1:
            raise ConfigError(f"AnomalyLaneAdapter needs 0 <= low < threshold < high <= 1 on the normalised score, "
                              f"got low={low}, threshold={threshold}, high={high}")
        if good_lane == reject_lane:
            raise ConfigError(f"AnomalyLaneAdapter: good_lane and reject_lane are both {good_lane!r}; use two lanes")
        self.good_lane, self.reject_lane = str(good_lane), str(reject_lane)
        self.threshold, self.low, self.high = float(threshold), float(low), float(high)
        self.lanes = (self.good_lane, self.reject_lane)

    @classmethod
    def calibrated(cls, thresholds, **kw) -> "AnomalyLaneAdapter":
        """From the model's raw-unit thresholds (a predictor with `.thresholds` or `.recipe["thresholds"]`, a
        `Thresholds`, or its dict): low = normalised score_min, high = normalised score_max (clipped to 1)."""
        t = thresholds
        try:
            if not isinstance(t, Mapping) and not hasattr(t, "image_threshold"):     # a predictor
                t = getattr(t, "thresholds", None) or (getattr(t, "recipe", None) or {}).get("thresholds")
            get = (lambda k: t[k]) if isinstance(t, Mapping) else (lambda k: getattr(t, k))
            thr, lo, hi = float(get("image_threshold")), float(get("score_min")), float(get("score_max"))
        except Exception as exc:      # a predictor without thresholds raises whatever its recipe lookup raises
            raise ConfigError(f"cannot calibrate the anomaly lane adapter from {type(thresholds).__name__}: it carries "
                              "no image_threshold/score_min/score_max. Fix: refit the model's thresholds "
                              "(`fovea anomaly fit`) or build AnomalyLaneAdapter(low=..., high=...) by hand") from exc
        if not hi > lo:
            raise ConfigError(f"anomaly thresholds have score_max={hi} <= score_min={lo}; refit them")
        span = hi - lo
        low = min(max((lo - thr) / span + 0.5, 0.0), 0.49)
        high = max(min((hi - thr) / span + 0.5, 1.0), 0.51)
        return cls(low=low, high=high, **kw)

    def bind(self, class_names: Sequence[str], source: str = "the model") -> None:
        """Nothing to bind: the lanes do not depend on the model."""

    def p_reject(self, score: float) -> float:
        """Probability of the reject lane for a normalised score (0.5 at the threshold)."""
        s, t = float(score), self.threshold
        p = 0.5 * (s - self.low) / (t - self.low) if s < t else 0.5 + 0.5 * (s - t) / (self.high - t)
        return float(np.clip(p, 0.0, 1.0))

    def __call__(self, result: AnomalyResult) -> ClassResult:
        if not np.isfinite(result.score):
            raise DataError(f"anomaly score {result.score} for {result.image_path or 'a crop'} is not finite; "
                            "the model or its normalisation is broken (refit its thresholds)")
        p = self.p_reject(result.score)
        return ClassResult(probs=np.array([1 - p, p], np.float32), class_names=self.lanes,
                           image_path=result.image_path)


@dataclass
class SegAreaRule:
    """How segmentation class areas inside an object crop become a lane (loadable from YAML/dict).

    Object pixels = pixels of any class not in `background`. If the `defect_classes` cover at
    least `reject_fraction` of the object pixels the object goes to `reject_lane`; otherwise to
    the lane of its largest remaining object class (`class_to_lane`, default identity). Fewer
    than `min_object_px` object pixels: the `unknown` lane. The vote's probability of the reject
    lane is r^k / (1 + r^k) with r = defect fraction / reject_fraction and k = `sharpness`
    (0.5 at the rule's threshold); the rest is shared by the object classes' lanes by area.
    """

    background: tuple[str, ...] = ("background",)
    defect_classes: tuple[str, ...] = ("bruise", "spot", "cut")
    reject_lane: str = "damaged"
    reject_fraction: float = 0.02
    class_to_lane: dict[str, str] = field(default_factory=dict)
    min_object_px: int = 20
    sharpness: float = 2.0

    def __post_init__(self) -> None:
        self.background = tuple(str(c) for c in self.background)
        self.defect_classes = tuple(str(c) for c in self.defect_classes)
        self.class_to_lane = {str(k): str(v) for k, v in self.class_to_lane.items()}
        if not 0 < self.reject_fraction <= 1:
            raise ConfigError(f"SegAreaRule.reject_fraction={self.reject_fraction} must be in (0, 1] "
                              "(share of the object's pixels)")
        if self.sharpness <= 0 or self.min_object_px < 1:
            raise ConfigError(f"SegAreaRule: sharpness={self.sharpness} must be > 0 and "
                              f"min_object_px={self.min_object_px} >= 1")
        both = set(self.background) & set(self.defect_classes)
        if both:
            raise ConfigError(f"SegAreaRule: classes {sorted(both)} are both background and defect; pick one")

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], source: str = "<dict>") -> "SegAreaRule":
        check_config_keys(cls, d, source)
        return cls(**dict(d))


class SegAreaAdapter:
    """`SegResult` of a crop -> lane vote by the class-area rule `SegAreaRule`."""

    result_type = SegResult
    kind = "segmentation"

    def __init__(self, rule: SegAreaRule | Mapping[str, Any] | None = None):
        self.rule = rule if isinstance(rule, SegAreaRule) else SegAreaRule.from_dict(rule or {})
        self.class_names: tuple[str, ...] | None = None
        self.lanes: tuple[str, ...] | None = None

    def bind(self, class_names: Sequence[str], source: str = "the model") -> None:
        """Check the rule's class names against the model's and fix the lane order."""
        r = self.rule
        names = tuple(str(c) for c in class_names)
        if not names:
            raise ConfigError(f"{source} gives no class names; the segmentation rule names classes. Fix: use a "
                              "checkpoint that records its class names")
        named = set(r.background) | set(r.defect_classes) | set(r.class_to_lane)
        unknown = sorted(named - set(names))
        if unknown:
            raise ConfigError(f"the segmentation rule names classes {unknown} that {source} does not predict (its "
                              f"classes: {list(names)}). Fix: correct background/defect_classes/class_to_lane")
        if not set(r.background) & set(names):
            raise ConfigError(f"none of the rule's background classes {list(r.background)} is among {list(names)}")
        self.class_names = names
        self._bg = np.array([c in r.background for c in names])
        self._defect = np.array([c in r.defect_classes for c in names])
        self._objects = [i for i, c in enumerate(names) if not self._bg[i] and not self._defect[i]]
        lane_of = {c: r.class_to_lane.get(c, c) for c in names}
        self._object_lane = [lane_of[names[i]] for i in self._objects]
        self.lanes = _unique([r.reject_lane, *self._object_lane, UNKNOWN])

    def __call__(self, result: SegResult) -> ClassResult:
        if self.class_names is None:
            self.bind(result.class_names)
        elif result.class_names and tuple(result.class_names) != self.class_names:
            raise DataError(f"a SegResult with classes {result.class_names} reached an adapter bound to "
                            f"{self.class_names}; one adapter serves one model")
        counts = np.bincount(np.asarray(result.class_map).ravel(), minlength=len(self.class_names)).astype(np.float64)
        if len(counts) > len(self.class_names):
            raise DataError(f"SegResult.class_map holds class id {len(counts) - 1} but the model names only "
                            f"{len(self.class_names)} classes")
        probs = np.zeros(len(self.lanes))
        n_object = counts[~self._bg].sum()
        if n_object < self.rule.min_object_px:
            probs[self.lanes.index(UNKNOWN)] = 1.0
        else:
            r = counts[self._defect].sum() / n_object / self.rule.reject_fraction
            rk = r ** self.rule.sharpness
            p_reject = rk / (1 + rk) if np.isfinite(rk) else 1.0
            probs[self.lanes.index(self.rule.reject_lane)] += p_reject
            obj = counts[self._objects]
            if obj.sum() > 0:
                for lane, share in zip(self._object_lane, obj / obj.sum()):
                    probs[self.lanes.index(lane)] += (1 - p_reject) * share
            else:                         # all object pixels are defects: nothing else to weigh
                probs[self.lanes.index(self.rule.reject_lane)] = 1.0
        return ClassResult(probs=probs.astype(np.float32), class_names=self.lanes, image_path=result.image_path)


ADAPTERS = {ClassResult: ClassLaneAdapter, AnomalyResult: AnomalyLaneAdapter, SegResult: SegAreaAdapter}
_BY_KIND = {a.kind: a for a in ADAPTERS.values()}
TASK_RESULT = {"classify": ClassResult, "anomaly": AnomalyResult, "segment": SegResult}   # Predictor.kind -> result


def adapter_for_result(result_type: type, **options):
    """A new adapter for results of `result_type` (options go to its constructor)."""
    for rtype, cls in ADAPTERS.items():
        if issubclass(result_type, rtype):
            return cls(**options)
    raise ConfigError(f"the line has no lane adapter for {result_type.__name__} results (adapters exist for "
                      f"{[t.__name__ for t in ADAPTERS]}). Fix: a Detections model localizes objects (pass it as "
                      "the localizer); for another result type write an adapter with __call__(result) -> "
                      "ClassResult over lane names")


def adapter_from_dict(d: Mapping[str, Any], source: str = "<dict>"):
    """{"kind": "class" | "anomaly" | "segmentation", ...options} -> adapter (YAML `adapter:` block)."""
    d = dict(d)
    kind = d.pop("kind", None)
    if kind not in _BY_KIND:
        raise ConfigError(f"{source}: adapter kind {kind!r}; use one of {sorted(_BY_KIND)}")
    try:
        return _BY_KIND[kind](**d) if kind != "segmentation" else SegAreaAdapter(SegAreaRule.from_dict(d, source))
    except TypeError as exc:
        raise ConfigError(f"{source}: bad options {sorted(d)} for the {kind} adapter ({exc})") from exc


def load_adapter(path: str | Path):
    """An adapter from a YAML file holding an adapter mapping (see `adapter_from_dict`)."""
    import yaml

    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"adapter file {p} does not exist; write e.g. 'kind: anomaly' or omit the option")
    d = yaml.safe_load(p.read_text()) or {}
    if not isinstance(d, dict):
        raise ConfigError(f"{p}: expected a mapping with 'kind' and the adapter's options, got {type(d).__name__}")
    return adapter_from_dict(d, str(p))


class AdaptedPredictor:
    """Any Predictor + a lane adapter = a Predictor of `ClassResult` votes over lane names.

    adapter: an adapter instance, a dict for `adapter_from_dict`, or None (picked from the task of a
    fovea predictor, `kind`, else from the type of the first result). Class names are bound as
    soon as the predictor exposes them.
    """

    def __init__(self, predictor, adapter=None):
        if not hasattr(predictor, "predict"):
            raise ConfigError(f"{type(predictor).__name__} has no predict(frames); it cannot drive the line")
        self.predictor = predictor
        self.adapter = adapter_from_dict(adapter) if isinstance(adapter, Mapping) else adapter
        rtype = TASK_RESULT.get(getattr(predictor, "kind", None))   # known up front for fovea's task predictors
        if rtype is not None:
            if self.adapter is None:
                self.adapter = self._default_adapter(rtype)
            self._check_type(rtype)
        if self.adapter is not None:
            self._bind_from_predictor()

    @property
    def source(self) -> str:
        return str(getattr(self.predictor, "source", "") or type(self.predictor).__name__)

    def _bind_from_predictor(self) -> None:
        names = getattr(self.predictor, "class_names", None)
        if names and getattr(self.adapter, "lanes", None) is None:
            self.adapter.bind(names, source=self.source)

    @property
    def lanes(self) -> tuple[str, ...] | None:
        """Lane names of every vote (None until known: adapter picked lazily, no class names yet)."""
        return None if self.adapter is None else self.adapter.lanes

    @property
    def class_names(self) -> tuple[str, ...] | None:
        return self.lanes

    def check_lanes(self, line_lanes: Mapping[str, int]) -> list[str]:
        """Raise if none of the adapter's lanes is a line lane (nothing could ever be sorted);
        returns the adapter lanes that take the default route."""
        lanes = self.lanes
        if lanes is None:
            return []
        if not set(lanes) & set(line_lanes):
            raise ConfigError(f"the model's lanes {list(lanes)} include none of the line's lanes "
                              f"{sorted(line_lanes)}: every object would take the default route. Fix: map classes "
                              "to the line's lane names (class_to_lane / good_lane / reject_lane) or edit `lanes`")
        return [lane for lane in lanes if lane not in line_lanes]

    def _check_type(self, result_type: type) -> None:
        want = getattr(self.adapter, "result_type", None)
        if want is not None and not issubclass(result_type, want):
            raise ConfigError(f"{self.source} returns {result_type.__name__} results, but its lane adapter "
                              f"{type(self.adapter).__name__} takes {want.__name__}. Fix: pass the adapter of "
                              "this model's result type (or none: it is picked from the result type)")

    def _adapt(self, result) -> ClassResult:
        if self.adapter is None:
            self.adapter = self._default_adapter(type(result))
            self._bind_from_predictor()
        self._check_type(type(result))
        return self.adapter(result)

    def _default_adapter(self, result_type: type):
        """The adapter of a result type; an anomaly model that carries its thresholds gets its
        votes calibrated from them (`AnomalyLaneAdapter.calibrated`), otherwise the plain score."""
        if issubclass(result_type, AnomalyResult):
            try:
                return AnomalyLaneAdapter.calibrated(self.predictor)
            except ConfigError:
                return AnomalyLaneAdapter()
        return adapter_for_result(result_type)

    def predict(self, frames: Sequence) -> list[ClassResult]:
        """(N,) frames -> N `ClassResult`s whose class names are the adapter's lanes."""
        out = self.predictor.predict(frames)
        if len(out) != len(frames):
            raise DataError(f"{self.source} returned {len(out)} results for {len(frames)} crops")
        return [self._adapt(r) for r in out]

    def predict_one(self, frame: Frame | np.ndarray) -> ClassResult:
        return self.predict([frame])[0]
