"""The line stage's decision core (pure) and its wiring to a fovea.line source and EventLog."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import fovea.models.video as V
from fovea.line.clock import SimClock
from fovea.line.events import EventLog
from fovea.line.sources import ConveyorSource
from fovea.synth.conveyor import ConveyorConfig
from fovea.synth.conveyor_events import EVENT_CLASSES, EventConveyor, EventSchedule
from fovea.video.online import EventDebouncer, OnlineEventRecognizer, VideoEventStage


def _p(jam: float) -> np.ndarray:
    return np.array([1 - jam, jam, 0, 0, 0])


def test_debouncer_raises_after_min_frames_once_per_episode():
    d = EventDebouncer(list(EVENT_CLASSES), watch=("jam",), threshold=0.6, min_frames=2, clear_frames=3)
    seq = [0.1, 0.7, 0.2, 0.7, 0.8, 0.9, 0.3, 0.7, 0.1, 0.1, 0.1, 0.65, 0.7]
    raised = [i for i, p in enumerate(seq) if d.update(_p(p))]
    assert raised == [4, 12]      # 1 alone is too short; 7 is inside the episode; re-armed after 3 below


def test_stage_reads_a_line_source_logs_and_stops_once():
    torch.manual_seed(0)
    model = V.create_model("tsm_lite0", num_classes=5, weights="random", num_segments=4)
    with torch.no_grad():                                   # rigged: the classifier always says "jam"
        model.fc.weight.zero_()
        model.fc.bias.copy_(torch.tensor([0.0, 9.0, 0.0, 0.0, 0.0]))
    rec = OnlineEventRecognizer(model, list(EVENT_CLASSES), window=4, frame_stride=2)
    conv = EventConveyor(ConveyorConfig(n_objects=4, appearance="simple", seed=1),
                         EventSchedule(jams=[(0.5, 5.0, 200.0)]))
    source = ConveyorSource(conv, clock=SimClock(), n_frames=12)
    log, stops = EventLog(), []
    stage = VideoEventStage(rec, EventDebouncer(list(EVENT_CLASSES), min_frames=2), log,
                            on_stop=lambda kind, r: stops.append((kind, r["frame"])), stop_on=("jam",))
    raised = stage.run(source)
    # processed frames 0, 2, 4, 6, 8, 10; the first 3 only warm up (window 4), 6 and 8 score: 8 raises
    assert [r["frame"] for r in raised] == [8]
    assert stops == [("jam", 8)] and log.of_type("video_event")[0]["kind"] == "jam"
    assert len(stage.infer_s) == 3
    rec1 = OnlineEventRecognizer(model, list(EVENT_CLASSES), window=4, frame_stride=2, warmup=1)
    outs = [rec1.push(np.zeros((96, 160, 3), np.uint8)) is not None for _ in range(5)]
    assert outs == [True, False, True, False, True]         # warmup=1: every processed frame scores


@pytest.mark.slow      # the dynamo exporter takes ~1 min of CPU
def test_tsm_exports_to_onnx_with_the_same_logits(tmp_path):
    from fovea.video.export import export_clip_onnx, onnx_predict

    torch.manual_seed(0)
    model = V.create_model("tsm_lite0", num_classes=3, weights="random", num_segments=4,
                           shift_mode="bidirectional").eval()
    path = export_clip_onnx(model, tmp_path / "tsm.onnx", num_frames=4, height=64, width=96)
    clip = torch.randn(3, 3, 4, 64, 96)
    with torch.no_grad():
        ref = model(clip).numpy()
    np.testing.assert_allclose(onnx_predict(path, clip.numpy()), ref, atol=1e-4, rtol=1e-4)
