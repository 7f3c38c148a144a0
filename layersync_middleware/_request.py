"""What an event needs from an inbound request, read from whatever the app has.

Accepts an ASGI scope, a WSGI environ, and any object carrying one (Starlette's and
Django's ``.scope``, Werkzeug's and Django's ``.environ``, Django's ``.META``), by
duck typing: no web framework is imported here.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple
from urllib.parse import parse_qs, quote, unquote, urlsplit

from . import _wire
from ._ip import client_ip

_MAX_VALUE = 1024  # longer click ids or user agents are junk, not data
_EVENT_ID_KEY = _wire.EVENT_ID_HEADER.lower()
_EVENT_NAME_KEY = _wire.EVENT_NAME_HEADER.lower()
_WANTED = frozenset({"x-forwarded-for", "user-agent", "referer", "cookie", "host", _EVENT_ID_KEY, _EVENT_NAME_KEY})
_COOKIE_NAMES = frozenset(c for _, c in _wire.CLICK_IDS.values() if c)


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

    @property
    def url(self) -> str:
        q = f"?{self.query}" if self.query else ""
        return f"{self.scheme}://{self.host}{self.full_path}{q}"

    def page_url(self) -> str:
        """The page the request was made from (a same-origin Referer), else the request URL.

        For a fetch/XHR from a page, the page is what the browser event reports as
        ``event_source_url`` and where its ad-click parameters live."""
        ref = self.header("referer")
        if ref and len(ref) <= 2048:
            try:
                parts = urlsplit(ref)
            except ValueError:
                return self.url
            if parts.scheme in ("http", "https") and parts.netloc == self.host:
                return ref
        return self.url

    def pairing(self) -> tuple[str, str] | None:
        event_id = self.header(_EVENT_ID_KEY)
        event_name = self.header(_EVENT_NAME_KEY)
        if event_id is None or event_name is None:
            return None
        return event_id, event_name


def _from_scope(scope: Mapping[str, Any]) -> RequestContext:
    headers: dict[str, list[str]] = {}
    for raw_name, raw_value in scope.get("headers") or ():
        name = raw_name.decode("latin-1").lower()
        if name in _WANTED:
            headers.setdefault(name, []).append(raw_value.decode("latin-1"))
    client = scope.get("client")
    host = headers["host"][0] if "host" in headers else _server_host(scope.get("server"), scope.get("scheme"))
    path = scope.get("path") or "/"
    root = scope.get("root_path") or ""
    route_path = path[len(root) :] or "/" if root and path.startswith(root) else path
    raw_path = scope.get("raw_path")
    if raw_path:
        full_path = raw_path.decode("latin-1")
        if root and not path.startswith(root):  # servers that keep root_path out of path
            full_path = quote(root) + full_path
    else:
        full_path = quote(path if path.startswith(root) else root + path)
    return RequestContext(
        peer=client[0] if client else None,
        headers=headers,
        scheme=scope.get("scheme") or "http",
        host=host,
        path=route_path,
        full_path=full_path,
        query=(scope.get("query_string") or b"").decode("latin-1"),
    )


def _server_host(server: Any, scheme: Any) -> str:
    if not server:
        return "localhost"
    host, port = server[0], server[1]
    default = 443 if scheme in ("https", "wss") else 80
    return host if port in (None, default) else f"{host}:{port}"


def _wsgi_text(value: str) -> str:
    # PEP 3333: native strings carrying bytes as latin-1.
    try:
        return value.encode("latin-1").decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        return value


def _from_environ(environ: Mapping[str, Any], scheme: str | None = None) -> RequestContext:
    headers: dict[str, list[str]] = {}
    for name in _WANTED:
        value = environ.get("HTTP_" + name.upper().replace("-", "_"))
        if value is not None:
            headers[name] = [value]
    scheme = scheme or environ.get("wsgi.url_scheme") or "http"
    host = environ.get("HTTP_HOST") or _server_host(
        (environ.get("SERVER_NAME") or "localhost", int(environ.get("SERVER_PORT") or 80)), scheme
    )
    script = environ.get("SCRIPT_NAME") or ""
    path_info = environ.get("PATH_INFO") or "/"
    full = (script + path_info).encode("latin-1", "replace")
    return RequestContext(
        peer=environ.get("REMOTE_ADDR"),
        headers=headers,
        scheme=scheme,
        host=host,
        path=_wsgi_text(path_info) or "/",
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
    want = set(wanted)
    found: dict[str, str] = {}
    for chunk in header.split(";"):
        name, sep, value = chunk.strip().partition("=")
        if sep and name in want and name not in found:
            value = value.strip().strip('"')
            if value and len(value) <= _MAX_VALUE:
                found[name] = unquote(value)
    return found


def request_user_data(ctx: RequestContext, trust_proxy: int, page_url: str) -> dict[str, str]:
    """What only the server knows about the shopper: IP, user agent and ad-click ids."""
    data: dict[str, str] = {}
    ip = client_ip(ctx.peer, ctx.headers.get("x-forwarded-for", ()), trust_proxy)
    if ip:
        data["client_ip_address"] = ip
    ua = ctx.header("user-agent")
    if ua and len(ua) <= _MAX_VALUE and ua.isprintable():
        data["user_agent"] = ua
    cookies = parse_cookies(ctx.header("cookie"))
    query = urlsplit(page_url).query
    params = parse_qs(query, max_num_fields=50) if query else {}
    for key, (param, cookie) in _wire.CLICK_IDS.items():
        value = None
        if param and params.get(param):
            value = params[param][0]
            if key == "fbc" and value and len(value) <= _MAX_VALUE:
                value = None if not value.isprintable() else _fbc_from_fbclid(value)
        if not value and cookie:
            value = cookies.get(cookie)
        if value and len(value) <= _MAX_VALUE and value.isprintable():
            data[key] = value
    return data


def _fbc_from_fbclid(fbclid: str) -> str:
    # Meta's documented fbc format: fb.<subdomain index>.<creation time ms>.<fbclid>
    return f"fb.1.{int(time.time() * 1000)}.{fbclid}"
