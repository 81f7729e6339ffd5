"""Line control, MJPEG live view, snapshot and event stream against a real uvicorn on 127.0.0.1.

The line is the synthetic conveyor with the simulated gates and the oracle classifier on the real
clock; each test runs a short belt and stops it."""

from __future__ import annotations

import io
import json
import time

import httpx
import numpy as np
import pytest
from PIL import Image

from fovea.serve.app import create_app
from fovea.serve.server import ServerThread
from fovea.synth.conveyor import ConveyorConfig

FRAME_SCALE = 3
# hang guards (pytest-timeout), far above a run on a loaded machine: a stream that never ends fails, not hangs
pytestmark = pytest.mark.timeout(300)


@pytest.fixture
def served():
    """(app, base url) of a fresh server with no models; the line is stopped and the server shut down after."""
    app = create_app({})
    srv = ServerThread(app)
    with srv as url:
        yield app, url, srv
        app.state.line.stop(wait_s=10)


def _parts(url: str, n: int, timeout_s: float = 20.0) -> list[tuple[dict, bytes]]:
    """Read n parts (headers, JPEG bytes) of /stream.mjpg, parsing the multipart framing by hand."""
    out = []
    buf = b""
    with httpx.stream("GET", url + "/stream.mjpg", timeout=timeout_s) as r:
        assert r.headers["content-type"] == "multipart/x-mixed-replace; boundary=frame"
        for chunk in r.iter_raw():
            buf += chunk
            while True:
                head_end = buf.find(b"\r\n\r\n")
                if not buf.startswith(b"--frame\r\n") or head_end < 0:
                    break
                headers = dict(line.split(": ", 1) for line in buf[9:head_end].decode().split("\r\n"))
                size = int(headers["Content-Length"])
                if len(buf) < head_end + 4 + size + 2:
                    break
                out.append((headers, buf[head_end + 4: head_end + 4 + size]))
                buf = buf[head_end + 4 + size + 2:]
            if len(out) >= n:
                return out
    return out


def _wait(cond, timeout_s: float = 20.0, what: str = "condition"):
    t_end = time.monotonic() + timeout_s
    while time.monotonic() < t_end:
        if cond():
            return
        time.sleep(0.05)
    raise AssertionError(f"{what} not reached in {timeout_s} s")


def test_stream_snapshot_and_stop(served):
    app, url, _ = served
    assert httpx.get(url + "/snapshot.jpg").status_code == 404            # no line yet
    r = httpx.post(url + "/api/line/start", json={"model": "not_served"})
    assert r.status_code == 422 and "not served" in r.json()["detail"]
    r = httpx.post(url + "/api/line/start", json={"n_objects": 6, "seed": 1})
    assert r.status_code == 200 and r.json()["state"] == "RUNNING"
    assert httpx.post(url + "/api/line/start", json={}).status_code == 409   # one run at a time
    parts = _parts(url, 3)
    cc = ConveyorConfig()
    seqs = [int(h["X-Frame-Seq"]) for h, _ in parts]
    assert seqs == sorted(set(seqs))                                      # new frames only, in order
    for _, jpeg in parts:
        img = np.asarray(Image.open(io.BytesIO(jpeg)))
        assert img.shape == (cc.height_px * FRAME_SCALE, cc.width_px * FRAME_SCALE, 3)
    snap = httpx.get(url + "/snapshot.jpg")
    assert snap.status_code == 200 and snap.content[:2] == b"\xff\xd8"
    _wait(lambda: app.state.line.frames.clients == 0, what="stream closed after the client left")
    r = httpx.post(url + "/api/line/stop", params={"wait_s": 15})
    assert r.json()["state"] == "STOPPED" and not r.json()["running"]


def test_frames_are_encoded_once_for_all_clients(served, monkeypatch):
    import threading

    import fovea.serve.line_control as lc

    encodes = []
    real_encode = lc.encode
    monkeypatch.setattr(lc, "encode", lambda *a, **k: encodes.append(1) or real_encode(*a, **k))
    app, url, _ = served
    httpx.post(url + "/api/line/start", json={"n_objects": 4})
    got: dict[int, list] = {}
    threads = [threading.Thread(target=lambda k=k: got.__setitem__(k, _parts(url, 6))) for k in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    seqs = [int(h["X-Frame-Seq"]) for parts in got.values() for h, _ in parts]
    assert len(seqs) == 18
    span = max(seqs) - min(seqs) + 1                       # frames published while the clients read
    assert span < len(seqs)                                # so clients shared frames ...
    assert len(encodes) == app.state.line.frames.seq       # ... and each published frame was encoded once
    by_seq: dict[int, set] = {}
    for parts in got.values():
        for h, jpeg in parts:
            by_seq.setdefault(int(h["X-Frame-Seq"]), set()).add(jpeg)
    assert all(len(v) == 1 for v in by_seq.values())


def test_event_stream_counters_and_disarm(served):
    app, url, _ = served
    httpx.post(url + "/api/line/start", json={"n_objects": 40, "seed": 2})
    seen: list[dict] = []
    with httpx.stream("GET", url + "/api/events", timeout=30) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        for line in r.iter_lines():
            if line.startswith("data: "):
                seen.append(json.loads(line[6:]))
            if any(e["type"] == "decision" for e in seen) and any(
                    e["type"] == "status" and e["outcomes"] > 0 for e in seen):
                break
    status = [e for e in seen if e["type"] == "status"][-1]
    assert status["state"] == "RUNNING" and sum(status["lanes"].values()) == status["outcomes"] > 0
    act = app.state.line._actuator
    r = httpx.post(url + "/api/line/disarm")
    assert r.json()["state"] == "SAFE" and r.json()["armed"] is False
    _wait(lambda: act.emulator.state == "SAFE", what="the emulated MCU latched SAFE")
    time.sleep(0.5)                                           # no re-arm by the host while disarmed
    assert act.emulator.state == "SAFE"
    r = httpx.post(url + "/api/line/arm")
    _wait(lambda: act.emulator.state == "ARMED", what="the emulated MCU armed again")
    assert httpx.get(url + "/api/line").json()["state"] == "RUNNING"
    httpx.post(url + "/api/line/stop", params={"wait_s": 15})
    assert httpx.post(url + "/api/line/arm").status_code == 409


def test_open_stream_does_not_block_shutdown():
    app = create_app({})
    srv = ServerThread(app, graceful_s=None)    # no backstop: only close_streams can end the stream
    import threading

    with srv as url:
        httpx.post(url + "/api/line/start", json={"n_objects": 200})
        _parts(url, 1)
        _wait(lambda: app.state.line.frames.clients == 0, what="the first client gone")
        ended = []
        holder = threading.Thread(target=lambda: ended.append(len(_parts(url, 10_000, timeout_s=60))), daemon=True)
        holder.start()
        _wait(lambda: app.state.line.frames.clients >= 1, what="a client on the stream")
        assert srv.stop(timeout_s=30), "uvicorn still waits for the endless stream"
        holder.join(10)
        assert ended and 0 < ended[0] < 10_000          # the client saw frames, then the stream's proper end
    assert not app.state.line.running                          # lifespan shutdown stopped the line
