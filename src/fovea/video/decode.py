"""Video decoding with frame-accurate random access: PyAV first, OpenCV as the fallback.

`VideoReader(path)` indexes the stream by demuxing (no decoding): the sorted packet timestamps
are the frames' presentation times, so frame k is the k-th pts. `get_frames(indices)` seeks to
the keyframe at or before each run of wanted frames and decodes forward to the exact pts, so a
frame read by seeking equals the same frame read by decoding from the start (tested).
Every failure is a `VideoReadError` naming the file, the reason and the fix: missing, empty,
corrupt or truncated files, no video stream, zero frames, codecs no backend decodes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fovea.errors import DataError

BACKENDS = ("auto", "pyav", "opencv")


class VideoReadError(DataError):
    """A video file cannot be opened or decoded."""

    def __init__(self, path, reason: str, fix: str = "re-encode it (e.g. `ffmpeg -i IN -c:v libx264 OUT.mp4`) "
                                                      "or remove it from the data set"):
        self.path, self.reason = str(path), reason
        super().__init__(f"cannot read video {self.path}: {reason}. Fix: {fix}.")


@dataclass(frozen=True)
class VideoInfo:
    """What the container says: frames (indexed), frames per second, size, codec, backend."""

    num_frames: int
    fps: float
    width: int
    height: int
    codec: str
    backend: str

    @property
    def duration_s(self) -> float:
        return self.num_frames / self.fps if self.fps > 0 else 0.0


def _check_file(path: Path) -> None:
    if not path.exists():
        raise VideoReadError(path, "the file does not exist", "check the path")
    if not path.is_file():
        raise VideoReadError(path, "it is not a file", "pass a video file, not a folder")
    if path.stat().st_size == 0:
        raise VideoReadError(path, "the file is empty (0 bytes)", "re-copy or re-record the video")


class _PyAVReader:
    """PyAV backend: packet-pts index at open, keyframe seek + decode-forward for each request."""

    def __init__(self, path: Path):
        import av

        self.path = path
        try:
            self.container = av.open(str(path))
        except Exception as exc:  # av.error.InvalidDataError, truncated moov, garbage bytes ...
            raise VideoReadError(path, f"not a readable video container ({type(exc).__name__}: {exc}); the file "
                                 "may be corrupt or truncated") from exc
        if not self.container.streams.video:
            self.container.close()
            raise VideoReadError(path, "the file has no video stream", "pass a file with a video track")
        self.stream = stream = self.container.streams.video[0]
        ctx = stream.codec_context
        if ctx is None or ctx.codec is None or not getattr(ctx.codec, "is_decoder", True):
            raise VideoReadError(path, "unsupported codec: FFmpeg (PyAV) has no decoder for its video stream")
        self.codec = ctx.name
        try:
            pts = [p.pts for p in self.container.demux(stream) if p.pts is not None and p.size > 0]
        except Exception as exc:
            raise VideoReadError(path, f"demuxing failed ({type(exc).__name__}: {exc}); the file is corrupt or "
                                 "truncated") from exc
        self.pts = np.array(sorted(pts), dtype=np.int64)
        if stream.frames and len(self.pts) < stream.frames:
            raise VideoReadError(path, f"the container declares {stream.frames} frames but only {len(self.pts)} are "
                                 "present; the file is truncated")
        self.fps = float(stream.average_rate or stream.guessed_rate or 0)
        self.width, self.height = ctx.width, ctx.height

    def _decode_from(self, target_pts: int):
        self.container.seek(int(target_pts), stream=self.stream, backward=True, any_frame=False)
        for frame in self.container.decode(self.stream):
            yield frame

    def get(self, indices: list[int]) -> list[np.ndarray]:
        """RGB frames (H, W, 3) uint8 for sorted unique indices."""
        out: dict[int, np.ndarray] = {}
        wanted = sorted(set(indices))
        i = 0
        step = int(self.pts[1] - self.pts[0]) if len(self.pts) > 1 else 1
        while i < len(wanted):
            target = self.pts[wanted[i]]
            try:
                for frame in self._decode_from(target):
                    if frame.pts is None or frame.pts < target:
                        continue
                    if self.pts[wanted[i]] < frame.pts:
                        raise VideoReadError(self.path, f"frame {wanted[i]} (pts {self.pts[wanted[i]]}) is missing "
                                             "from the decoded stream; the file is corrupt")
                    if frame.pts == self.pts[wanted[i]]:
                        out[wanted[i]] = frame.to_ndarray(format="rgb24")
                        i += 1
                        if i == len(wanted) or self.pts[wanted[i]] - frame.pts > 64 * step:
                            break          # done, or far ahead: seek again instead of decoding all between
                else:
                    raise VideoReadError(self.path, f"frame {wanted[i]} could not be decoded (the stream ends "
                                         "early); the file is truncated or corrupt")
            except VideoReadError:
                raise
            except Exception as exc:
                raise VideoReadError(self.path, f"decoding failed near frame {wanted[i]} ({type(exc).__name__}: "
                                     f"{exc}); the file is corrupt or truncated") from exc
        return [out[k] for k in indices]

    def close(self) -> None:
        self.container.close()


class _OpenCVReader:
    """OpenCV backend (fallback): CAP_PROP_POS_FRAMES seeking, sequential reads within a run."""

    def __init__(self, path: Path):
        import cv2

        self.path = path
        self.cap = cv2.VideoCapture(str(path))
        if not self.cap.isOpened():
            raise VideoReadError(path, "OpenCV cannot open it (corrupt, truncated or unsupported codec)")
        n = int(self.cap.get(cv2.CAP_PROP_FRAME_COUNT))
        self.pts = np.arange(max(n, 0))
        self.fps = float(self.cap.get(cv2.CAP_PROP_FPS))
        self.width = int(self.cap.get(cv2.CAP_PROP_FRAME_WIDTH))
        self.height = int(self.cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        fourcc = int(self.cap.get(cv2.CAP_PROP_FOURCC))
        self.codec = "".join(chr((fourcc >> 8 * k) & 0xFF) for k in range(4)).strip("\x00") or "unknown"
        self._next = 0

    def get(self, indices: list[int]) -> list[np.ndarray]:
        import cv2

        out = {}
        for k in sorted(set(indices)):
            if k != self._next:
                self.cap.set(cv2.CAP_PROP_POS_FRAMES, k)
            ok, bgr = self.cap.read()
            if not ok:
                raise VideoReadError(self.path, f"frame {k} could not be decoded; the file is truncated or corrupt")
            out[k] = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            self._next = k + 1
        return [out[k] for k in indices]

    def close(self) -> None:
        self.cap.release()


class VideoReader:
    """Random access to the frames of one video file.

    backend: "auto" (PyAV, OpenCV if PyAV cannot open the file), "pyav" or "opencv".
    `get_frames(indices)` -> (T, H, W, 3) uint8 RGB in the order asked; `len(reader)` frames."""

    def __init__(self, path: str | Path, backend: str = "auto"):
        if backend not in BACKENDS:
            raise VideoReadError(path, f"unknown backend {backend!r}", f"use one of {BACKENDS}")
        self.path = Path(path)
        _check_file(self.path)
        if backend == "opencv":
            self._r = _OpenCVReader(self.path)
        else:
            try:
                self._r = _PyAVReader(self.path)
            except VideoReadError as first:
                if backend == "pyav" or not first.reason.startswith(("not a readable", "unsupported codec")):
                    raise                     # PyAV read the file and found it broken: no second opinion
                try:
                    self._r = _OpenCVReader(self.path)
                except VideoReadError:
                    raise first from None
        if len(self._r.pts) == 0:
            self._r.close()
            raise VideoReadError(self.path, "the video has zero frames", "record or export a non-empty clip")
        self.info = VideoInfo(len(self._r.pts), self._r.fps, self._r.width, self._r.height, self._r.codec,
                              type(self._r).__name__.strip("_").replace("Reader", "").lower())

    def __len__(self) -> int:
        return self.info.num_frames

    def get_frames(self, indices) -> np.ndarray:
        idx = [int(i) for i in np.asarray(indices).reshape(-1)]
        if not idx:
            raise VideoReadError(self.path, "zero frames were requested (empty clip)", "ask for at least one frame")
        bad = [i for i in idx if not 0 <= i < len(self)]
        if bad:
            raise VideoReadError(self.path, f"frame index {bad[0]} is outside 0..{len(self) - 1}",
                                 "sample indices within the video's length")
        return np.stack(self._r.get(idx))

    def read_all(self) -> np.ndarray:
        """Every frame, (N, H, W, 3) uint8."""
        return self.get_frames(range(len(self)))

    def close(self) -> None:
        self._r.close()

    def __enter__(self) -> "VideoReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def write_video(path: str | Path, frames: np.ndarray, fps: float = 25.0, codec: str = "libx264",
                crf: int = 18) -> Path:
    """Encode (N, H, W, 3) uint8 RGB frames to a video file with PyAV (H.264 by default; even sizes)."""
    import av
    from fractions import Fraction

    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8 or len(frames) == 0:
        raise DataError(f"write_video({path}): frames must be a non-empty (N, H, W, 3) uint8 array, got "
                        f"{frames.shape} {frames.dtype}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as out:
        stream = out.add_stream(codec, rate=Fraction(fps).limit_denominator(1001))
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        if codec == "libx264":
            stream.options = {"crf": str(crf), "preset": "veryfast"}
        for img in frames:
            for pkt in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(pkt)
        for pkt in stream.encode():
            out.mux(pkt)
    return path
