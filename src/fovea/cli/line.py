"""`fovea line run` (camera -> model -> gates) and `fovea line replay` (summarise an event log)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from fovea.errors import ConfigError


def _predictor(model: str, source_spec: str, clock, seed: int, adapter: str | None = None):
    if model == "oracle":
        if not source_spec.startswith("synth:"):
            raise ConfigError("--model oracle is a ground-truth test double and needs a synth: source; "
                              "pass a trained classifier checkpoint for a real camera")
        from fovea.line.doubles import OraclePredictor

        return OraclePredictor(clock=clock, seed=seed)
    if not Path(model).exists():
        raise ConfigError(f"model {model} does not exist; pass a checkpoint folder, .pt or .onnx of any task "
                          "(classifier, anomaly model, segmenter), or `oracle` for the synthetic test double")
    import fovea
    from fovea.line.adapters import AdaptedPredictor, load_adapter

    return AdaptedPredictor(fovea.load_predictor(model), load_adapter(adapter) if adapter else None)


@click.group("line")
def line() -> None:
    """Run a sorting line (camera -> model -> one decision per object -> gates) and replay its log."""


@line.command("run")
@click.option("--source", default="synth:apples", show_default=True,
              help="synth:apples, a video file, an image folder, a camera index or an rtsp:// URL")
@click.option("--model", default="oracle", show_default=True,
              help="checkpoint folder/.pt/.onnx of any task (fovea.load_predictor), or 'oracle' (synthetic test double)")
@click.option("--adapter", "adapter_path", type=click.Path(dir_okay=False), default=None,
              help="YAML lane rule for the model (kind: class|anomaly|segmentation + options, see "
                   "fovea.line.adapters); default: picked from the model's result type")
@click.option("--actuator", default="sim", show_default=True, help="sim | serial:PORT (e.g. serial:/dev/ttyACM0)")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None, help="line.yaml")
@click.option("--events", "events_path", type=click.Path(dir_okay=False), default="line_events.jsonl",
              show_default=True, help="append-only JSON-lines event log")
@click.option("--video", type=click.Path(dir_okay=False), default=None, help="write an annotated video here")
@click.option("--clock", type=click.Choice(["auto", "sim", "real"]), default="auto", show_default=True,
              help="sim: simulated time, as fast as possible (synth source + sim actuator only)")
@click.option("--n-objects", default=200, show_default=True, type=int, help="items on the synthetic belt")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--max-seconds", default=None, type=float, help="stop after this much (line) time")
def run(source, model, adapter_path, actuator, config_path, events_path, video, clock, n_objects, seed,
        max_seconds) -> None:
    """Run the line until the source ends, then print the run report."""
    from fovea.line.actuators import SerialActuator, SimulatedActuator
    from fovea.line.annotate import LineAnnotator
    from fovea.line.audit import audit
    from fovea.line.clock import RealClock, SimClock
    from fovea.line.config import LineConfig
    from fovea.line.events import EventLog, format_summary, summarize
    from fovea.line.runner import LineRunner
    from fovea.line.sources import ConveyorSource, open_source

    synth = source.startswith("synth:")
    if clock == "auto":
        clock = "sim" if synth and actuator == "sim" else "real"
    if clock == "sim" and not (synth and actuator == "sim"):
        raise ConfigError("--clock sim needs --source synth:apples and --actuator sim; real cameras and boards run "
                          "on the real clock")
    clk = SimClock() if clock == "sim" else RealClock()
    conv_cfg = None
    if synth:
        from fovea.synth.conveyor import ConveyorConfig

        conv_cfg = ConveyorConfig(n_objects=n_objects, seed=seed, appearance="realistic")
        cfg_kw = dict(mm_per_px=conv_cfg.mm_per_px, fps=conv_cfg.fps, belt_speed_mm_s=conv_cfg.belt_speed_mm_s)
    else:
        cfg_kw = {}
    cfg = LineConfig.from_yaml(config_path) if config_path else LineConfig(**cfg_kw)
    Path(events_path).parent.mkdir(parents=True, exist_ok=True)
    log = EventLog(events_path, keep=True)
    src = open_source(source, clock=clk, conveyor_config=conv_cfg)
    if isinstance(src, ConveyorSource):
        src.n_frames = int(src.conveyor.duration_s(max(cfg.gate_distance_mm.values()) + 200) * src.fps) + 1
    if actuator == "sim":
        act = SimulatedActuator(clock=clk, emit=log.emit)
    elif actuator.startswith("serial:"):
        act = SerialActuator(actuator.split(":", 1)[1], clock=clk, emit=log.emit)
    else:
        raise ConfigError(f"--actuator {actuator!r}: use sim or serial:PORT (serial:/dev/ttyACM0, serial:COM3, "
                          "serial:socket://host:port)")
    ann = LineAnnotator(video, getattr(src, "fps", cfg.fps), cfg.mm_per_px, cfg.decision_x_mm, cfg.x0_mm) if video else None
    predictor = _predictor(model, source, clk, seed, adapter_path)
    if hasattr(predictor, "check_lanes"):
        predictor.check_lanes(cfg.lanes)
    runner = LineRunner(src, predictor, act, cfg, clock=clk, log=log, annotator=ann)
    log.emit(clk.now(), "run_start", source=source, model=model, actuator=actuator, clock=clock,
             config=cfg.to_dict())
    if clock == "sim":
        runner.run_simulated(max_time_s=max_seconds)
    else:
        runner.run_threaded(max_time_s=max_seconds)
    log.close()
    click.echo(format_summary(summarize(log.events)))
    if synth and actuator == "sim":
        src.start()
        rep = audit(src.conveyor, src.t0, act.emulator.swings, cfg, runner.finished)
        click.echo("\n".join(["physical audit:"] + rep.lines()))
    click.echo(f"events: {events_path}" + (f"  video: {video}" if video else ""))


@line.command("replay")
@click.argument("events", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="print the summary as JSON")
def replay(events, as_json) -> None:
    """Summarise a run from its JSON-lines event log."""
    from fovea.line.events import format_summary, read_events, summarize

    s = summarize(read_events(events))
    click.echo(json.dumps(s, indent=1) if as_json else format_summary(s))
