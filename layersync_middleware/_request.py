"""What an event needs from an inbound request, read from whatever the app has.

Accepts an ASGI scope, a WSGI environ, and any object carrying one (Starlette's and
Django's ``.scope``, Werkzeug's and Django's ``.environ``, Django's ``.META``), by
duck typing: no web framework is imported here.
"""

from __future__ import annotations

import functools
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, NamedTuple
from urllib.parse import quote, unquote, unquote_plus

from . import _wire
from ._ip import client_ip, forwarded_entry
from ._log import logger

_MAX_VALUE = 1024  # longer click ids or user agents are junk, not data
_MAX_QUERY_FIELDS = 256  # click ids are read from the first fields of a URL only
_EVENT_ID_KEY = _wire.EVENT_ID_HEADER.lower()
_EVENT_NAME_KEY = _wire.EVENT_NAME_HEADER.lower()
_WANTED = frozenset(
    {
        "x-forwarded-for",
        "x-forwarded-proto",
        "x-forwarded-host",
        "user-agent",
        "referer",
        "cookie",
        "host",
        _EVENT_ID_KEY,
        _EVENT_NAME_KEY,
    }
)
# Lookups made once, not per request: ASGI header names as bytes, WSGI environ keys.
_SCOPE_NAMES = {name.encode("latin-1"): name for name in _WANTED}
_SCOPE_NAME_LENGTHS = frozenset(len(name) for name in _SCOPE_NAMES)
_ENVIRON_KEYS = tuple(("HTTP_" + name.upper().replace("-", "_"), name) for name in _WANTED)
_COOKIE_NAMES = frozenset(c for _, c in _wire.CLICK_IDS.values() if c)
_CLICK_PARAMS = frozenset(p for p, _ in _wire.CLICK_IDS.values() if p)
# What a proxy may tell us the public host is: a DNS name or an IP literal, and a port.
_HOST_RE = re.compile(r"(?:[A-Za-z0-9_.-]{1,253}|\[[0-9A-Fa-f:.]{2,45}\])(?::[0-9]{1,5})?")


class RequestContext(NamedTuple):
    """The parts of a request an event uses. Header values are raw and untrusted."""

    peer: str | None
    headers: dict[str, list[str]]  # lower-case name -> lines, only the ones we use
    scheme: str
    host: str
    path: str  # the app's routing path: without root_path / SCRIPT_NAME
    full_path: str  # percent-encoded, mount prefix included, for URLs
    query: str

    def header(self, name: str) -> str | None:
        lines = self.headers.get(name)
        return ", ".join(lines) if lines else None

    def origin(self, trust_proxy: int = 0) -> tuple[str, str]:
        """``(scheme, host)`` the client used. Behind ``trust_proxy`` proxies, the
        ``X-Forwarded-Proto``/``-Host`` entry they vouch for (the same rule as the
        client IP); an entry that is not a scheme or a host is ignored."""
        scheme, host = self.scheme, self.host
        if trust_proxy > 0:
            proto = forwarded_entry(self.headers.get("x-forwarded-proto", ()), trust_proxy)
            if proto and proto.lower() in ("http", "https"):
                scheme = proto.lower()
            fwd_host = forwarded_entry(self.headers.get("x-forwarded-host", ()), trust_proxy)
            if fwd_host and _HOST_RE.fullmatch(fwd_host):
                host = fwd_host
        return scheme, host

    def url_for(self, trust_proxy: int = 0) -> str:
        """The request URL as the client saw it (see ``origin``)."""
        scheme, host = self.origin(trust_proxy)
        q = f"?{self.query}" if self.query else ""
        return f"{scheme}://{host}{self.full_path}{q}"

    @property
    def url(self) -> str:
        """The request URL as the server received it (no proxy headers)."""
        return self.url_for(0)

    def page_url(self, trust_proxy: int = 0) -> str:
        """The page the request was made from (a same-origin Referer), else the request URL.

        For a fetch/XHR from a page, the page is what the browser event reports as
        ``event_source_url`` and where its ad-click parameters live."""
        ref = self.header("referer")
        if ref and len(ref) <= 2048:
            # The authority by hand, as urlsplit finds it (between "//" and the first / ? #),
            # at a fraction of its cost: this runs for every paired event.
            scheme, sep, rest = ref.partition("://")
            if sep and scheme.lower() in ("http", "https"):
                end = len(rest)
                for stop in "/?#":
                    at = rest.find(stop, 0, end)
                    if at >= 0:
                        end = at
                if rest[:end] == self.origin(trust_proxy)[1]:
                    return ref
        return self.url_for(trust_proxy)

    def pairing(self) -> tuple[str, str] | None:
        event_id = self.header(_EVENT_ID_KEY)
        event_name = self.header(_EVENT_NAME_KEY)
        if event_id is None or event_name is None:
            return None
        return event_id, event_name


