"""The hub's HTTP side: ingest, config, the page, inspection and control, and faults."""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import json
import math
import re
import zlib
from collections.abc import Iterable
from importlib import resources
from typing import Any

from starlette.applications import Starlette
from starlette.datastructures import Headers
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .. import _wire
from . import faults as _faults
from . import platforms as _platforms
from .faults import Faults, FaultSwitch, Mode
from .sites import DEMO_SITE, HubSite
from .store import DEFAULT_LIMIT, DEFAULT_MAX_BYTES, MAX_LIMIT, Store

MAX_BODY = 1024 * 1024  # after gunzip too
# Deep enough for any real event; shallow enough that re-encoding it inside the
# feed's own document can never hit Python's recursion limit.
MAX_DEPTH = 32
_ID_MAX = 128

_KIND_OF_PATH = {
    _wire.BROWSER_EVENT_PATH: "browser",
    _wire.BROWSER_BATCH_PATH: "browser",
    _wire.SERVER_EVENT_PATH: "server",
    _wire.SERVER_BATCH_PATH: "server",
    _wire.CONFIG_PATH: "config",  # fetched by the browser SDK, cross-origin
}
# The browser SDK posts cross-origin with credentials omitted; any origin may.
_CORS: dict[str, Any] = {
    "allow_origins": ["*"],
    "allow_methods": ["GET", "POST"],
    "allow_headers": ["Content-Type", "Content-Encoding", _wire.API_KEY_HEADER, _wire.SITE_ID_HEADER, "If-None-Match"],
    "expose_headers": ["ETag"],
    "max_age": 600,
}
# A Host header as browsers send it: a name or an IPv4 literal, or a bracketed IPv6.
_HOST_RE = re.compile(r"(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<name>[A-Za-z0-9.-]+))(?::[0-9]{1,5})?")


