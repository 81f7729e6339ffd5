"""Running the app under uvicorn so that endless streams never hold up shutdown.

uvicorn waits for open connections to close before it shuts down ("Waiting for connections to
close"; Kludex/uvicorn#882), and an MJPEG or SSE response never closes by itself. `FoveaServer`
first tells the line's streams to end (`LineController.close_streams`), then lets uvicorn shut
down as usual; `timeout_graceful_shutdown` stays as the backstop.
"""

from __future__ import annotations

import socket
import threading

import uvicorn


class FoveaServer(uvicorn.Server):
    """uvicorn.Server whose shutdown first ends the app's live streams."""

    async def shutdown(self, sockets=None) -> None:
        line = getattr(getattr(self.config.app, "state", None), "line", None)
        if line is not None:
            line.close_streams()
        await super().shutdown(sockets=sockets)


def make_server(app, host: str = "127.0.0.1", port: int = 8000, graceful_s: int | None = 5,
                log_level: str = "info") -> FoveaServer:
    """A FoveaServer for `app` (call `.run()`, or `.should_exit = True` from another thread to stop it)."""
    cfg = uvicorn.Config(app, host=host, port=port, log_level=log_level, timeout_graceful_shutdown=graceful_s,
                         lifespan="on", access_log=log_level == "debug")
    return FoveaServer(cfg)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now (for tests and benchmarks on loopback)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class ServerThread:
    """`with ServerThread(app) as url:` runs the app on 127.0.0.1 in a thread and stops it on exit."""

    def __init__(self, app, port: int | None = None, graceful_s: int | None = 5):
        self.port = port or free_port()
        self.server = make_server(app, port=self.port, graceful_s=graceful_s, log_level="warning")
        self.thread = threading.Thread(target=self.server.run, name="serve-uvicorn", daemon=True)
        self.url = f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> str:
        self.thread.start()
        while not self.server.started:
            if not self.thread.is_alive():
                raise RuntimeError(f"the server on port {self.port} did not start")
            self.thread.join(0.02)
        return self.url

    def stop(self, timeout_s: float = 20.0) -> bool:
        """Ask the server to exit; True when its thread ended within timeout_s."""
        self.server.should_exit = True
        self.thread.join(timeout_s)
        return not self.thread.is_alive()

    def __exit__(self, *exc) -> None:
        self.stop()