def route_path(path: str, root_path: str) -> str:
    """The path the app routes on: ``path`` without the mount prefix, as Starlette
    computes it (``/shop`` is not a prefix of ``/shopping``)."""
    if not root_path or not path.startswith(root_path):
        return path
    if len(path) == len(root_path):
        return "/"
    return path[len(root_path) :] if path[len(root_path)] == "/" else path


class RawScope(NamedTuple):
    """An ASGI request as read on the request path: the headers an event uses, raw (found
    in the same pass that looked for the pairing headers), and the scope's fields. The
    sender decodes it (:func:`context`), off the request."""

    headers: tuple[tuple[str, bytes], ...]  # (one of _WANTED, raw value), in order
    client: Any
    scheme: str | None
    server: Any
    path: str
    root_path: str | None
    raw_path: bytes | None
    query_string: bytes | None


def scan_scope_headers(raw_headers: Any) -> list[tuple[str, bytes]]:
    """The headers an event uses, raw, in one pass (see :data:`_WANTED`)."""
    found: list[tuple[str, bytes]] = []
    wanted = _SCOPE_NAMES.get
    for raw_name, raw_value in raw_headers:
        name = wanted(raw_name)
        if name is None:
            # Servers send lower-case names; lower() only what could be one we want.
            if len(raw_name) not in _SCOPE_NAME_LENGTHS:
                continue
            name = wanted(raw_name.lower())
            if name is None:
                continue
        found.append((name, raw_value))
    return found


def raw_scope(scope: Mapping[str, Any], headers: Sequence[tuple[str, bytes]]) -> RawScope:
    return RawScope(
        tuple(headers),
        scope.get("client"),
        scope.get("scheme"),
        scope.get("server"),
        scope.get("path") or "/",
        scope.get("root_path"),
        scope.get("raw_path"),
        scope.get("query_string"),
    )


def context(read: RequestContext | RawScope) -> RequestContext:
    """A request read on the request path, decoded for the event (on the sender)."""
    if isinstance(read, RequestContext):
        return read
    headers: dict[str, list[str]] = {}
    for name, raw_value in read.headers:
        headers.setdefault(name, []).append(raw_value.decode("latin-1"))
    client = read.client
    scheme = read.scheme or "http"
    host = headers["host"][0] if "host" in headers else _server_host(read.server, scheme)
    path = read.path
    root = read.root_path or ""
    if read.raw_path:
        full_path = read.raw_path.decode("latin-1")
        if root and not path.startswith(root):  # servers that keep root_path out of path
            full_path = quote(root) + full_path
    else:
        full_path = quote(path if path.startswith(root) else root + path)
    query = (read.query_string or b"").decode("latin-1")
    # Positionally: keywords cost a NamedTuple a third of its construction.
    return RequestContext(
        client[0] if client else None, headers, scheme, host, route_path(path, root), full_path, query
    )


def _from_scope(scope: Mapping[str, Any]) -> RequestContext:
    return context(raw_scope(scope, scan_scope_headers(scope.get("headers") or ())))


def _server_host(server: Any, scheme: str) -> str:
    """Host and port from the server's own address, for a request without ``Host``."""
    if not server:
        return "localhost"
    host, port = server[0], server[1]
    if isinstance(host, str) and ":" in host and not host.startswith("["):
        host = f"[{host}]"  # an IPv6 address in a URL
    if not isinstance(host, str) or not _HOST_RE.fullmatch(host):
        return "localhost"  # a unix socket path is no host name
    if isinstance(port, str):  # WSGI: SERVER_PORT is text, and not always a number
        port = int(port) if port.isdigit() and len(port) <= 5 else None
    default = 443 if scheme in ("https", "wss") else 80
    return host if port in (None, default) else f"{host}:{port}"


