"""`fovea synth NAME OUT ...`: write a procedural data set. Each generator owns its command."""

from __future__ import annotations

import click

from fovea.cli.main import LazyGroup

GENERATORS: dict[str, str] = {
    "bricks": "fovea.synth.bricks:cli",
    "textures": "fovea.synth.textures:cli",
    "apples": "fovea.synth.apples:cli",
    "conveyor": "fovea.synth.conveyor:cli",
    "chessboard": "fovea.synth.chessboard:cli",
    "sea": "fovea.synth.sea:cli",
}


@click.group(cls=LazyGroup, lazy=GENERATORS)
def synth() -> None:
    """Generate deterministic synthetic data sets (every generator takes --seed)."""
