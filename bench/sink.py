"""A counting sink that plays the hub (and Sentry's and Segment's ingest) on loopback.

    python bench/sink.py --port 0      # prints "listening <port>" and serves until killed

It accepts every POST, answers 200 at once, and counts what arrived:

- LayerSync ``/api/v1/events/server`` (one event) and ``/api/v1/events/server/batch``
  (``{"events": [...]}``): events and distinct ``event_id``s, answered with
  ``{"results": [{"event_id": ..., "status": "ok"}, ...]}``;
- Segment's ``/v1/batch`` (``{"batch": [...]}``): messages and distinct ``messageId``s;
- anything else (Sentry envelopes, ...): requests only.

``GET /_count`` returns the counters as JSON; ``POST /_reset`` zeroes them.

Every socket sets ``TCP_NODELAY``: ``http.server`` writes the status line and headers,
then the body, in separate sends, and with Nagle's algorithm the second small write waits
for the client's delayed ACK, about 40 ms per response.
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

LAYERSYNC_PATHS = ("/api/v1/events/server", "/api/v1/events/server/batch")
SEGMENT_PATH = "/v1/batch"


class Counter:
    """Thread-safe counters; distinct ids are kept since the last reset."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        with self._lock:
            self.requests = 0
            self.events = 0
            self.other_requests = 0
            self._ids: set[str] = set()

    def add(self, ids: list[str]) -> None:
        with self._lock:
            self.requests += 1
            self.events += len(ids)
            self._ids.update(ids)

    def add_other(self) -> None:
        with self._lock:
            self.other_requests += 1

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return {
                "requests": self.requests,
                "events": self.events,
                "unique_events": len(self._ids),
                "other_requests": self.other_requests,
            }


def _events(path: str, body: Any) -> list[dict[str, Any]]:
    if path == SEGMENT_PATH:
        return list(body.get("batch", []))
    if path.endswith("/batch"):
        return list(body.get("events", []))
    return [body]


def _event_id(event: dict[str, Any]) -> str:
    return str(event.get("event_id") or event.get("messageId") or "")


class SinkHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the hub would
    disable_nagle_algorithm = True  # TCP_NODELAY: see the module docstring
    counter: Counter  # set on the subclass made by make_server

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length)
        path = self.path.split("?", 1)[0]
        if path == "/_reset":
            self.counter.reset()
            self._reply(b"{}")
            return
        if path not in LAYERSYNC_PATHS and path != SEGMENT_PATH:
            self.counter.add_other()
            self._reply(b"{}")
            return
        if self.headers.get("Content-Encoding") == "gzip":
            raw = gzip.decompress(raw)
        ids = [_event_id(e) for e in _events(path, json.loads(raw))]
        self.counter.add(ids)
        results = [{"event_id": i, "status": "ok"} for i in ids]
        self._reply(json.dumps({"results": results}, separators=(",", ":")).encode())

    def do_GET(self) -> None:
        if self.path == "/_count":
            self._reply(json.dumps(self.counter.snapshot()).encode())
        else:
            self._reply(b"{}")

    def _reply(self, body: bytes) -> None:
        # One write for the head and the body: fewer syscalls on the load generator's core.
        head = (f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n").encode(
            "latin-1"
        )
        self.wfile.write(head + body)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # a line per request would cost more than the request


class SinkServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # wrk-driven servers open many connections at once

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Senders drop keep-alive connections when their process exits: not worth a traceback.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


def make_server(port: int = 0) -> tuple[SinkServer, Counter]:
    counter = Counter()
    handler = type("BoundSinkHandler", (SinkHandler,), {"counter": counter})
    return SinkServer(("127.0.0.1", port), handler), counter


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    server, _ = make_server(parser.parse_args().port)
    print(f"listening {server.server_address[1]}", flush=True)
    try:
        server.serve_forever(poll_interval=0.5)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    sys.exit(0)


if __name__ == "__main__":
    main()