def wsgi_text(value: str) -> str:
    # PEP 3333: native strings carrying bytes as latin-1.
    try:
        return value.encode("latin-1").decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        return value


def _from_environ(environ: Mapping[str, Any], scheme: str | None = None) -> RequestContext:
    headers: dict[str, list[str]] = {}
    for key, name in _ENVIRON_KEYS:
        value = environ.get(key)
        if value is not None:
            headers[name] = [value]
    scheme = scheme or environ.get("wsgi.url_scheme") or "http"
    host = environ.get("HTTP_HOST") or _server_host(
        (environ.get("SERVER_NAME") or "localhost", str(environ.get("SERVER_PORT") or "")), scheme
    )
    script = environ.get("SCRIPT_NAME") or ""
    path_info = environ.get("PATH_INFO") or "/"
    full = (script + path_info).encode("latin-1", "replace")
    return RequestContext(
        peer=environ.get("REMOTE_ADDR"),
        headers=headers,
        scheme=scheme,
        host=host,
        path=wsgi_text(path_info) or "/",
        full_path=quote(full, safe="/:@!$&'()*+,;=-._~%"),
        query=environ.get("QUERY_STRING") or "",
    )


def request_context(request: object) -> RequestContext:
    """Read a request of any supported kind. Raises TypeError for anything else."""
    if isinstance(request, RequestContext):
        return request
    if isinstance(request, Mapping):
        if "type" in request and "headers" in request:
            return _from_scope(request)
        if "REQUEST_METHOD" in request or "wsgi.version" in request:
            return _from_environ(request)
    scope = getattr(request, "scope", None)
    if isinstance(scope, Mapping) and "type" in scope:  # Starlette, Django's ASGIRequest
        return _from_scope(scope)
    environ = getattr(request, "environ", None)
    if isinstance(environ, Mapping):  # Werkzeug/Flask, Django's WSGIRequest
        return _from_environ(environ)
    meta = getattr(request, "META", None)
    if isinstance(meta, Mapping):  # any other Django HttpRequest
        scheme = getattr(request, "scheme", None)
        return _from_environ(meta, scheme if isinstance(scheme, str) else None)
    raise TypeError(
        f"request= takes an ASGI scope, a WSGI environ or a Starlette/Flask/Django request, "
        f"not {type(request).__name__}"
    )


def parse_cookies(header: str | None, wanted: Iterable[str] = _COOKIE_NAMES) -> dict[str, str]:
    """Only the cookies we want, decoded like the browser SDK's decodeURIComponent."""
    if not header:
        return {}
    want = wanted if isinstance(wanted, frozenset) else frozenset(wanted)
    found: dict[str, str] = {}
    for chunk in header.split(";"):
        name, sep, value = chunk.partition("=")
        name = name.strip()
        if sep and name in want and name not in found:
            value = value.strip().strip('"')
            if value and len(value) <= _MAX_VALUE:
                found[name] = unquote(value) if "%" in value else value
    return found


def query_params(query: str, wanted: Iterable[str] = _CLICK_PARAMS) -> dict[str, str]:
    """The first non-empty value of each wanted parameter, like ``parse_qs(...)[name][0]``,
    read from the first fields only: a long query never fails, it just ends sooner."""
    want = set(wanted)
    found: dict[str, str] = {}
    for field in query.split("&", _MAX_QUERY_FIELDS)[:_MAX_QUERY_FIELDS]:
        name, sep, value = field.partition("=")
        if not (sep and value):
            continue
        if "%" in name or "+" in name:
            name = unquote_plus(name)
        if name in want and name not in found:
            found[name] = unquote_plus(value)
    return found


# Which click id a URL parameter or a cookie carries; a parameter wins over its cookie.
_PARAM_KEYS = {param: key for key, (param, _) in _wire.CLICK_IDS.items() if param}
_COOKIE_KEYS = {cookie: key for key, (_, cookie) in _wire.CLICK_IDS.items() if cookie}


