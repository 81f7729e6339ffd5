"""`fovea serve`: the inference server, line control and dashboard (FastAPI + uvicorn).

    fovea serve --model parts=runs/patchcore --model sorter=runs/cls/export/model.onnx --port 8000

Then open http://127.0.0.1:8000/ (dashboard), /docs (OpenAPI), POST images to
/api/predict/NAME. Model paths come only from this command line; requests name a model.
"""

from __future__ import annotations

import click


@click.command("serve")
@click.option("--model", "models", multiple=True, metavar="NAME=PATH",
              help="A model to serve (repeatable): checkpoint folder, .pt or .onnx of any task.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on (0.0.0.0: all).")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535))
@click.option("--api-key", envvar="FOVEA_API_KEY", default=None,
              help="Require this key (header X-API-Key or ?key=) on the API, streams and reports "
                   "(env FOVEA_API_KEY).")
@click.option("--max-body-mb", default=32.0, show_default=True, type=click.FloatRange(min=0.001),
              help="Largest request body; bigger ones get 413.")
@click.option("--max-pixels", default=40_000_000, show_default=True, type=click.IntRange(min=1),
              help="Largest image (width x height, read from the header before decoding); bigger: 413.")
@click.option("--max-batch", default=8, show_default=True, type=click.IntRange(min=1),
              help="Images per model call (micro-batching).")
@click.option("--max-wait-ms", default=5.0, show_default=True, type=click.FloatRange(min=0.0),
              help="How long the first image of a batch waits for company.")
@click.option("--max-queue", default=64, show_default=True, type=click.IntRange(min=1),
              help="Images waiting per model; beyond it requests get 429 with Retry-After.")
@click.option("--reports", "reports_dir", type=click.Path(file_okay=False, exists=True), default=None,
              help="Folder of past runs whose report.html files the dashboard lists.")
def serve(models, host, port, api_key, max_body_mb, max_pixels, max_batch, max_wait_ms, max_queue,
          reports_dir) -> None:
    """Serve models of any task over HTTP, run and watch the line, and show the dashboard at /."""
    from fovea.serve.app import ServeConfig, create_app
    from fovea.serve.registry import parse_model_spec
    from fovea.serve.server import make_server

    specs = dict(parse_model_spec(s) for s in models)
    if len(specs) != len(models):
        raise click.BadParameter("two --model options use the same NAME", param_hint="--model")
    cfg = ServeConfig(api_key=api_key, max_body_bytes=int(max_body_mb * (1 << 20)), max_pixels=max_pixels,
                      max_batch=max_batch, max_wait_ms=max_wait_ms, max_queue=max_queue, reports_dir=reports_dir)
    app = create_app(specs, cfg)
    if host not in ("127.0.0.1", "localhost", "::1") and not api_key:
        click.echo(f"warning: listening on {host} without --api-key: anyone on the network can start the line",
                   err=True)
    click.echo(f"fovea serve: {len(specs)} model(s) {sorted(specs)}; dashboard http://{host}:{port}/  "
               f"API docs http://{host}:{port}/docs", err=True)
    make_server(app, host=host, port=port).run()
