"""HTTP routes of the line: control POSTs, the MJPEG live view, a snapshot and the event stream (SSE).

/stream.mjpg: `multipart/x-mixed-replace; boundary=frame`; each part is the hub's latest JPEG,
sent once per new frame (the frame was encoded once, whatever the number of clients). A stream
ends when its client disconnects (checked every poll) or when the server shuts down
(`LineController.close_streams`, called before uvicorn waits for connections to close, so an
endless stream never holds up shutdown). /api/events: Server-Sent Events, one JSON object per
message: line events (decision, outcome, fault, health, run_start/run_end, line) and a `status`
snapshot (state, counters, latencies) twice a second. EventSource reconnects by itself.
"""

from __future__ import annotations

import asyncio
import json
import time

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, Field

from fovea.errors import ConfigError, LineError

BOUNDARY = "frame"
POLL_S = 0.03
STATUS_EVERY_S = 0.5


class StartRequest(BaseModel):
    """Options of a line run on the synthetic conveyor."""

    n_objects: int = Field(60, ge=1, le=100_000)
    seed: int = 0
    model: str = Field("oracle", description="'oracle' (synthetic test double) or a served model's name")
    max_seconds: float = Field(600.0, gt=0)
    belt_speed_mm_s: float = Field(400.0, ge=50, le=2000)


def _err(status: int, kind: str, exc: Exception) -> JSONResponse:
    return JSONResponse({"error": kind, "detail": str(exc)}, status_code=status)


async def mjpeg_parts(request: Request, line, max_frames: int | None = None):
    """Yield multipart JPEG parts of new frames until the client leaves or the server closes."""
    last = -1
    sent = 0
    hub = line.frames
    hub.clients += 1
    try:
        while not hub.closed:
            seq, jpeg = hub.latest()
            if jpeg is not None and seq != last:
                last = seq
                yield (f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(jpeg)}\r\n"
                       f"X-Frame-Seq: {seq}\r\n\r\n").encode() + jpeg + b"\r\n"
                sent += 1
                if max_frames is not None and sent >= max_frames:
                    return
            if await request.is_disconnected():
                return
            await asyncio.sleep(POLL_S)
    finally:
        hub.clients -= 1


async def sse_messages(request: Request, line):
    """Yield SSE messages: new live events and a status snapshot every STATUS_EVERY_S."""
    seq = line.events.seq
    t_status = 0.0
    yield "retry: 1000\n\n"
    while not line.closed:
        for s, ev in line.events.since(seq):
            seq = s
            yield f"id: {s}\ndata: {json.dumps(ev, default=str)}\n\n"
        now = time.monotonic()
        if now - t_status >= STATUS_EVERY_S:
            t_status = now
            yield f"data: {json.dumps({'type': 'status', **line.status()}, default=str)}\n\n"
        if await request.is_disconnected():
            return
        await asyncio.sleep(0.1)


def add_line_routes(app: FastAPI, line) -> None:
    """Mount the line's control, live view and event routes on `app` (line: a LineController)."""

    @app.get("/api/line", summary="Line state, counters per lane, recent decisions and faults")
    async def line_status():
        return line.status()

    @app.post("/api/line/start", summary="Start a line run (synthetic conveyor, simulated gates)")
    async def line_start(req: StartRequest | None = None):
        req = req or StartRequest()
        try:
            return await asyncio.to_thread(line.start, **req.model_dump())
        except LineError as exc:
            return _err(409, "line_running", exc)
        except ConfigError as exc:
            return _err(422, "bad_line_config", exc)

    @app.post("/api/line/stop", summary="Stop the run: the source ends, every record settles")
    async def line_stop(wait_s: float = 0.0):
        return await asyncio.to_thread(line.stop, min(max(wait_s, 0.0), 30.0))

    @app.post("/api/line/arm", summary="Arm the gates (MCU ARMED)")
    async def line_arm():
        try:
            return line.set_armed(True)
        except LineError as exc:
            return _err(409, "line_not_running", exc)

    @app.post("/api/line/disarm", summary="Disarm the gates (MCU SAFE: items take the default lane)")
    async def line_disarm():
        try:
            return line.set_armed(False)
        except LineError as exc:
            return _err(409, "line_not_running", exc)

    @app.get("/stream.mjpg", summary="Live annotated view (MJPEG)")
    async def stream(request: Request, max_frames: int | None = None):
        return StreamingResponse(mjpeg_parts(request, line, max_frames),
                                 media_type=f"multipart/x-mixed-replace; boundary={BOUNDARY}",
                                 headers={"Cache-Control": "no-store"})

    @app.get("/snapshot.jpg", summary="The latest annotated frame")
    async def snapshot():
        seq, jpeg = line.frames.latest()
        if jpeg is None:
            return JSONResponse({"error": "no_frame", "detail": "no frame yet. Fix: POST /api/line/start"},
                                status_code=404)
        return Response(jpeg, media_type="image/jpeg", headers={"Cache-Control": "no-store", "X-Frame-Seq": str(seq)})

    @app.get("/api/events", summary="Server-Sent Events: decisions, faults, counters, line state")
    async def events(request: Request):
        return StreamingResponse(sse_messages(request, line), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})