class _Invalid(Exception):
    def __init__(self, status: int, message: str) -> None:
        self.status = status
        self.message = message


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def _depth(doc: Any) -> int:
    """How deeply ``doc``'s containers nest (iteratively: it must not recurse itself)."""
    deepest, stack = 0, [(doc, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, (dict, list)):
            deepest = max(deepest, depth)
            if depth > MAX_DEPTH:
                break
            stack.extend((item, depth + 1) for item in (value.values() if isinstance(value, dict) else value))
    return deepest


def parse_json(raw: bytes) -> Any:
    """A body as JSON the hub can store and serve back: raises _Invalid(400) on what
    ``json.loads`` accepts but the events feed could not render (NaN, ``1e400``, an
    unpaired surrogate, nesting deeper than MAX_DEPTH)."""
    try:
        doc = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise _Invalid(400, "body is not valid JSON") from None
    if _depth(doc) > MAX_DEPTH:
        raise _Invalid(400, f"body nests deeper than {MAX_DEPTH} levels")
    try:  # exactly what the feed's JSONResponse will do with it
        json.dumps(doc, ensure_ascii=False, allow_nan=False).encode("utf-8")
    except ValueError:  # UnicodeEncodeError included
        raise _Invalid(400, "body holds NaN, Infinity, a number out of range or an unpaired surrogate") from None
    return doc


def validate_event(event: Any, site_id: str) -> dict[str, Any]:
    """The event body's schema (the browser SDK's, ``_wire``); raises _Invalid(422)
    naming the first problem."""
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


async def _read_body(request: Request) -> bytes:
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
    return raw


async def _control_body(request: Request) -> dict[str, Any]:
    """A control route's body: JSON, declared as such. A cross-site form or a
    ``fetch`` without a preflight cannot send ``application/json``, and the hub
    grants no preflight on these routes."""
    media_type = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    if media_type != "application/json":
        raise _Invalid(415, 'control routes take a JSON body with Content-Type: application/json (e.g. "{}")')
    doc = parse_json(await _read_body(request))
    if not isinstance(doc, dict):
        raise _Invalid(400, "the body must be a JSON object")
    return doc


class Hub:
    """The routes' endpoints, and the hub's state: sites, store, faults."""

    def __init__(self, sites: list[HubSite], store: Store, faults: FaultSwitch) -> None:
        self.sites = {s.site_id: s for s in sites}
        self.store = store
        self.faults = faults
        self.closing = False  # set when the server stops: hung requests let go
        self.unpaired_after = 60.0

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

    # -- ingest ----------------------------------------------------------------------------
    async def ingest(self, request: Request) -> Response:
        source = _KIND_OF_PATH[request.url.path]
        site = self._server_site(request) if source == "server" else self._browser_site(request)
        if site is None:
            hint = "server endpoints take the secret key as a Bearer token"
            if source == "browser":
                hint = "browser endpoints take the publishable key"
            return _error(401, f"missing or wrong key for this site ({hint})")
        try:
            doc = parse_json(await _read_body(request))
            if not request.url.path.endswith("/batch"):
                event = validate_event(doc, site.site_id)
                fresh = self.store.add(site.site_id, source, event, _peer(request.scope))
                return JSONResponse({"status": "ok", "event_id": event["event_id"], "duplicate": not fresh})
            events = doc.get("events") if isinstance(doc, dict) else None
            if not isinstance(events, list) or not events:
                raise _Invalid(422, 'a batch body is {"events": [...]} with at least one event')
            most = _wire.SERVER_BATCH_MAX_EVENTS if source == "server" else _wire.BATCH_MAX_EVENTS
            if len(events) > most:
                raise _Invalid(413, f"at most {most} events in a batch")
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
            fresh = self.store.add(site.site_id, source, event, _peer(request.scope))
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

    # -- inspection and control ------------------------------------------------------------
    async def list_events(self, request: Request) -> Response:
        """``GET /api/hub/events?limit=200&before=<seq>&site_id=``: newest first;
        ``next`` is the ``before`` of the next page, ``truncated`` says one exists."""
        try:
            q = _Query(request)
            page = self.store.events_page(q.limit(), q.text("site_id"), q.integer("before"))
        except _Invalid as exc:
            return _error(exc.status, exc.message)
        return JSONResponse(page.as_dict("events"))

    async def list_groups(self, request: Request) -> Response:
        """``GET /api/hub/groups``: dedupe groups newest first, each with its id's
        verdict; filters ``name`` (part of it, any case), ``verdict``, ``since`` and
        ``until`` (unix seconds), ``site_id``; paged as the events are."""
        try:
            q = _Query(request)
            filters = q.filters()
            verdict = q.text("verdict")
            if verdict and verdict not in _platforms.VERDICTS:
                raise _Invalid(400, f"verdict must be one of {', '.join(_platforms.VERDICTS)}")
            unpaired_after = q.number("unpaired_after", self.unpaired_after)
            limit, before = q.limit(), q.integer("before")
        except _Invalid as exc:
            return _error(exc.status, exc.message)
        # Changes with the store, the query, and every 5 s (the "unpaired" flags age).
        tag = hash((tuple(sorted(request.query_params.items())), int(self.store.clock() // 5)))
        etag = f'"{self.store.version}-{tag}"'
        if request.headers.get("if-none-match") == etag:
            return Response(status_code=304, headers={"ETag": etag})
        page = self.store.groups_page(limit, before=before, verdict=verdict, **filters)
        now = self.store.clock()
        for g in page.items:
            g["stale"] = len(g["sources"]) == 1 and now - g["first_received_at"] > unpaired_after
        doc = {
            **page.as_dict("groups"),
            "counts": self.store.verdict_counts(**filters),
            "store": self.store.status(),
            "now": now,
        }
        return JSONResponse(doc, headers={"ETag": etag, "Cache-Control": "no-cache"})

    async def group(self, request: Request) -> Response:
        """``GET /api/hub/group?event_id=&site_id=&reveal=0``: one id explained
        (:func:`.platforms.explain`); match-key values redacted unless ``reveal=1``."""
        try:
            q = _Query(request)
            event_id = q.text("event_id")
            site_id = q.text("site_id") or (next(iter(self.sites)) if len(self.sites) == 1 else None)
            if not event_id or not site_id:
                raise _Invalid(400, "event_id (and site_id when the hub has several sites) are required")
            unpaired_after = q.number("unpaired_after", self.unpaired_after)
            reveal = q.text("reveal") in ("1", "true")
        except _Invalid as exc:
            return _error(exc.status, exc.message)
        records = self.store.id_events(site_id, event_id)
        if not records:
            return _error(404, "no event carries this event_id (evicted, reset, or never received)")
        doc = _platforms.explain(records, self.store.clock(), unpaired_after, reveal)
        return JSONResponse({"site_id": site_id, **doc})

    async def dashboard(self, request: Request) -> Response:
        """``GET /api/hub/dashboard``: totals with Meta's definitions, same filters as groups."""
        try:
            q = _Query(request)
            filters, lag = q.filters(), q.text("live") == "1"  # the page's polls may lag a flood a little
        except _Invalid as exc:
            return _error(exc.status, exc.message)
        doc = self.store.dashboard(lag=lag, **filters)
        counts = self.store.verdict_counts(**filters)
        return JSONResponse({**doc, "counts": counts, "store": self.store.status()})

    async def get_faults(self, request: Request) -> Response:
        return JSONResponse(self.faults.as_dict())

    async def set_faults(self, request: Request) -> Response:
        try:
            faults = Faults.from_json(await _control_body(request))
        except _Invalid as exc:
            return _error(exc.status, exc.message)
        except (ValueError, TypeError) as exc:
            return _error(400, f"bad fault settings: {exc}")
        self.faults.set(faults)
        return JSONResponse(self.faults.as_dict())

    async def reset(self, request: Request) -> Response:
        try:
            await _control_body(request)
        except _Invalid as exc:
            return _error(exc.status, exc.message)
        self.store.clear()
        self.faults.set(Faults())
        return JSONResponse({"status": "ok"})

    async def page(self, request: Request) -> Response:
        html = resources.files(__package__).joinpath("page.html").read_text(encoding="utf-8")
        return HTMLResponse(html, headers=_PAGE_HEADERS)

    async def script(self, request: Request) -> Response:
        js = resources.files(__package__).joinpath("page.js").read_text(encoding="utf-8")
        return Response(js, media_type="text/javascript", headers=_PAGE_HEADERS)


# The page renders what browsers sent (anyone with the publishable key): its script
# writes text only, and the policy allows no other script, no framing, no form posts.
_PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'unsafe-inline'; "
    "connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


class _Query:
    """Query parameters, checked: a bad one is a 400 that names it."""

    def __init__(self, request: Request) -> None:
        self.params = request.query_params

    def text(self, name: str) -> str | None:
        value = self.params.get(name)
        if value is not None and len(value) > 256:
            raise _Invalid(400, f"{name} is too long")
        return value or None

    def number(self, name: str, default: float) -> float:
        raw = self.params.get(name)
        if raw is None or raw == "":
            return default
        try:
            value = float(raw)
        except ValueError:
            raise _Invalid(400, f"{name} must be a number, got {raw[:20]!r}") from None
        if not math.isfinite(value) or value < 0:
            raise _Invalid(400, f"{name} must be a finite number >= 0")
        return value

    def integer(self, name: str) -> int | None:
        raw = self.params.get(name)
        if raw is None or raw == "":
            return None
        if not raw.isdigit() or len(raw) > 18:
            raise _Invalid(400, f"{name} must be a whole number >= 0, got {raw[:20]!r}")
        return int(raw)

    def limit(self) -> int:
        value = self.integer("limit")
        if value is None:
            return DEFAULT_LIMIT
        if not 1 <= value <= MAX_LIMIT:
            raise _Invalid(400, f"limit must be from 1 to {MAX_LIMIT}")
        return value

    def filters(self) -> dict[str, Any]:
        since = self.params.get("since")
        until = self.params.get("until")
        return {
            "site_id": self.text("site_id"),
            "name": self.text("name"),
            "since": None if not since else self.number("since", 0),
            "until": None if not until else self.number("until", 0),
        }


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        addr = ipaddress.ip_address(text.split("%", 1)[0])  # a scoped fe80::1%eth0
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr


def _peer(scope: Scope) -> str | None:
    """The address a request came from (after the server's own proxy-header handling)."""
    client = scope.get("client")
    if not client:
        return None
    addr = _ip(str(client[0]))
    return str(addr) if addr is not None else str(client[0])[:64]


def _is_loopback_host(host: str) -> bool:
    if host == "localhost":  # resolved by the OS itself, never through DNS
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class HubApp:
    """The hub as an ASGI app. Each kind of route has its rule:

    * browser ingest and config: CORS for any origin (the browser SDK posts from the
      shop's pages, credentials omitted);
    * server ingest: no CORS; servers need none;
    * everything else (the page, ``/api/hub/*``): only from a loopback peer or one in
      ``allowed_peers`` (networks), so that a hub bound to ``0.0.0.0`` does not show or
      hand its controls to the network; same-origin only, and only when the Host
      header is a loopback host or one of ``allowed_hosts``: a page on another origin
      cannot read or drive the hub, and a DNS-rebound name cannot pass for the hub's own.

    Ingest requests may first meet the injected faults (``hub.faults``)."""

    def __init__(self, hub: Hub, allowed_hosts: Iterable[str] = (), allowed_peers: Iterable[str] = ()) -> None:
        self.hub = hub
        self.allowed_hosts = frozenset(h.lower() for h in allowed_hosts)
        self.allowed_peers = tuple(_network(p) for p in allowed_peers)
        self._routes = Starlette(routes=_routes(hub))
        self._cors = CORSMiddleware(self._routes, **_CORS)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":  # lifespan
            await self._routes(scope, receive, send)
            return
        kind = _KIND_OF_PATH.get(scope["path"])
        if kind is None:
            refusal = self._refusal(scope)
            await (refusal or self._routes)(scope, receive, send)
            return
        app: ASGIApp = self._routes if kind == "server" else self._cors
        mode = self.hub.faults.pick(kind) if kind != "config" and scope["method"] == "POST" else None
        if mode is None:
            await app(scope, receive, send)
        else:
            await self._inject(mode, app, scope, receive, send)

    def _local_peer(self, scope: Scope) -> bool:
        client = scope.get("client")
        if not client:  # a Unix socket: only this machine can connect
            return True
        addr = _ip(str(client[0]))
        if addr is None:
            return False
        server = scope.get("server")
        # A peer whose address is the one it connected to is this machine (a hub bound to
        # 192.168.1.5, opened at http://192.168.1.5:8787): no other host can complete a
        # TCP handshake from our own address.
        same_machine = server is not None and _ip(str(server[0])) == addr
        return addr.is_loopback or same_machine or any(addr in net for net in self.allowed_peers)

    def _refusal(self, scope: Scope) -> Response | None:
        if not self._local_peer(scope):
            return _error(
                403,
                "the hub's page and /api/hub/* answer only to this machine (a loopback peer) "
                "or to addresses allowed with --allow-peer",
            )
        headers = Headers(scope=scope)
        host = headers.get("host", "")
        m = _HOST_RE.fullmatch(host)
        name = (m.group("v6") or m.group("name")).lower() if m else ""
        if not (_is_loopback_host(name) or name in self.allowed_hosts):
            return _error(
                403,
                "the hub's page and /api/hub/* answer only to a loopback host (localhost, 127.0.0.1, [::1]) "
                "or one allowed with --allow-host",
            )
        origin = headers.get("origin")
        if origin is not None and origin.lower() != f"{scope['scheme']}://{host}".lower():
            return _error(403, "cross-origin requests to the hub's page and /api/hub/* are refused")
        return None

    async def _inject(self, mode: Mode, app: ASGIApp, scope: Scope, receive: Receive, send: Send) -> None:
        faults = self.hub.faults.faults
        transport = _faults.raw_transport(send)
        if mode == "500":
            await self._answer(app, _error(500, "injected fault"), scope, receive, send)
        elif mode == "429":
            response = _error(429, "injected rate limit")
            response.headers["Retry-After"] = str(faults.retry_after)
            await self._answer(app, response, scope, receive, send)
        elif mode == "hang":
            # In short steps, so that a hub being stopped lets its hung requests go.
            loop = asyncio.get_running_loop()
            until = loop.time() + faults.hang_seconds
            while loop.time() < until and not self.hub.closing:
                await asyncio.sleep(0.05)
            await self._answer(app, _error(503, "injected hang ended"), scope, receive, send)
        elif mode == "drip":
            await self._drip(app, scope, receive, send, transport, faults.drip_ms / 1000)
        elif mode == "reset":
            await _drain(receive)
            if transport is None:
                raise ConnectionResetError("injected connection reset")
            await _faults.reset(transport)
        else:  # "drop": headers and part of the body, then the connection closes
            await _drain(receive)  # unread request bytes would turn the close into a reset
            await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"100")]})
            await send({"type": "http.response.body", "body": b'{"sta', "more_body": True})
            if transport is None:
                raise ConnectionAbortedError("injected connection drop")
            await _faults.close(transport)

    async def _answer(self, app: ASGIApp, response: Response, scope: Scope, receive: Receive, send: Send) -> None:
        """A canned answer, under the route's CORS rule so that the browser SDK sees it."""
        await (CORSMiddleware(response, **_CORS) if app is self._cors else response)(scope, receive, send)

    async def _drip(
        self,
        app: ASGIApp,
        scope: Scope,
        receive: Receive,
        send: Send,
        transport: asyncio.Transport | None,
        interval: float,
    ) -> None:
        """The request is handled for real (the event is stored); its answer is written
        one byte per ``interval``: under uvicorn the status line and headers too."""
        status, headers, body = 500, [], bytearray()

        async def capture(message: Message) -> None:
            nonlocal status, headers
            if message["type"] == "http.response.start":
                status, headers = message["status"], list(message.get("headers", []))
            elif message["type"] == "http.response.body":
                body.extend(message.get("body", b""))

        await app(scope, receive, capture)
        if transport is not None:
            await _faults.drip(transport, _faults.http_bytes(status, headers, bytes(body)), interval, self._stopping)
            return
        await send({"type": "http.response.start", "status": status, "headers": headers})
        for i in range(len(body)):
            if self.hub.closing:
                break
            await send({"type": "http.response.body", "body": bytes(body[i : i + 1]), "more_body": True})
            await asyncio.sleep(interval)
        await send({"type": "http.response.body", "body": b""})

    def _stopping(self) -> bool:
        return self.hub.closing


