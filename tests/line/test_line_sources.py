"""Sources (video file, image folder, synthetic camera) and a pluggable Detections producer."""

import cv2
import numpy as np
import pytest

from fovea.core import Detections
from fovea.errors import ConfigError, LineError
from fovea.line.clock import SimClock
from fovea.line.sim import simulate
from fovea.line.sources import ConveyorSource, FolderSource, VideoSource, open_source
from fovea.synth.conveyor import Conveyor, ConveyorConfig, write_conveyor_video


def test_video_and_folder_sources_stamp_after_the_grab(tmp_path):
    cfg = ConveyorConfig(n_objects=2, appearance="simple", belt_speed_mm_s=800.0)
    video, _ = write_conveyor_video(tmp_path, cfg)
    clock = SimClock(t0=5.0)
    src = open_source(str(video), clock=clock)
    assert isinstance(src, VideoSource)
    frames = []
    while (f := src.read()) is not None:
        frames.append(f)
        clock.sleep(0.01)
    assert len(frames) == src.n_frames and frames[0].image.shape == (96, 160, 3)
    assert [f.t_capture for f in frames[:3]] == pytest.approx([5.0, 5.01, 5.02])
    for i, f in enumerate(frames[:3]):
        cv2.imwrite(str(tmp_path / f"{i:03d}.png"), cv2.cvtColor(f.image, cv2.COLOR_RGB2BGR))
    (tmp_path / "003.png").write_bytes(b"not a png")
    fs = open_source(str(tmp_path), clock=clock)
    assert isinstance(fs, FolderSource)
    assert [fs.read().index for _ in range(3)] == [0, 1, 2]
    with pytest.raises(LineError, match="003.png"):
        fs.read()                                  # a bad image is a fault, never a substitute frame
    with pytest.raises(ConfigError):
        open_source("no/such/thing.mp4")


def test_synthetic_camera_buffer_and_injected_faults():
    conv = Conveyor(ConveyorConfig(n_objects=3, appearance="simple"))
    clock = SimClock()
    src = ConveyorSource(conv, clock=clock, driver_buffer=2, black_frames={1}, fail_reads={3})
    f0 = src.read()
    assert (f0.index, f0.t_capture) == (0, 0.0)
    clock.advance_to(0.1)
    assert src.read().image.max() == 0                      # injected black frame
    clock.advance_to(0.5)                                   # frames 2..5 exposed, buffer keeps 4, 5
    f = src.read()
    assert f.index == 4 and src.camera_dropped == 2 and f.meta["t_exposure"] == pytest.approx(0.4)
    f = src.read()
    assert f.index == 5
    src2 = ConveyorSource(conv, clock=SimClock(), fail_reads={0})
    with pytest.raises(LineError):
        src2.read()


class TruthDetector:
    """A Detections-producing Predictor (stands in for a detector model): boxes from ground truth."""

    def predict(self, frames):
        out = []
        for f in frames:
            boxes = [t.xyxy for t in f.meta["truth"]]
            out.append(Detections(xyxy=np.asarray(boxes, np.float32).reshape(-1, 4)))
        return out


def test_any_detections_producer_plugs_in():
    conv = Conveyor(ConveyorConfig(n_objects=15, appearance="simple", seed=2))
    r = simulate(conv, localizer=TruthDetector())
    a = r.audit
    assert a.items_without_record == 0 and a.host_vs_physical_mismatch == 0 and a.wrong_in_lane == {}
    assert a.accuracy > 0.85
