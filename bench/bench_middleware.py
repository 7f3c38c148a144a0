"""What the middleware costs a request, as ratios against the bare app in the same run.

    .venv/bin/python bench/bench_middleware.py [--n 20000]

Calls a routed Starlette app and a Flask app in-process, bare and wrapped (no sockets, so
the middleware's own cost is not hidden by network noise), for: a path the matcher does
not match, a matched path without pairing headers, and a matched path with them (the event is built and queued; the
sender delivers to an in-memory transport). Reports microseconds per request and the
ratio to the bare app. Timings vary by machine; the ratios are the claim.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Callable
from typing import Any

from layersync_middleware import LayerSync, LayerSyncMiddleware, LayerSyncWSGIMiddleware
from layersync_middleware._event import new_event_id
from layersync_middleware.testing import MemoryTransport

MATCHER = ["/api/cart/*", "/api/checkout/*", "/api/orders/**"] + [f"/api/extra{i}/*" for i in range(20)]
HEADERS = [(b"host", b"shop.example"), (b"user-agent", b"Mozilla/5.0 bench"), (b"cookie", b"_fbp=fb.1.2.3; a=b")]


def client() -> LayerSync:
    return LayerSync(
        site_id="site_bench",
        secret_key="sk_bench",
        matcher=MATCHER,
        transport=MemoryTransport(),
        max_queue_size=1_000_000,
    )


def starlette_app() -> Any:
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    async def ok(request: Any) -> PlainTextResponse:
        return PlainTextResponse("ok")

    return Starlette(routes=[Route("/api/cart/add", ok, methods=["POST"]), Route("/products/a", ok, methods=["POST"])])


def flask_app() -> Any:
    from flask import Flask

    app = Flask("bench")
    app.add_url_rule("/api/cart/add", "cart", lambda: "ok", methods=["POST"])
    app.add_url_rule("/products/a", "product", lambda: "ok", methods=["POST"])
    return app.wsgi_app


def scope(path: str, paired: bool) -> dict[str, Any]:
    headers = list(HEADERS)
    if paired:
        headers += [
            (b"x-layersync-event-id", new_event_id("add_to_cart").encode()),
            (b"x-layersync-event-name", b"add_to_cart"),
        ]
    return {
        "type": "http",
        "method": "POST",
        "path": path,
        "root_path": "",
        "scheme": "https",
        "query_string": b"",
        "headers": headers,
        "client": ("10.0.0.2", 1234),
        "server": ("shop", 443),
    }


def environ(path: str, paired: bool) -> dict[str, Any]:
    env = {
        "REQUEST_METHOD": "POST",
        "wsgi.input": __import__("io").BytesIO(b""),
        "CONTENT_LENGTH": "0",
        "PATH_INFO": path,
        "SCRIPT_NAME": "",
        "QUERY_STRING": "",
        "SERVER_NAME": "shop",
        "SERVER_PORT": "443",
        "wsgi.url_scheme": "https",
        "REMOTE_ADDR": "10.0.0.2",
        "HTTP_HOST": "shop.example",
        "HTTP_USER_AGENT": "Mozilla/5.0 bench",
        "HTTP_COOKIE": "_fbp=fb.1.2.3",
    }
    if paired:
        env["HTTP_X_LAYERSYNC_EVENT_ID"] = new_event_id("add_to_cart")
        env["HTTP_X_LAYERSYNC_EVENT_NAME"] = "add_to_cart"
    return env


def time_asgi(app: Any, make: Callable[[], dict[str, Any]], n: int) -> float:
    scopes = [make() for _ in range(n)]

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b""}

    async def send(message: dict[str, Any]) -> None:
        pass

    async def run() -> float:
        start = time.perf_counter()
        for s in scopes:
            await app(s, receive, send)
        return (time.perf_counter() - start) / n * 1e6

    return asyncio.run(run())


def time_wsgi(app: Any, make: Callable[[], dict[str, Any]], n: int) -> float:
    envs = [make() for _ in range(n)]

    def start_response(status: str, headers: Any, exc_info: Any = None) -> None:
        pass

    start = time.perf_counter()
    for env in envs:
        for _ in app(env, start_response):
            pass
    return (time.perf_counter() - start) / n * 1e6


def best(f: Callable[[], float], repeat: int = 5) -> float:
    return statistics.median(f() for _ in range(repeat))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=20000)
    n = parser.parse_args().n
    c = client()
    bare_asgi, bare_wsgi = starlette_app(), flask_app()
    asgi, wsgi = LayerSyncMiddleware(bare_asgi, client=c), LayerSyncWSGIMiddleware(bare_wsgi, client=c)
    cases = [
        ("unmatched path", "/products/a", False),
        ("matched, no pairing headers", "/api/cart/add", False),
        ("matched, paired: event built and queued", "/api/cart/add", True),
    ]
    print("bare apps: a routed Starlette app (ASGI) and a Flask app (WSGI); the sender runs meanwhile")
    print(f"{'case':44} {'ASGI us':>8} {'x bare':>7} {'WSGI us':>8} {'x bare':>7}")
    for name, path, paired in cases:
        a0 = best(lambda: time_asgi(bare_asgi, lambda: scope(path, paired), n))  # noqa: B023
        a1 = best(lambda: time_asgi(asgi, lambda: scope(path, paired), n))  # noqa: B023
        w0 = best(lambda: time_wsgi(bare_wsgi, lambda: environ(path, paired), n))  # noqa: B023
        w1 = best(lambda: time_wsgi(wsgi, lambda: environ(path, paired), n))  # noqa: B023
        print(f"{name:44} {a1:8.2f} {a1 / a0:7.2f} {w1:8.2f} {w1 / w0:7.2f}")
    # The same paired requests with the sender paused: what the request path itself pays,
    # apart from the JSON encoding and delivery the background worker does later.
    quiet = client()
    quiet.sender._wake = lambda: None  # type: ignore[method-assign]
    asgi, wsgi = LayerSyncMiddleware(bare_asgi, client=quiet), LayerSyncWSGIMiddleware(bare_wsgi, client=quiet)
    a0 = best(lambda: time_asgi(bare_asgi, lambda: scope("/api/cart/add", True), n))
    a1 = best(lambda: time_asgi(asgi, lambda: scope("/api/cart/add", True), n))
    w0 = best(lambda: time_wsgi(bare_wsgi, lambda: environ("/api/cart/add", True), n))
    w1 = best(lambda: time_wsgi(wsgi, lambda: environ("/api/cart/add", True), n))
    print(f"{'matched, paired: request path only':44} {a1:8.2f} {a1 / a0:7.2f} {w1:8.2f} {w1 / w0:7.2f}")
    c.shutdown(5)


if __name__ == "__main__":
    main()
