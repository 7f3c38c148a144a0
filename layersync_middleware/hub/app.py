"""The hub's HTTP side (Starlette): ingest, config, fault injection and the page."""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
import zlib
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from .. import _wire
from .store import Store

MAX_BODY = 1024 * 1024  # after gunzip too
_ID_MAX = 128


@dataclass(frozen=True)
class HubSite:
    site_id: str
    publishable_key: str
    secret_key: str

    def __repr__(self) -> str:
        return f"HubSite(site_id={self.site_id!r})"


@dataclass
class Faults:
    """What the hub does to a share of ingest requests. ``mode``: "500", "429", "hang"
    or "drop" (close the connection mid-response). ``rate``: the share (0-1) of requests
    hit; ``count``: if set, only that many more requests are hit. ``target``: "server",
    "browser" or "all" ingest endpoints."""

    mode: str | None = None
    rate: float = 1.0
    count: int | None = None
    retry_after: float = 1.0
    hang_seconds: float = 30.0
    target: str = "server"
    hits: int = field(default=0)

    def pick(self, source: str) -> str | None:
        if self.mode is None or self.target not in (source, "all"):
            return None
        if self.count is not None and self.count <= 0:
            return None
        if self.rate < 1.0 and random.random() >= self.rate:
            return None
        if self.count is not None:
            self.count -= 1
        self.hits += 1
        return self.mode

    def as_dict(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "rate": self.rate,
            "count": self.count,
            "retry_after": self.retry_after,
            "hang_seconds": self.hang_seconds,
            "target": self.target,
            "hits": self.hits,
        }


class _Drop(Exception):
    pass


class _Invalid(Exception):
    def __init__(self, status: int, message: str) -> None:
        self.status = status
        self.message = message


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def validate_event(event: Any, site_id: str) -> dict[str, Any]:
    """The wire.md event body's schema; raises _Invalid(422) naming the first problem."""
    if not isinstance(event, dict):
        raise _Invalid(422, "an event must be a JSON object")
    for key, kind in (("event_id", str), ("event_name", str)):
        value = event.get(key)
        if not isinstance(value, kind) or not value or len(value) > _ID_MAX:
            raise _Invalid(422, f"{key} must be a non-empty string of at most {_ID_MAX} characters")
    if str(event.get("site_id")) != site_id:
        raise _Invalid(422, "site_id in the body does not match the authenticated site")
    if not isinstance(event.get("event_time"), int) or isinstance(event.get("event_time"), bool):
        raise _Invalid(422, "event_time must be unix seconds (an integer)")
    for key in ("user_data", "custom_data", "client_meta"):
        if key in event and not isinstance(event[key], dict):
            raise _Invalid(422, f"{key} must be an object")
    for key, value in (event.get("user_data") or {}).items():
        if not isinstance(value, (str, int, float)) or (isinstance(value, str) and len(value) > 2048):
            raise _Invalid(422, f"user_data.{key} must be a short string")
    return event