def request_user_data(ctx: RequestContext, trust_proxy: int, page_url: str) -> dict[str, str]:
    """What only the server knows about the shopper: IP, user agent and ad-click ids.

    Only what the request holds is looked at (a cookie or two, a parameter or none), not
    every click id we know: this runs once per paired event on the sender."""
    warn_untrusted_forwarded(ctx, trust_proxy)
    data: dict[str, str] = {}
    ip = client_ip(ctx.peer, ctx.headers.get("x-forwarded-for", ()), trust_proxy)
    if ip:
        data["client_ip_address"] = ip
    ua = ctx.header("user-agent")
    if ua and len(ua) <= _MAX_VALUE and ua.isprintable():
        data["user_agent"] = ua
    # The query by hand: urlsplit raises on a Host such as "[" (the client's to write).
    query = page_url.partition("?")[2].partition("#")[0]
    if query:
        for param, value in query_params(query).items():
            key = _PARAM_KEYS[param]
            if key == "fbc" and len(value) <= _MAX_VALUE and value.isprintable():
                value = _fbc_from_fbclid(value)
            if len(value) <= _MAX_VALUE and value.isprintable():
                data[key] = value
    cookie = ctx.headers.get("cookie")
    if cookie:
        for name, value in parse_cookies(", ".join(cookie) if len(cookie) > 1 else cookie[0]).items():
            key = _COOKIE_KEYS[name]
            if key not in data and value.isprintable():  # parse_cookies bounds the length
                data[key] = value
    return data


def attribution_url(url: str, kept: tuple[str, ...]) -> str:
    """``url`` with only the query parameters named in ``kept`` (``kept_query_params``;
    ``utm_*`` keeps a prefix; names compared without case), in their order and encoding,
    and without its fragment: an event's page URL carries what attributes the visit,
    never an ``?email=``, a reset token or a session id. Click ids were read from the
    whole URL before (:func:`request_user_data`)."""
    base, _, query = url.partition("#")[0].partition("?")
    if not query:
        return base
    keep = _param_filter(kept)
    fields = [f for f in query.split("&", _MAX_QUERY_FIELDS)[:_MAX_QUERY_FIELDS] if f and keep(f.partition("=")[0])]
    return f"{base}?{'&'.join(fields)}" if fields else base


@functools.lru_cache(maxsize=8)
def _param_filter(kept: tuple[str, ...]) -> Callable[[str], bool]:
    exact = frozenset(k.lower() for k in kept if not k.endswith("*"))
    prefixes = tuple(k[:-1].lower() for k in kept if k.endswith("*"))

    def keep(name: str) -> bool:
        if "%" in name or "+" in name:
            name = unquote_plus(name)
        name = name.lower()
        return name in exact or (bool(prefixes) and name.startswith(prefixes))

    return keep


def _fbc_from_fbclid(fbclid: str) -> str:
    # Meta's documented fbc format: fb.<subdomain index>.<creation time ms>.<fbclid>
    return f"fb.1.{int(time.time() * 1000)}.{fbclid}"


_warned_forwarded = False


def warn_untrusted_forwarded(ctx: RequestContext, trust_proxy: int) -> None:
    """Once per process: ``X-Forwarded-For`` arrived while ``trust_proxy`` is 0, so the
    client IP is the socket peer, which behind a proxy is the proxy. Silent when the
    server already applied the header (its peer is one of the entries: uvicorn's
    ``--proxy-headers``, Werkzeug's ``ProxyFix``). Cheap after the first warning."""
    global _warned_forwarded
    if _warned_forwarded or trust_proxy > 0:
        return
    lines = ctx.headers.get("x-forwarded-for")
    if not lines:
        return
    if ctx.peer and any(ctx.peer == entry.strip() for line in lines for entry in line.split(",")):
        return
    _warned_forwarded = True
    logger.warning(
        "X-Forwarded-For arrived but trust_proxy is 0, so client_ip_address is the socket peer. "
        "Behind N reverse proxies set trust_proxy=N (LAYERSYNC_TRUST_PROXY), unless the server "
        "already applies the header (uvicorn --proxy-headers, Werkzeug's ProxyFix). Said once."
    )
