"""`fovea synth NAME OUT ...`: write a procedural data set with one of the generators in `fovea.synth`.

The generator modules hold only pure functions; their commands live here. Each command imports
heavier generator (apples, conveyor, chessboard, sea) when it runs, so `fovea synth --help` stays fast.
"""

from __future__ import annotations

from pathlib import Path

import click

from fovea.errors import ConfigError
from fovea.synth.bricks import CATEGORIES as BRICK_CATEGORIES  # numpy + cv2 only: cheap to import
from fovea.synth.textures import TEXTURES


@click.group("synth")
def synth() -> None:
    """Generate deterministic synthetic data sets (every generator takes --seed)."""


@synth.command("bricks")
@click.argument("out", type=click.Path(file_okay=False, path_type=Path))
@click.option("--category", type=click.Choice([*BRICK_CATEGORIES, "all"]), default="one_up", show_default=True,
              help="k_up: the first k bricks are turned 90 degrees in the correct configuration; "
                   "'all' writes all four.")
@click.option("--n-train", type=int, default=60, show_default=True, help="Normal training images.")
@click.option("--n-test-good", type=int, default=20, show_default=True, help="Normal test images.")
@click.option("--n-test-bad", type=int, default=30, show_default=True,
              help="Anomalous test images, cycling through rot30, rot45, rot60 (with masks).")
@click.option("--size", type=int, default=256, show_default=True, help="Square image side in pixels.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed; same seed -> identical files.")
def bricks_cmd(out: Path, category: str, n_train: int, n_test_good: int, n_test_bad: int, size: int,
               seed: int) -> None:
    """Write the bricks inspection data set to OUT/<category>/ in the MVTec AD layout."""
    from fovea.synth.bricks import generate_bricks

    for c in BRICK_CATEGORIES if category == "all" else (category,):
        path = generate_bricks(out, c, n_train, n_test_good, n_test_bad, size, seed)
        click.echo(f"wrote {n_train} train, {n_test_good} good + {n_test_bad} anomalous test images -> {path}")


@synth.command("textures")
@click.argument("out", type=click.Path(file_okay=False, path_type=Path))
@click.option("--texture", type=click.Choice([*TEXTURES, "all"]), default="brick", show_default=True,
              help="scikit-image photograph to crop ('all' writes the three).")
@click.option("--n-train", type=int, default=60, show_default=True, help="Normal training crops.")
@click.option("--n-test-good", type=int, default=20, show_default=True, help="Normal test crops.")
@click.option("--n-test-bad", type=int, default=30, show_default=True,
              help="Anomalous test crops, cycling through scratch, stain, patch (with masks).")
@click.option("--size", type=int, default=256, show_default=True, help="Square image side in pixels.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed; same seed -> identical files.")
def textures_cmd(out: Path, texture: str, n_train: int, n_test_good: int, n_test_bad: int, size: int,
                 seed: int) -> None:
    """Write texture anomaly data (real scikit-image photographs, synthetic defects) to OUT/<texture>/."""
    from fovea.synth.textures import generate_textures

    for tex in TEXTURES if texture == "all" else (texture,):
        path = generate_textures(out, tex, n_train, n_test_good, n_test_bad, size, seed)
        click.echo(f"wrote {n_train} train, {n_test_good} good + {n_test_bad} anomalous test crops -> {path}")


@synth.command("apples")
@click.argument("out", type=click.Path(file_okay=False))
@click.option("--kind", type=click.Choice(["crops", "scenes"]), default="crops", show_default=True,
              help="crops: classification folders good/damaged; scenes: images + class-index masks.")
@click.option("--n", "n", type=int, default=100, show_default=True,
              help="crops: images per class (over all splits); scenes: number of scenes.")
@click.option("--size", type=int, default=None, help="Image side in px [crops 128, scenes 256].")
@click.option("--seed", type=int, default=0, show_default=True)
def apples_cmd(out: str, kind: str, n: int, size: int | None, seed: int) -> None:
    """Synthetic apples, good and damaged (bruise, spot, cut), deterministic by --seed."""
    from fovea.synth.apples import generate_apple_crops, generate_apple_scenes

    if kind == "crops":
        path = generate_apple_crops(out, n_per_class=n, size=size or 128, seed=seed)
    else:
        path = generate_apple_scenes(out, n=n, size=size or 256, seed=seed)
    click.echo(f"wrote {kind} to {path}")


@synth.command("conveyor")
@click.argument("out", type=click.Path(file_okay=False))
@click.option("--n-objects", default=50, show_default=True, type=int)
@click.option("--width", default=640, show_default=True, type=int)
@click.option("--height", default=480, show_default=True, type=int)
@click.option("--fps", default=30.0, show_default=True, type=float)
@click.option("--belt-speed", default=400.0, show_default=True, type=float, help="mm/s")
@click.option("--p-touching", default=0.0, show_default=True, type=float)
@click.option("--appearance", type=click.Choice(["realistic", "simple"]), default="realistic", show_default=True)
@click.option("--seed", default=0, show_default=True, type=int)
def conveyor_cmd(out, n_objects, width, height, fps, belt_speed, p_touching, appearance, seed) -> None:
    """Render a synthetic conveyor video (OUT/conveyor.mp4) and its ground truth (OUT/truth.jsonl)."""
    from fovea.synth.conveyor import ConveyorConfig, write_conveyor_video

    cfg = ConveyorConfig(width_px=width, height_px=height, mm_per_px=400.0 / width, fps=fps,
                         belt_speed_mm_s=belt_speed, n_objects=n_objects, p_touching=p_touching,
                         appearance=appearance, seed=seed)
    video, truth = write_conveyor_video(out, cfg)
    click.echo(f"wrote {video} and {truth}")


@synth.command("chessboard")
@click.argument("out_dir", type=click.Path(file_okay=False))
@click.option("--views", default=20, show_default=True, help="number of board views")
@click.option("--board", default="9x6", show_default=True, help="inner corners COLSxROWS")
@click.option("--square-mm", default=25.0, show_default=True)
@click.option("--seed", default=0, show_default=True)
def chessboard_cmd(out_dir: str, views: int, board: str, square_mm: float, seed: int) -> None:
    """Render chessboard calibration views with known intrinsics, distortion and poses."""
    from fovea.synth.chessboard import BoardSpec, render_calibration_views, save_renders

    try:
        cols, rows = (int(v) for v in board.lower().split("x"))
    except ValueError:
        raise ConfigError(f"--board {board!r} is not COLSxROWS. Fix: e.g. --board 9x6") from None
    renders = render_calibration_views(views, seed, board=BoardSpec(cols, rows, square_mm))
    click.echo(f"wrote {views} views and truth.json to {save_renders(renders, out_dir)}")


@synth.command("sea")
@click.argument("out_dir", type=click.Path(file_okay=False))
@click.option("--images", default=4, show_default=True)
@click.option("--altitude-m", default=120.0, show_default=True)
@click.option("--spread", default=1.0, show_default=True, help=">1: the same spill later (larger, thinner)")
@click.option("--seed", default=0, show_default=True)
@click.option("--spill-seed", default=None, type=int, help="keep the spill fixed across surveys")
def sea_cmd(out_dir, images, altitude_m, spread, seed, spill_seed) -> None:
    """Render a synthetic drone survey of an oil spill (sheen, rainbow, true colour) with truth."""
    from fovea.synth.sea import DroneCamera, render_survey, save_survey

    cam = DroneCamera.default()
    views = render_survey(images, seed, altitude_m, cam, spread, spill_seed)
    click.echo(f"wrote {len(views)} views to {save_survey(views, cam, out_dir)}")
