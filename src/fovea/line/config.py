"""`LineConfig`: one typed, YAML-loadable description of a sorting line (mm, s)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from fovea.core import check_config_keys
from fovea.errors import ConfigError


@dataclass
class LineConfig:
    """Geometry, timing and decision rules of one line.

    Belt x (mm) runs downstream from the camera's left image edge; gates sit at
    `gate_distance_mm[gate]`. Classes listed in `lanes` go to that gate when the evidence is good
    enough; everything else (and every ambiguity) takes the default route: no gate moves.
    """

    # camera -> belt
    mm_per_px: float = 2.5
    x0_mm: float = 0.0
    fps: float = 10.0                      # nominal camera rate (for gap counting)
    # belt and gates
    belt_speed_mm_s: float = 400.0
    measure_speed: bool = False            # estimate the speed from tracked displacement (fovea.line.speed)
    speed_window_s: float = 0.3            # longest displacement baseline of one speed sample
    speed_settle_s: float = 0.2            # a new speed is trusted once its samples span this long
    speed_change_rel: float = 0.05         # smallest relative jump taken as a speed change
    speed_max_age_s: float = 1.0           # no speed sample for longer: the speed is not trusted
    speed_err_frac: float = 0.5            # share of a gate window's slack the speed error may use
    encoder_mm_per_count: float | None = None   # belt encoder step when frames carry meta["belt_mm"]
    decision_x_mm: float = 300.0
    # commit this long before the first gate's commit deadline rather than at the decision line
    # (None: at the decision line): fewer commands are in flight when the belt speed changes, and a
    # speed change seen before the commit is already in the timing
    commit_lead_s: float | None = 0.3
    gate_distance_mm: dict[int, float] = field(default_factory=lambda: {1: 700.0, 2: 800.0})
    lanes: dict[str, int] = field(default_factory=lambda: {"good": 1, "damaged": 2})
    actuation_s: float = 0.10              # servo travel time
    margin_s: float = 0.05
    # evidence
    min_votes: int = 2
    min_confidence: float = 0.75
    min_margin: float = 0.3               # top-1 minus top-2 of the mean vote probabilities
    min_agreement: float = 0.75           # share of votes whose own top class is the combined one
    max_object_len_mm: float = 95.0
    min_solidity: float = 0.85
    min_gap_mm: float | None = None        # None: belt_speed * (actuation + 2 margin)
    max_missed_frames: int = 1
    assoc_gate_mm: float = 45.0
    min_sightings: int = 3                 # frames a record needs before it may take a lane
    twin_window_s: float = 0.5             # a phantom record merges into a twin at most v * this away
    frame_time_tol_s: float | None = None  # content vs stamp tolerance; None: 0.4 / fps
    # localization
    bg_threshold: int = 30
    min_area_px: int = 20
    warmup_frames: int = 5
    crop_pad_px: int = 3
    black_level: float = 12.0
    # runner
    frames_queue: int = 1                  # live camera: keep only the freshest frame
    frames_policy: str = "drop_oldest"
    results_queue: int = 8
    results_policy: str = "block"
    tick_s: float = 0.02
    stall_timeout_s: float = 0.5

    def __post_init__(self) -> None:
        self.gate_distance_mm = {int(k): float(v) for k, v in self.gate_distance_mm.items()}
        self.lanes = {str(k): int(v) for k, v in self.lanes.items()}
        for cls, g in self.lanes.items():
            if g not in self.gate_distance_mm:
                raise ConfigError(f"lanes[{cls!r}] = gate {g}, but gate_distance_mm has only "
                                  f"{sorted(self.gate_distance_mm)}; add its distance or fix the lane")
        if self.belt_speed_mm_s <= 0:
            raise ConfigError(f"belt_speed_mm_s must be > 0, got {self.belt_speed_mm_s}")
        if min(self.gate_distance_mm.values()) <= self.decision_x_mm:
            raise ConfigError(f"decision_x_mm={self.decision_x_mm} must lie upstream of every gate "
                              f"{self.gate_distance_mm}")
        if self.decision_x_mm < self.gap_mm + self.max_object_len_mm:
            raise ConfigError(
                f"decision_x_mm={self.decision_x_mm} is too close to the image entry: a neighbour within the "
                f"minimum gap ({self.gap_mm:.0f} mm) could still be unseen when an object is decided. "
                f"Move the decision line to >= {self.gap_mm + self.max_object_len_mm:.0f} mm")
        if self.min_sightings < 1 or self.speed_window_s <= 0 or self.speed_settle_s <= 0 or not (
                0 < self.speed_change_rel < 1) or self.speed_max_age_s <= 0 or not 0 < self.speed_err_frac <= 1:
            raise ConfigError(f"min_sightings={self.min_sightings} must be >= 1, speed_window_s="
                              f"{self.speed_window_s}, speed_settle_s={self.speed_settle_s} and speed_max_age_s="
                              f"{self.speed_max_age_s} > 0, speed_change_rel={self.speed_change_rel} in (0, 1), "
                              f"speed_err_frac={self.speed_err_frac} in (0, 1]")
        if self.staleness_budget_s(self.link_floor_s) <= 0:
            raise ConfigError("no time left between the decision line and the first gate at this belt speed; "
                              "move the gates downstream, the decision line upstream, or slow the belt")

    link_floor_s: float = 0.01

    @property
    def time_tol_s(self) -> float:
        """How far a frame's content may disagree with its stamp (in seconds of belt motion)."""
        return self.frame_time_tol_s if self.frame_time_tol_s is not None else 0.4 / self.fps

    @property
    def gap_mm(self) -> float:
        """Minimum edge-to-edge gap for two objects to be routed independently."""
        if self.min_gap_mm is not None:
            return self.min_gap_mm
        return self.belt_speed_mm_s * (self.actuation_s + 2 * self.margin_s)

    def staleness_budget_s(self, link_p99_s: float, speed_mm_s: float | None = None) -> float:
        """Oldest a frame may be and still decide an object at the decision line on time."""
        v = speed_mm_s or self.belt_speed_mm_s
        d = min(self.gate_distance_mm.values()) - self.decision_x_mm - self.max_object_len_mm / 2
        return d / v - self.actuation_s - link_p99_s - self.margin_s

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = "<dict>") -> "LineConfig":
        check_config_keys(cls, d, source)
        return cls(**d)

    @classmethod
    def from_yaml(cls, path: str | Path) -> "LineConfig":
        import yaml

        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"line config {p} does not exist; write one (see docs/protocol.md) or omit --config")
        d = yaml.safe_load(p.read_text()) or {}
        if not isinstance(d, dict):
            raise ConfigError(f"{p}: expected a mapping of line settings, got {type(d).__name__}")
        return cls.from_dict(d, str(p))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