class Hub:
    def __init__(self, sites: list[HubSite], store: Store, faults: Faults) -> None:
        self.sites = {s.site_id: s for s in sites}
        self.store = store
        self.faults = faults
        self.closing = False

    # -- auth ------------------------------------------------------------------------------
    def _browser_site(self, request: Request) -> HubSite | None:
        key = request.headers.get(_wire.API_KEY_HEADER) or request.query_params.get(_wire.BEACON_KEY_PARAM)
        site_id = request.headers.get(_wire.SITE_ID_HEADER) or request.query_params.get(_wire.BEACON_SITE_PARAM)
        site = self.sites.get(site_id or "")
        return site if site is not None and key == site.publishable_key else None

    def _server_site(self, request: Request) -> HubSite | None:
        auth = request.headers.get(_wire.AUTH_HEADER, "")
        scheme, _, key = auth.partition(" ")
        site = self.sites.get(request.headers.get(_wire.SITE_ID_HEADER, ""))
        if site is None or scheme != _wire.AUTH_SCHEME or key != site.secret_key:
            return None
        return site

    # -- bodies ----------------------------------------------------------------------------
    async def _json(self, request: Request) -> Any:
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > MAX_BODY:
            raise _Invalid(413, f"body larger than {MAX_BODY} bytes")
        raw = b""
        async for chunk in request.stream():
            raw += chunk
            if len(raw) > MAX_BODY:
                raise _Invalid(413, f"body larger than {MAX_BODY} bytes")
        if request.headers.get("content-encoding", "").lower() == "gzip":
            try:
                inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
                raw = inflater.decompress(raw, MAX_BODY + 1)
            except zlib.error:
                raise _Invalid(400, "body is not valid gzip") from None
            if len(raw) > MAX_BODY or inflater.unconsumed_tail:
                raise _Invalid(413, f"body larger than {MAX_BODY} bytes after gunzip")
        try:
            return json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            raise _Invalid(400, "body is not valid JSON") from None

    async def _fault(self, source: str) -> Response | None:
        mode = self.faults.pick(source)
        if mode is None:
            return None
        if mode == "500":
            return _error(500, "injected fault")
        if mode == "429":
            return JSONResponse(
                {"error": "injected rate limit"},
                status_code=429,
                headers={"Retry-After": str(int(self.faults.retry_after))},
            )
        if mode == "hang":
            # In short steps, so that a hub being stopped lets its hung requests go.
            loop = asyncio.get_running_loop()
            until = loop.time() + self.faults.hang_seconds
            while loop.time() < until and not self.closing:
                await asyncio.sleep(0.05)
            return _error(503, "injected hang ended")
        raise _Drop()

    # -- ingest ----------------------------------------------------------------------------
    async def ingest(self, request: Request) -> Response:
        source = "server" if "/server" in request.url.path else "browser"
        batch = request.url.path.endswith("/batch")
        site = self._server_site(request) if source == "server" else self._browser_site(request)
        if site is None:
            return _error(
                401,
                "missing or wrong key for this site"
                + (
                    " (server endpoints take the secret key as a Bearer token)"
                    if source == "server"
                    else " (browser endpoints take the publishable key)"
                ),
            )
        fault = await self._fault(source)
        if fault is not None:
            return fault
        try:
            doc = await self._json(request)
            if not batch:
                event = validate_event(doc, site.site_id)
                fresh = self.store.add(site.site_id, source, event)
                return JSONResponse({"status": "ok", "event_id": event["event_id"], "duplicate": not fresh})
            events = doc.get("events") if isinstance(doc, dict) else None
            if not isinstance(events, list) or not events:
                raise _Invalid(422, 'a batch body is {"events": [...]} with at least one event')
            if len(events) > _wire.BATCH_MAX_EVENTS:
                raise _Invalid(413, f"at most {_wire.BATCH_MAX_EVENTS} events in a batch")
        except _Invalid as exc:
            return _error(exc.status, exc.message)
        results = []
        for event in events:
            eid = event.get("event_id") if isinstance(event, dict) else None
            try:
                validate_event(event, site.site_id)
            except _Invalid as exc:
                results.append({"event_id": eid, "status": "drop", "error": exc.message})
                continue
            fresh = self.store.add(site.site_id, source, event)
            results.append({"event_id": eid, "status": "ok", "duplicate": not fresh})
        return JSONResponse({"results": results})

    async def config(self, request: Request) -> Response:
        site_id = request.query_params.get("site_id") or request.headers.get(_wire.SITE_ID_HEADER, "")
        site = self.sites.get(site_id)
        if site is None:
            return _error(404, "unknown site")
        policy = {
            name: {"max_age_ms": int(age * 1000), "max_attempts": n} for name, (age, n) in _wire.RETRY_POLICY.items()
        }
        doc = {"site_id": site.site_id, "platforms": {}, "retry_policy": policy}
        body = json.dumps(doc, sort_keys=True).encode()
        etag = '"' + hashlib.sha256(body).hexdigest()[:16] + '"'
        headers = {"ETag": etag, "Cache-Control": "max-age=300"}
        if request.headers.get("if-none-match") == etag:
            return Response(status_code=304, headers=headers)
        return Response(body, media_type="application/json", headers=headers)

    # -- inspection and control ------------------------------------------------------------------
    async def list_events(self, request: Request) -> Response:
        site_id = request.query_params.get("site_id")
        return JSONResponse({"events": self.store.events(site_id=site_id)})

    async def list_groups(self, request: Request) -> Response:
        site_id = request.query_params.get("site_id")
        return JSONResponse({"groups": self.store.groups(site_id=site_id)})

    async def set_faults(self, request: Request) -> Response:
        if request.method == "POST":
            try:
                doc = await request.json()
                new = Faults(**{k: v for k, v in doc.items() if k != "hits"})
            except (ValueError, TypeError) as exc:
                return _error(400, f"bad faults: {exc}")
            if new.mode not in (None, "500", "429", "hang", "drop") or new.target not in ("server", "browser", "all"):
                return _error(400, "mode is one of 500, 429, hang, drop or null; target server, browser or all")
            self.faults.__dict__.update(new.__dict__)
        return JSONResponse(self.faults.as_dict())

    async def reset(self, request: Request) -> Response:
        self.store.clear()
        self.faults.__dict__.update(Faults().__dict__)
        return JSONResponse({"status": "ok"})

    async def page(self, request: Request) -> Response:
        html = resources.files(__package__).joinpath("page.html").read_text(encoding="utf-8")
        return HTMLResponse(html)


