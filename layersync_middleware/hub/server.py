"""Run a hub (or any ASGI app) under uvicorn in a background thread, on a free
loopback port: for the demo and for tests."""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

import uvicorn

from .app import HubApp


class HubServer:
    """``port=0`` picks a free port. A stopped hub is "down" (connection refused);
    ``HubServer(app, port=old.port).start()`` brings the same app, store included,
    back on the same port."""

    def __init__(self, app: Any, host: str = "127.0.0.1", port: int = 0, log_level: str = "warning") -> None:
        self.app = app
        self.host = host
        self._sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind((host, port))
        self.port: int = self._sock.getsockname()[1]
        # h11: the faults that write raw bytes rely on its request cycle (see faults.raw_transport).
        config = uvicorn.Config(app, log_level=log_level, lifespan="on", timeout_graceful_shutdown=1, http="h11")
        self._server = uvicorn.Server(config)
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def start(self, timeout: float = 10.0) -> HubServer:
        if isinstance(self.app, HubApp):
            self.app.hub.closing = False
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [self._sock]}, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the server on {self.url} did not start")
            time.sleep(0.01)
        return self

    def stop(self, timeout: float = 5.0) -> None:
        if isinstance(self.app, HubApp):
            self.app.hub.closing = True  # release requests held by a "hang" or "drip" fault
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout)
        self._sock.close()

    def __enter__(self) -> HubServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
