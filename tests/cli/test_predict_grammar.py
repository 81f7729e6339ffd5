"""One CLI grammar for every learnt task: the same verbs, `train` a hidden alias of `fit`, one
predictions.jsonl schema, --skip-bad that counts and lists, progress bars silent off a terminal.

Predictions are checked against tests/fixtures/legacy/expected.json: what the pre-task-layer code
(commit a0adeaf) predicted for the same checkpoints and images, an independent reference.
"""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import click
import numpy as np
import pytest
from click.testing import CliRunner

from fovea.cli.main import COMMANDS, LazyGroup, cli, load_command, main
from fovea.cli.progress import progress_bar

LEGACY = Path(__file__).resolve().parents[1] / "fixtures" / "legacy"
EXPECTED = json.loads((LEGACY / "expected.json").read_text())
MODELS = {"anomaly": LEGACY / "anomaly_patchcore", "classify": LEGACY / "classify", "segment": LEGACY / "segment"}
TASKS = tuple(MODELS)


def _lines(path: Path) -> list[dict]:
    return [json.loads(s) for s in path.read_text().splitlines()]


def _group(task: str) -> click.Group:
    return load_command(COMMANDS[task])


@pytest.mark.parametrize("task", TASKS)
def test_every_task_has_the_same_verbs(task):
    group = _group(task)
    visible = {name for name, cmd in group.commands.items() if not cmd.hidden}
    assert {"fit", "test", "predict", "export"} <= visible
    assert "train" not in visible
    help_text = CliRunner().invoke(cli, [task, "--help"]).output
    for verb in ("fit", "test", "predict", "export"):
        assert f"  {verb} " in help_text or f"  {verb}\n" in help_text, help_text
    assert "  train" not in help_text


@pytest.mark.parametrize("task", ["classify", "segment"])
def test_train_is_a_hidden_alias_of_fit(task):
    group = _group(task)
    alias, fit = group.commands["train"], group.commands["fit"]
    assert alias.hidden and alias.callback is fit.callback
    assert [p.name for p in alias.params] == [p.name for p in fit.params]
    assert "--skip-bad" in CliRunner().invoke(cli, [task, "train", "--help"]).output


def _check_against_legacy(task: str, lines: list[dict]) -> None:
    """Each line's result equals what the pre-task-layer code predicted for that image."""
    key = "anomaly_patchcore" if task == "anomaly" else task
    assert sorted(Path(ln["image"]).name for ln in lines) == sorted(EXPECTED[key])
    for ln in lines:
        ref, res = EXPECTED[key][Path(ln["image"]).name], ln["result"]
        if task == "anomaly":
            assert res["score"] == pytest.approx(ref["score"], abs=1e-4) and res["label"] == ref["label"]
        elif task == "classify":
            assert res["probs"] == pytest.approx(ref["probs"], abs=1e-4)
            assert res["class_id"] == int(np.argmax(ref["probs"]))
        else:
            ref_map = np.asarray(ref["class_map"])
            names = res["class_names"]
            counts = np.bincount(ref_map.ravel(), minlength=len(names))
            got = np.array([res["pixel_counts"][n] for n in names])
            assert got.sum() == ref_map.size
            assert np.abs(got - counts).sum() <= 0.01 * ref_map.size  # a few border pixels may flip


@pytest.mark.parametrize("task", TASKS)
def test_predict_writes_one_schema_for_every_task(task, tmp_path):
    out = tmp_path / "pred"
    rc = main([task, "predict", str(MODELS[task]), str(LEGACY / "images"), "--out", str(out)])
    assert rc == 0
    lines = _lines(out / "predictions.jsonl")
    assert len(lines) == 3
    for ln in lines:
        assert set(ln) == {"task", "image", "result"}
        assert ln["task"] == task and ln["result"]["kind"] == task
        assert ln["result"]["image_path"] == ln["image"]
    _check_against_legacy(task, lines)


@pytest.mark.parametrize("task", TASKS)
def test_predict_with_an_exported_model_gives_the_legacy_answers(task, tmp_path):
    exported = LEGACY / "exports" / f"{'anomaly_patchcore' if task == 'anomaly' else task}.onnx"
    out = tmp_path / "pred"
    assert main([task, "predict", str(exported), str(LEGACY / "images" / "*.png"), "--out", str(out)]) == 0
    _check_against_legacy(task, _lines(out / "predictions.jsonl"))


