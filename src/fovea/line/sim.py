"""One-call simulated line runs on the synthetic conveyor (tests, the 10,000-object run, the CLI).

`simulate()` wires SimClock + ConveyorSource + localizer + predictor + SimulatedActuator (the
firmware emulator on the same clock) + LineRunner, runs until every record is settled, and
audits the result physically. Fault hooks are scheduled on the simulated clock; falsified
frames (`source_faults`, see `doubles.FaultySource`) and lost or delayed link lines
(`link_faults`, see `doubles.LineFault`) wrap the real source and the emulator's port.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from fovea.line.actuators import LinkConfig, SimulatedActuator
from fovea.line.audit import AuditReport, audit
from fovea.line.clock import SimClock
from fovea.line.config import LineConfig
from fovea.line.doubles import FaultyLink, FaultySource, OraclePredictor
from fovea.line.events import EventLog, summarize
from fovea.line.runner import LineRunner
from fovea.line.sources import ConveyorSource


@dataclass
class SimResult:
    runner: LineRunner
    actuator: SimulatedActuator
    source: ConveyorSource
    log: EventLog
    audit: AuditReport
    summary: dict[str, Any]


def line_config_for(conveyor_config, **overrides) -> LineConfig:
    """A LineConfig matching a conveyor's camera geometry and nominal belt speed."""
    kw = dict(mm_per_px=conveyor_config.mm_per_px, fps=conveyor_config.fps,
              belt_speed_mm_s=conveyor_config.belt_speed_mm_s)
    kw.update(overrides)
    return LineConfig(**kw)


def attach_line_faults(actuator, clock, rules) -> None:
    """Lose/delay link lines by `doubles.LineFault` rules: through the emulator link's own fault hook
    (`EmulatorLink.faults.line_filter`) when it has one, else by wrapping the port in `FaultyLink`."""
    port = actuator.link_port
    hooks = getattr(port, "faults", None)
    if hooks is not None and hasattr(hooks, "line_filter"):
        def line_filter(direction: str, line: str, t: float):
            for r in rules:
                if r.direction == direction and r.applies(line, t):
                    return "drop" if r.action == "drop" else r.delay_s
            return None

        hooks.line_filter = line_filter
    else:
        actuator.link_port = FaultyLink(port, clock, rules)    # the port factory reads link_port


def simulate(conveyor, config: LineConfig | None = None, predictor=None, localizer=None,
             source_kw: dict | None = None, faults: list[tuple[float, Callable]] | None = None,
             link: LinkConfig | None = None, log_path=None, keep_events: bool = True,
             predictor_kw: dict | None = None, annotator=None, max_time_s: float | None = None,
             source_faults: dict | None = None, link_faults: list | None = None, watchdog_ms: int = 500,
             actuator_seed: int = 0) -> SimResult:
    """Run the whole line on simulated time. faults: [(t, fn(ctx))] with ctx = dict(clock, actuator, runner,
    source). A run that has not settled after `max_time_s` simulated seconds is stopped (the runner logs
    `run_time_limit`)."""
    clock = SimClock()
    cfg = config or line_config_for(conveyor.config)
    log = EventLog(log_path, keep=keep_events)
    source = ConveyorSource(conveyor, clock=clock, x_end_mm=max(cfg.gate_distance_mm.values()) + 200,
                            **(source_kw or {}))
    if source_faults:
        source = FaultySource(source, **source_faults)
    predictor = predictor or OraclePredictor(clock=clock, **(predictor_kw or {}))
    act = SimulatedActuator(clock=clock, emit=log.emit, config=link, watchdog_ms=watchdog_ms, seed=actuator_seed)
    if link_faults:
        attach_line_faults(act, clock, link_faults)
    runner = LineRunner(source, predictor, act, cfg, localizer=localizer, clock=clock, log=log, annotator=annotator)
    ctx = {"clock": clock, "actuator": act, "runner": runner, "source": source}
    for t, fn in faults or []:
        clock.call_at(t, lambda fn=fn: fn(ctx))
    runner.run_simulated(max_time_s=max_time_s)
    log.close()
    source.start()
    rep = audit(conveyor, source.t0, act.emulator.swings, cfg, runner.finished,
                events=log.events if keep_events else None)
    return SimResult(runner, act, source, log, rep, summarize(log.events) if keep_events else {})
