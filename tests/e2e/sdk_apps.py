"""Apps the real browser SDK is driven against (tests/e2e/test_browser.py), each wired
with no matcher: what the SDK stamps pairs by default. Each serves the same page at
``/_page``, a catch-all under ``/`` and the same catch-all mounted under ``/api``, and
``/_stats``: the client's counters and what each request saw as ``current_event()``.

Also ``raw``: a bare ASGI app beside the same app under the middleware, for the
header-flood test of tests/test_asgi.py.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from layersync_middleware import LayerSync, LayerSyncMiddleware, current_event

SEEN: list[list[Any]] = []  # [method, URL as the app got it, [event_id, event_name] or None]
MOUNT = "/api"

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>SDK probe</title></head><body>
<script src="/_sdk.js"></script>
<script>
  const ls = window.LayerSync.LayerSync.init({
    siteId: %(site)s, publishableKey: %(key)s, apiUrl: %(api)s,
    // An endpoint of the shop's own, which the server was not told about: stamped, not paired.
    autoTrack: {cartEndpoints: [/\\/basket\\b/i]},
  });
  const settle = () => new Promise(resolve => setTimeout(resolve, 20));
  function xhr(method, url) {
    return new Promise(resolve => {
      const x = new XMLHttpRequest();
      x.open(method, url);
      x.setRequestHeader('Content-Type', 'application/json');
      x.onload = () => resolve(x.status);
      x.onerror = () => resolve(0);
      x.send(method === 'GET' ? null : '{}');
    });
  }
  async function call(via, method, url) {
    if (via === 'xhr') return xhr(method, url);
    const body = {method, headers: {'Content-Type': 'application/json'}, body: '{}'};
    const r = await fetch(url, method === 'GET' ? {} : body);
    await r.text();
    return r.status;
  }
  // One step: a fresh page URL (begin_checkout fires once per page URL), the event the
  // shop tracks, then its request; the SDK's own follow-up event settles before the next.
  async function step(n, name, via, method, url) {
    history.replaceState(null, '', '/_page?n=' + n);
    const tracked = name ? ls.track(name, {order_id: 'ORD-' + n}) : null;
    const status = await call(via, method, url);
    await settle();
    return {n, name, via, method, url, tracked, status};
  }
  window.probe = {ls, step};
</script></body></html>
"""


def page() -> str:
    def js(value: str) -> str:
        return json.dumps(value)

    env = os.environ
    return PAGE % {
        "site": js(env["LAYERSYNC_SITE_ID"]),
        "key": js(env["LAYERSYNC_PUBLISHABLE_KEY"]),
        "api": js(env["LAYERSYNC_API_URL"]),
    }


def sdk_source() -> bytes:
    return Path(os.environ["LAYERSYNC_BROWSER_SDK"]).read_bytes()


def record(method: str, url: str) -> None:
    if "favicon" in url:  # the browser's own request, whenever it comes
        return
    pending = current_event()
    SEEN.append([method, url, None if pending is None else [pending.event_id, pending.event_name]])


def stats(client: LayerSync) -> dict[str, Any]:
    s = client.stats()
    return {"dropped": s.dropped, "sent": s.sent, "duplicates": s.duplicates, "seen": SEEN}


# --- Starlette under uvicorn ----------------------------------------------------------------
def _starlette() -> Any:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import HTMLResponse, JSONResponse, Response
    from starlette.routing import Mount, Route

    methods = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"]

    async def shop(request: Request) -> JSONResponse:
        query = request.url.query
        record(request.method, request.url.path + (f"?{query}" if query else ""))
        return JSONResponse({"ok": True})

    inner = Starlette(routes=[Route("/", shop, methods=methods), Route("/{rest:path}", shop, methods=methods)])
    at_root, mounted = LayerSyncMiddleware(inner), LayerSyncMiddleware(inner)  # one shared client
    fixed = [
        Route("/_page", lambda r: HTMLResponse(page())),
        Route("/_sdk.js", lambda r: Response(sdk_source(), media_type="text/javascript")),
        Route("/_stats", lambda r: JSONResponse(stats(at_root.client))),
    ]
    return Starlette(routes=[*fixed, Mount(MOUNT, app=mounted), Mount("", app=at_root)])


# --- Flask under gunicorn ------------------------------------------------------------------
def _flask() -> Callable[..., Iterable[bytes]]:
    from flask import Flask, Response, jsonify, request
    from werkzeug.middleware.dispatcher import DispatcherMiddleware

    from layersync_middleware.flask import FlaskLayerSync

    app = Flask(__name__)
    ext = FlaskLayerSync(app)

    @app.route("/", defaults={"rest": ""}, methods=["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"])
    @app.route("/<path:rest>", methods=["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"])
    def shop(rest: str) -> Any:
        if rest == "_page":
            return Response(page(), mimetype="text/html")
        if rest == "_sdk.js":
            return Response(sdk_source(), mimetype="text/javascript")
        if rest == "_stats":
            return jsonify(stats(ext.client))
        query = request.query_string.decode("latin-1")
        record(request.method, request.script_root + request.path + (f"?{query}" if query else ""))
        return jsonify(ok=True)

    # Mounted as a WSGI server mounts an app: SCRIPT_NAME=/api, PATH_INFO the rest.
    return DispatcherMiddleware(app.wsgi_app, {MOUNT: app.wsgi_app})


# --- the header flood of issue 22.1 --------------------------------------------------------
async def _bare(scope: Any, receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    body = b"ok"
    if scope["path"] == "/_stats":
        body = json.dumps(stats(_paired.client)).encode()
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": body})


_paired = LayerSyncMiddleware(_bare)


async def raw(scope: Any, receive: Any, send: Any) -> None:
    """``/bare/...`` without the middleware, anything else under it: one server, one parser."""
    app = _bare if scope["type"] == "http" and scope["path"].startswith("/bare/") else _paired
    await app(scope, receive, send)


def __getattr__(name: str) -> Any:
    # Built when the server asks, so that one stack's server does not import the others.
    if name == "starlette_app":
        return _starlette()
    if name == "flask_app":
        return _flask()
    raise AttributeError(name)