class _DropConnection:
    """Turns the "drop" fault into a connection closed mid-response, as a dying hub does."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await self.app(scope, receive, send)
        except _Drop:
            await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"100")]})
            await send({"type": "http.response.body", "body": b'{"sta', "more_body": True})
            raise ConnectionAbortedError("injected connection drop") from None


def create_hub(
    sites: list[HubSite] | None = None,
    *,
    database: str = ":memory:",
    faults: Faults | None = None,
) -> Starlette:
    """The hub app. ``app.state.hub`` holds the :class:`Hub` (store, faults, sites)."""
    sites = sites or [HubSite("site_demo", "pk_demo_publishable", "sk_demo_secret")]
    hub = Hub(sites, Store(database), faults or Faults())
    ingest_paths = (
        _wire.BROWSER_EVENT_PATH,
        _wire.BROWSER_BATCH_PATH,
        _wire.SERVER_EVENT_PATH,
        _wire.SERVER_BATCH_PATH,
    )
    routes = [Route(p, hub.ingest, methods=["POST"]) for p in ingest_paths] + [
        Route(_wire.CONFIG_PATH, hub.config, methods=["GET"]),
        Route("/api/hub/events", hub.list_events, methods=["GET"]),
        Route("/api/hub/groups", hub.list_groups, methods=["GET"]),
        Route("/api/hub/faults", hub.set_faults, methods=["GET", "POST"]),
        Route("/api/hub/reset", hub.reset, methods=["POST"]),
        Route("/", hub.page, methods=["GET"]),
    ]
    middleware = [
        # The browser SDK posts cross-origin with credentials omitted; any origin may.
        Middleware(
            CORSMiddleware,
            allow_origins=["*"],
            allow_methods=["GET", "POST"],
            allow_headers=[
                "Content-Type",
                "Content-Encoding",
                _wire.API_KEY_HEADER,
                _wire.SITE_ID_HEADER,
                "If-None-Match",
            ],
            expose_headers=["ETag"],
            max_age=600,
        ),
        Middleware(_DropConnection),
    ]
    app = Starlette(routes=routes, middleware=middleware)
    app.state.hub = hub
    return app


__all__ = ["Faults", "Hub", "HubSite", "create_hub"]