@pytest.fixture()
def with_bad_files(tmp_path) -> Path:
    """The three fixture images plus an empty file, a text file named .png and a truncated PNG."""
    d = tmp_path / "mixed"
    shutil.copytree(LEGACY / "images", d)
    (d / "empty.png").write_bytes(b"")
    (d / "notes.png").write_text("this is not an image")
    data = (LEGACY / "images" / "img0.png").read_bytes()
    (d / "truncated.png").write_bytes(data[: len(data) // 2])  # header fine, pixel data cut
    return d


@pytest.mark.parametrize("task", TASKS)
def test_skip_bad_counts_and_lists_every_bad_file(task, with_bad_files, tmp_path, capsys):
    out = tmp_path / "pred"
    assert main([task, "predict", str(MODELS[task]), str(with_bad_files), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "empty.png" in err and "--skip-bad" in err  # stops at the first bad file, naming it
    assert main([task, "predict", str(MODELS[task]), str(with_bad_files), "--out", str(out), "--skip-bad"]) == 0
    text = capsys.readouterr().out
    assert "skipped 3 unreadable file(s)" in text
    for name in ("empty.png", "notes.png", "truncated.png"):
        assert str(with_bad_files / name) in text
    _check_against_legacy(task, _lines(out / "predictions.jsonl"))


def test_predict_refuses_a_model_of_another_task(tmp_path, capsys):
    assert main(["classify", "predict", str(MODELS["segment"]), str(LEGACY / "images"), "--out",
                 str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "'segment'" in err and "fovea segment" in err


def test_progress_is_silent_when_stderr_is_not_a_terminal():
    pipe = io.StringIO()  # isatty() is False, like a log file or CI capture
    with progress_bar(pipe) as progress:
        for i in range(5):
            progress("predict", i + 1, 5)
    assert pipe.getvalue() == ""

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    term = Terminal()
    with progress_bar(term) as progress:
        for i in range(5):
            progress("predict", i + 1, 5)
    assert "predict" in term.getvalue() and "5/5" in term.getvalue()


def test_cli_predict_prints_no_progress_to_a_captured_stderr(tmp_path):
    res = CliRunner().invoke(cli, ["classify", "predict", str(MODELS["classify"]), str(LEGACY / "images"),
                                   "--out", str(tmp_path)])
    assert res.exit_code == 0, res.output
    assert res.stderr == ""


def test_a_missing_in_repo_command_module_is_an_error_not_a_hidden_command():
    group = LazyGroup(lazy={"ghost": "fovea.cli.no_such_module:ghost"})
    assert "ghost" in group.list_commands(click.Context(group))
    with pytest.raises(ModuleNotFoundError):
        group.get_command(click.Context(group), "ghost")


def test_synth_commands_live_in_the_cli(tmp_path):
    assert main(["synth", "chessboard", str(tmp_path / "cb"), "--views", "2", "--seed", "1"]) == 0
    assert len(list((tmp_path / "cb").rglob("*.png"))) == 2 and (tmp_path / "cb" / "truth.json").is_file()
    assert main(["synth", "sea", str(tmp_path / "sea"), "--images", "1"]) == 0
    assert len(list((tmp_path / "sea" / "images").glob("*.png"))) == 1


def test_test_commands_skip_and_list_bad_files(tmp_path, capsys):
    """classify test and segment test on labelled folders with one unreadable image (no training)."""
    import cv2

    from fovea.io import read_image

    classes = tmp_path / "classes"
    for i, name in enumerate(["good", "scratch", "dent"]):
        (classes / name).mkdir(parents=True)
        shutil.copy(LEGACY / "images" / f"img{i}.png", classes / name / f"img{i}.png")
    (classes / "dent" / "broken.png").write_bytes(b"")
    args = ["classify", "test", str(MODELS["classify"]), str(classes), "--out", str(tmp_path / "ct")]
    assert main(args) == 2 and "broken.png" in capsys.readouterr().err
    assert main(args + ["--skip-bad"]) == 0
    assert str(classes / "dent" / "broken.png") in capsys.readouterr().out
    metrics = json.loads((tmp_path / "ct" / "metrics.json").read_text())
    assert metrics["n"] == 3 and metrics["skipped_files"] == 1

    seg = tmp_path / "seg"
    for d in ("images", "masks"):
        (seg / d).mkdir(parents=True)
    for i in range(3):
        img = read_image(LEGACY / "images" / f"img{i}.png")
        cv2.imwrite(str(seg / "images" / f"img{i}.png"), img[..., ::-1])
        cv2.imwrite(str(seg / "masks" / f"img{i}.png"), np.zeros(img.shape[:2], np.uint8))
    (seg / "images" / "img3.png").write_text("not an image")
    cv2.imwrite(str(seg / "masks" / "img3.png"), np.zeros((8, 8), np.uint8))
    (seg / "classes.json").write_text(json.dumps({"classes": ["background", "apple", "leaf"]}))
    args = ["segment", "test", str(MODELS["segment"]), str(seg), "--out", str(tmp_path / "st")]
    assert main(args) == 2 and "img3.png" in capsys.readouterr().err
    assert main(args + ["--skip-bad"]) == 0
    assert str(seg / "images" / "img3.png") in capsys.readouterr().out
    metrics = json.loads((tmp_path / "st" / "metrics.json").read_text())
    assert metrics["n_images"] == 3 and metrics["skipped_files"] == 1
    # all-background truth: pixel accuracy is the share of pixels the legacy model called background
    ref = [np.asarray(EXPECTED["segment"][f"img{i}.png"]["class_map"]) for i in range(3)]
    background = sum(int((m == 0).sum()) for m in ref) / sum(m.size for m in ref)
    assert metrics["pixel_accuracy"] == pytest.approx(background, abs=0.01)


def test_task_help_does_not_import_torch():
    """`fovea <task> --help` stays fast: the command modules import torch only when a command runs."""
    import subprocess
    import sys

    from fovea.cli.common import EXPORT_FORMATS
    from fovea.engine.export import FORMATS

    assert EXPORT_FORMATS == FORMATS
    code = ("import sys, fovea.cli.anomaly, fovea.cli.classify, fovea.cli.segment; "
            "assert 'torch' not in sys.modules, 'torch imported'")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-500:]
