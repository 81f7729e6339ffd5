"""The `fovea` command. Sub-commands live in their own modules and load lazily, so `fovea --help`
is fast and one area's import cost (torch, OpenCV) is paid only when that area runs."""

from __future__ import annotations

import importlib
import os
import sys

import click

from fovea.errors import FoveaError

# name -> "module:attribute" of a click command or group; each area owns its module.
COMMANDS: dict[str, str] = {
    "demo": "fovea.cli.demo:demo",
    "synth": "fovea.cli.synth:synth",
    "anomaly": "fovea.cli.anomaly:anomaly",
    "classify": "fovea.cli.classify:classify",
    "segment": "fovea.cli.segment:segment",
    "line": "fovea.cli.line:line",
    "geometry": "fovea.cli.geometry:geometry",
    "calibrate": "fovea.cli.geometry:calibrate",  # hidden aliases of `fovea geometry ...`
    "stereo": "fovea.cli.geometry:stereo",
    "measure": "fovea.cli.geometry:measure",
    "oilspill": "fovea.cli.oilspill:oilspill",
    "caption": "fovea.cli.caption:caption",
    "forgery": "fovea.cli.forgery:forgery",
    "serve": "fovea.cli.serve:serve",
    "predict": "fovea.cli.predict:predict",
    "spatial": "fovea.cli.spatial:spatial",
    "label": "fovea.cli.label:label",
    "vl": "fovea.cli.label:vl",
    "video": "fovea.cli.video:video",
}


def load_command(spec: str) -> click.Command:
    """Import "module:attr". Every listed module is part of fovea, so an ImportError is a bug and is raised."""
    module, attr = spec.split(":")
    return getattr(importlib.import_module(module), attr)


class LazyGroup(click.Group):
    """A click group whose sub-commands are imported only when used."""

    def __init__(self, *args, lazy: dict[str, str] | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.lazy = lazy or {}

    def list_commands(self, ctx):
        names = set(super().list_commands(ctx))
        names.update(self.lazy)
        return sorted(names)

    def get_command(self, ctx, name):
        cmd = super().get_command(ctx, name)
        if cmd is None and name in self.lazy:
            cmd = load_command(self.lazy[name])
        return cmd


@click.group(cls=LazyGroup, lazy=COMMANDS, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="fovea")
@click.option("--threads", type=click.IntRange(min=1), default=None, envvar="FOVEA_THREADS",
              help="CPU threads for every command, at most (default: torch's choice, one per core; env FOVEA_THREADS).")
@click.option("--thread-policy", type=click.Choice(["adaptive", "fixed"]), default=None, envvar="FOVEA_THREAD_POLICY",
              help="adaptive (default): predict uses only the cores other processes leave free, up to --threads; "
                   "fixed: always --threads (env FOVEA_THREAD_POLICY).")
def cli(threads: int | None, thread_policy: str | None) -> None:
    """fovea: computer-vision inspection from a camera or a folder of images to a decision."""
    if thread_policy is not None:
        os.environ["FOVEA_THREAD_POLICY"] = thread_policy
    if threads is not None:
        set_threads(threads)


def set_threads(n: int) -> None:
    """Use at most n intra-op threads: through OMP_NUM_THREADS and FOVEA_THREADS (the predict governor's cap,
    `fovea.engine.threads`) if torch is not loaded yet, else directly."""
    os.environ["OMP_NUM_THREADS"] = os.environ["FOVEA_THREADS"] = str(n)
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(n)
    if "fovea.engine.threads" in sys.modules:
        sys.modules["fovea.engine.threads"].set_policy(cap=n)


def main(argv: list[str] | None = None) -> int:
    """Console entry point: FoveaErrors print their message (which names the fix), exit code 2."""
    try:
        cli.main(args=argv, standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        return 130
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except FoveaError as exc:
        click.echo(f"error: {exc}", err=True)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