async def _drain(receive: Receive) -> None:
    """Read the request body: the client has sent everything before the fault hits."""
    while True:
        message = await receive()
        if message["type"] != "http.request" or not message.get("more_body", False):
            return


def _routes(hub: Hub) -> list[Route]:
    ingest = [Route(path, hub.ingest, methods=["POST"]) for path, kind in _KIND_OF_PATH.items() if kind != "config"]
    return [
        *ingest,
        Route(_wire.CONFIG_PATH, hub.config, methods=["GET"]),
        Route("/api/hub/events", hub.list_events, methods=["GET"]),
        Route("/api/hub/groups", hub.list_groups, methods=["GET"]),
        Route("/api/hub/group", hub.group, methods=["GET"]),
        Route("/api/hub/dashboard", hub.dashboard, methods=["GET"]),
        Route("/api/hub/faults", hub.get_faults, methods=["GET"]),
        Route("/api/hub/faults", hub.set_faults, methods=["POST"]),
        Route("/api/hub/reset", hub.reset, methods=["POST"]),
        Route("/", hub.page, methods=["GET"]),
        Route("/page.js", hub.script, methods=["GET"]),
    ]


def create_hub(
    sites: list[HubSite] | None = None,
    *,
    database: str = ":memory:",
    faults: Faults | None = None,
    allowed_hosts: Iterable[str] = (),
    allowed_peers: Iterable[str] = (),
    max_db_bytes: int = DEFAULT_MAX_BYTES,
    unpaired_after: float = 60.0,
) -> HubApp:
    """The hub app; ``app.hub`` holds its :class:`Hub` (sites, store, faults).
    ``allowed_hosts``: host names besides the loopback ones under which the page and
    ``/api/hub/*`` answer (the name the hub is reached by in a docker network);
    ``allowed_peers``: addresses or networks (``172.16.0.0/12``) besides loopback whose
    requests they answer; ``max_db_bytes``: the cap on stored event bodies (the oldest
    are evicted past it); ``unpaired_after``: seconds before a one-sided group is
    flagged."""
    hub = Hub(sites or [DEMO_SITE], Store(database, max_bytes=max_db_bytes), FaultSwitch(faults))
    hub.unpaired_after = unpaired_after
    return HubApp(hub, allowed_hosts, allowed_peers)


def _network(text: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    try:
        return ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise ValueError(f"allowed_peers: {text!r} is not an IP address or network") from None


__all__ = ["Hub", "HubApp", "create_hub", "parse_json", "validate_event"]
