"""Hypothesis strategies for hostile requests, and an oracle that says independently
of ``layersync_middleware._match`` which route a path hits and which names it may carry.

The strategies favour what reaches the interesting code: most requests carry pairing
headers, most paths resemble the matcher's routes, and the rest is hostile input
(control characters, huge values, percent-escapes, dot segments, repeated headers,
keys missing from the scope or the environ).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any, Union

from hypothesis import strategies as st

from layersync_middleware import _wire

# --- the browser SDK's default rules ------------------------------------------------------------
# One representative URL per default rule (two for O1), as the issue 20 probe called each
# from Chromium, with the name the real SDK stamped: what pairs with no matcher configured.
SDK_URLS: list[tuple[str, str]] = [
    ("/cart/add", "add_to_cart"),
    ("/cart/items", "add_to_cart"),
    ("/add-to-cart", "add_to_cart"),
    ("/addtocart", "add_to_cart"),
    ("/api/cart", "add_to_cart"),
    ("/?wc-ajax=add_to_cart", "add_to_cart"),
    ("/carts/12/items", "add_to_cart"),
    ("/orders", "purchase"),
    ("/order/create", "purchase"),
    ("/place-order", "purchase"),
    ("/checkout/complete", "purchase"),
    ("/api/orders", "purchase"),
    ("/?wc-ajax=checkout", "purchase"),
    ("/checkout/start", "begin_checkout"),
    ("/api/checkout", "begin_checkout"),
    ("/create-checkout", "begin_checkout"),
]
EVENT_ID_PREFIX = {"add_to_cart": "atc", "purchase": "pur", "begin_checkout": "bc"}


def sdk_headers(name: str, n: int = 0) -> dict[str, str]:
    """The pairing headers the SDK stamps for an event ``name`` (the ``n``th id)."""
    return {"X-LayerSync-Event-Id": f"{EVENT_ID_PREFIX[name]}_{n:016x}", "X-LayerSync-Event-Name": name}


# --- the routes under test, and the oracle ----------------------------------------------------
Names = Union[None, str, list[str]]
# The README's pattern kinds, its /api/*cart* example and the adversarial review's
# quadratic /api/*a*b*c* included. Mapping order is matching order.
MATCHER: dict[str, Names] = {
    "/api/cart/*": None,
    "/api/*cart*": None,
    "/api/*a*b*c*": None,
    "/api/orders/**": None,
    "/api/checkout/:step": ["begin_checkout", "add_payment_info"],
    "/hooks/**": "*",
    "/shop/:id+/items": None,
    "/": ["purchase"],  # an endpoint the browser classifies by its query only: named by hand
}
MAX_PATH = 2048  # the README: a longer path matches nothing
# The README's header rules: an id of 8-64 of [A-Za-z0-9_-] starting with a letter or
# digit, a snake_case name of at most 64 characters.
ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{7,63}")
NAME_RE = re.compile(r"[a-z][a-z0-9_]{0,63}")


def _is(*literal: str) -> Callable[[list[str]], bool]:
    return lambda s: s == list(literal)


# Each pattern of MATCHER restated by hand as a test over the path's segments (the
# README's pattern table), so that the oracle shares no code with the matcher.
_ROUTES: list[tuple[str, Callable[[list[str]], bool]]] = [
    ("/api/cart/*", lambda s: len(s) == 3 and s[:2] == ["api", "cart"]),
    ("/api/*cart*", lambda s: len(s) == 2 and s[0] == "api" and "cart" in s[1]),
    ("/api/*a*b*c*", lambda s: len(s) == 2 and s[0] == "api" and fnmatchcase(s[1], "*a*b*c*")),
    ("/api/orders/**", lambda s: s[:2] == ["api", "orders"]),
    ("/api/checkout/:step", lambda s: len(s) == 3 and s[:2] == ["api", "checkout"]),
    ("/hooks/**", lambda s: s[:1] == ["hooks"]),
    ("/shop/:id+/items", lambda s: len(s) >= 3 and s[0] == "shop" and s[-1] == "items"),
    ("/", _is()),
]
assert [p for p, _ in _ROUTES] == list(MATCHER)


def route_for(path: str) -> str | None:
    """The pattern a request to ``path`` (the app's routing path) hits, or None."""
    if len(path) > MAX_PATH:
        return None
    if path.endswith("/"):  # one trailing slash is ignored
        path = path[:-1]
    if path and not path.startswith("/"):
        return None
    segments = path[1:].split("/") if path else []
    if "" in segments:  # every pattern segment is a non-empty path segment
        return None
    return next((pattern for pattern, test in _ROUTES if test(segments)), None)


def sdk_name_for(url: str) -> str | None:
    """The name the browser SDK stamps on ``url``, rule by rule as its ``autoTrack.ts``
    loops (the middleware compiles the rules into one alternation per group)."""
    if len(url) > _wire.MAX_URL or re.search(r"layersynchub\.com|/api/v1/(?:events|config)", url, re.I):
        return None
    for name, rules in _wire.URL_EVENT_NAMES:
        for parts in rules:  # a rule is regexes found one after the other
            pos = 0
            for part in parts:
                found = part.search(url, pos)
                if found is None:
                    break
                pos = found.end()
            else:
                return name
    return None


def allowed_names(path: str, url: str | None = None) -> frozenset[str] | None:
    """The pairing names a request routed on ``path`` to ``url`` (as the browser sent
    it: mount prefix and query included) may carry; None: any valid name; an empty set
    when nothing matches. The first pattern matching the path decides (without names:
    the SDK's name for the URL); no pattern: the SDK's rules on the URL."""
    url = path if url is None else url
    pattern = route_for(path)
    names = MATCHER[pattern] if pattern is not None else None
    if names == "*":
        return None
    if names is None:  # the name the browser SDK stamps on that URL
        derived = sdk_name_for(url)
        return frozenset({derived} if derived else ())
    return frozenset([names] if isinstance(names, str) else names)


def may_carry(path: str, url: str, name: str) -> bool:
    allowed = allowed_names(path, url)
    return NAME_RE.fullmatch(name) is not None if allowed is None else name in allowed


def asgi_route_path(scope: dict[str, Any]) -> str:
    """The path a Starlette app routes on (``starlette.routing.get_route_path``)."""
    path = scope.get("path") or "/"
    root = scope.get("root_path") or ""
    if not root or not path.startswith(root):
        return path
    if path == root:
        return "/"
    return path[len(root) :] if path[len(root)] == "/" else path


def wsgi_route_path(environ: dict[str, Any]) -> str:
    """``PATH_INFO`` as the app routes on it: PEP 3333's latin-1 string read as UTF-8."""
    path = environ.get("PATH_INFO") or "/"
    try:
        return str(path.encode("latin-1").decode("utf-8"))
    except UnicodeError:
        return str(path)


@dataclass(frozen=True)
class Expected:
    """What a request should forward: ``pair`` is the (event_id, event_name) that must
    arrive when the response succeeds, None when nothing may."""

    path: str
    pair: tuple[str, str] | None


READ_ONLY = ("GET", "HEAD", "OPTIONS")  # the README: these never pair unless pair_read_only


def expected_pair(method: str, path: str, url: str, ids: list[str], names: list[str]) -> Expected:
    """A header sent more than once never pairs (a server that joins the lines gives a
    comma, which no valid id or name has); nor does a read-only method."""
    if len(ids) != 1 or len(names) != 1 or method in READ_ONLY:
        return Expected(path, None)
    event_id, name = ids[0].strip(), names[0].strip()
    valid = ID_RE.fullmatch(event_id) is not None and NAME_RE.fullmatch(name) is not None
    return Expected(path, (event_id, name) if valid and may_carry(path, url, name) else None)


# --- building blocks ------------------------------------------------------------------------
_HOSTILE_CHARS = "\r\n\x00\t \x7f\x85\xa0\u2028é☃%/.;?#"
_SEGMENTS = [
    "api", "cart", "add", "orders", "order", "checkout", "init", "hooks", "shop", "items", "item", "42",
    "x", "a", "b", "c", "abc", "cartcart", "addtocart", "place-order", ".", "..", "%2e%2e", "%2F", "%00",
    "%0a", "%0d%0a", "%E2%98%83", "café", "☃", "\x00", "\r\n", " ", "*", ":id", "orders?x=1",
]  # fmt: skip
_QUERY_FIELDS = [
    "x=/orders", "wc-ajax=checkout", "wc-ajax=add_to_cart", "a=/api/order", "q=/checkout/init", "x=/cart/items",
    "fbclid=IwAR1", "gclid=Cj0", "ttclid=t", "%zz", "=", "a", "a=%", "a=%0a", "", "ScCid=\x00", "x=\r\n",
]  # fmt: skip
_EVENT_NAMES = [
    "purchase", "add_to_cart", "begin_checkout", "add_payment_info", "refund", "page_view", "lead", "a" * 64,
    "a" * 65, "Purchase", "purchase ", " purchase", "pur chase", "purchase\r\n", "", "add-to-cart",
]  # fmt: skip


def _text(alphabet: str = _HOSTILE_CHARS, max_size: int = 12) -> st.SearchStrategy[str]:
    return st.text(st.sampled_from(alphabet) | st.characters(codec="utf-8"), max_size=max_size)


def segments() -> st.SearchStrategy[str]:
    return st.sampled_from(_SEGMENTS) | _text()


def long_paths() -> st.SearchStrategy[str]:
    """The review's adversarial shapes: a token repeated up to 32 KB under each route."""
    return st.builds(
        lambda prefix, token, n, suffix: prefix + token * n + suffix,
        st.sampled_from(["/api/", "/hooks/", "/shop/", "/api/orders/", "/api/cart/", "/"]),
        st.sampled_from(["cart", "c", "a", "ab", "abc", "addcart", "/a", "/", "/items", "/cart", "%2F", "é"]),
        st.integers(1, 8192),
        st.sampled_from(["", "/", "/x", "c", "/items", "//"]),
    )


# Paths of each route, so that many requests reach the name check.
_ROUTE_PATHS = [
    "/api/cart/add", "/api/cart/items", "/api/addtocart", "/api/mycart", "/api/xaybzc", "/api/orders",
    "/api/orders/42", "/api/orders/42/cart", "/api/checkout/start", "/api/checkout/pay", "/hooks/stripe",
    "/shop/1/items", "/shop/cart/items", "/", "/checkout/complete", "/cart/add",
]  # fmt: skip


@st.composite
def _route_like(draw: st.DrawFn) -> str:
    """A route's path, perhaps with one segment replaced, one added or a trailing slash."""
    parts = draw(st.sampled_from(_ROUTE_PATHS)).split("/")
    if draw(st.integers(0, 5)) == 0:
        parts[draw(st.integers(1, len(parts) - 1))] = draw(segments())
    if draw(st.integers(0, 5)) == 0:
        parts.insert(draw(st.integers(1, len(parts))), draw(segments()))
    return "/".join(parts) + draw(st.sampled_from(["", "", "", "", "/", "//"]))


def paths() -> st.SearchStrategy[str]:
    """Routing paths: mostly a route's, or built from route-like segments; raw text; huge."""
    built = st.builds(
        lambda segs, slash: "/" + "/".join(segs) + ("/" if slash else ""),
        st.lists(segments(), max_size=6),
        st.booleans(),
    )
    route = _route_like()
    return st.one_of(route, route, route, built, st.text(max_size=40), long_paths())


def queries() -> st.SearchStrategy[str]:
    many = st.integers(0, 2000).map(lambda n: "&".join(f"f{i}=v" for i in range(n)))
    fields = st.lists(st.sampled_from(_QUERY_FIELDS) | _text(), max_size=6).map("&".join)
    return fields | many | st.text(max_size=4000)


VALID_IDS = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_-]{7,63}", fullmatch=True)


def event_ids() -> st.SearchStrategy[str]:
    valid = VALID_IDS
    odd = st.sampled_from(["pur_0123456789abcdef", " pur_0123456789abcdef\t", "-abcdefgh", "short", "a" * 65])
    # Oversized: in the id's own charset (a scan that trusts the charset walks it all), up to 70 KB.
    huge = st.builds(lambda chunk, n: chunk * n, st.sampled_from(["a", "atc_0", "-", ", "]), st.integers(13, 14_000))
    return st.one_of(valid, valid, valid, odd, _text(), huge)


def event_names() -> st.SearchStrategy[str]:
    common = st.sampled_from(["purchase", "add_to_cart", "begin_checkout", "add_payment_info"])
    snake = st.from_regex(r"[a-z][a-z0-9_]{0,70}", fullmatch=True)
    return st.one_of(common, common, common, st.sampled_from(_EVENT_NAMES), snake, _text())


def header_values() -> st.SearchStrategy[bytes]:
    """Empty, control bytes (CR, LF, NUL), any latin-1 byte, non-ASCII UTF-8, huge."""
    huge = st.builds(
        lambda chunk, n: chunk * n, st.sampled_from([b"a", b"\xff", b"/orders", b", "]), st.integers(1, 70_000)
    )
    return st.just(b"") | st.binary(max_size=40) | _text().map(lambda s: s.encode("utf-8")) | huge


def header_lines(values: st.SearchStrategy[str]) -> st.SearchStrategy[list[str]]:
    """Zero, one or several lines of one header (a repeated header), up to 20,000 lines:
    joining them one by one was quadratic (issue 22.1)."""
    one = st.lists(values, min_size=1, max_size=1)
    many = st.builds(lambda value, n: [value] * n, values, st.integers(2, 20_000))
    return st.one_of(one, one, one, st.lists(values, max_size=3), many)


def fitting_names(path: str) -> st.SearchStrategy[str]:
    """Names, mostly ones the route of ``path`` may carry (so that many requests get
    past the name check), else anything."""
    allowed = allowed_names(path)
    if allowed is None:
        return event_names()
    if not allowed:
        return event_names()
    fitting = st.sampled_from(sorted(allowed))
    return st.one_of(fitting, fitting, event_names())


def _cased(name: str) -> st.SearchStrategy[bytes]:
    return st.sampled_from([name.lower(), name.upper(), name.title()]).map(lambda n: n.encode("latin-1"))


_OTHER_HEADERS = ["host", "cookie", "referer", "user-agent", "x-forwarded-for", "x-forwarded-proto", "x-forwarded-host"]


# --- ASGI -------------------------------------------------------------------------------------
@dataclass
class AsgiRequest:
    scope: dict[str, Any]
    ids: list[str]  # the id header's lines, as the middleware reads them (latin-1)
    names: list[str]

    @property
    def expected(self) -> Expected:
        scope = self.scope
        path, root = scope.get("path") or "/", scope.get("root_path") or ""
        url = path if path.startswith(root) else root + path
        query = scope.get("query_string") or b""
        url += "?" + query.decode("latin-1") if query else ""
        return expected_pair(scope.get("method") or "GET", asgi_route_path(scope), url, self.ids, self.names)


@st.composite
def asgi_requests(draw: st.DrawFn) -> AsgiRequest:
    if draw(st.booleans()):  # plausible: a route's path and valid headers, all else hostile
        route, root = draw(_route_like()), draw(st.sampled_from(["", "/mount"]))
        path = root + route
        ids = [draw(VALID_IDS)]
        names = [draw(fitting_names(route))]
    else:
        route = draw(paths())
        root = draw(st.sampled_from(["", "/mount", "/api", "/x/"]) | _text(max_size=6))
        # Starlette expects root_path inside path; some servers and mounts leave it out.
        path = draw(st.sampled_from([root + route, route]))
        ids = draw(header_lines(event_ids()))
        names = draw(header_lines(fitting_names(asgi_route_path({"path": path, "root_path": root}))))
    raw_ids = [i.encode("utf-8") for i in ids]
    raw_names = [n.encode("utf-8") for n in names]
    headers: list[Any] = [(draw(_cased(_wire.EVENT_ID_HEADER)), v) for v in raw_ids]
    headers += [(draw(_cased(_wire.EVENT_NAME_HEADER)), v) for v in raw_names]
    others = st.tuples(st.sampled_from(_OTHER_HEADERS).flatmap(_cased) | st.binary(max_size=20), header_values())
    headers += draw(st.lists(others, max_size=6))
    headers = draw(st.permutations(headers))
    # Header pairs may be tuples or lists (the spec says iterables); headers a list or tuple.
    if draw(st.booleans()):
        headers = [list(h) for h in headers]
    scope: dict[str, Any] = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": draw(st.sampled_from(["1.0", "1.1", "2"])),
        "method": draw(st.sampled_from(["POST", "POST", "PUT", "PATCH", "GET", "HEAD", "OPTIONS"])),
        "path": path,
        "headers": tuple(headers) if draw(st.booleans()) else headers,
    }
    if root or draw(st.booleans()):
        scope["root_path"] = root
    optional: dict[str, st.SearchStrategy[Any]] = {
        "scheme": st.sampled_from(["http", "https", "ws", ""]),
        "query_string": queries().map(lambda q: q.encode("utf-8")) | st.binary(max_size=50),
        "raw_path": st.just(path.encode("utf-8", "surrogatepass")) | st.binary(max_size=50) | st.none(),
        "client": st.none() | st.tuples(st.sampled_from(["203.0.113.9", "::1", "unix", ""]), st.integers(0, 65535)),
        "server": st.none()
        | st.tuples(st.sampled_from(["127.0.0.1", "::1", "example.com", ""]), st.integers(0, 65535))
        | st.tuples(st.just("/tmp/app.sock"), st.none()),
    }
    for key, values in optional.items():
        if draw(st.integers(0, 3)):  # present three times in four
            scope[key] = draw(values)
    return AsgiRequest(scope, [i.decode("latin-1") for i in raw_ids], [n.decode("latin-1") for n in raw_names])


# --- WSGI -------------------------------------------------------------------------------------
WSGI_ID = "HTTP_" + _wire.EVENT_ID_HEADER.upper().replace("-", "_")
WSGI_NAME = "HTTP_" + _wire.EVENT_NAME_HEADER.upper().replace("-", "_")


def _native(text: str) -> str:
    """A PEP 3333 native string: the bytes on the wire, read as latin-1."""
    return text.encode("utf-8", "surrogatepass").decode("latin-1")


@dataclass
class WsgiRequest:
    environ: dict[str, Any]

    @property
    def expected(self) -> Expected:
        # The server has already joined repeated lines into one value, with commas.
        environ = self.environ
        ids = [environ[WSGI_ID]] if WSGI_ID in environ else []
        names = [environ[WSGI_NAME]] if WSGI_NAME in environ else []
        url = (environ.get("SCRIPT_NAME") or "") + (environ.get("PATH_INFO") or "/")
        url += "?" + environ["QUERY_STRING"] if environ.get("QUERY_STRING") else ""
        method = environ.get("REQUEST_METHOD") or "GET"
        return expected_pair(method, wsgi_route_path(environ), url, ids, names)


@st.composite
def wsgi_requests(draw: st.DrawFn) -> WsgiRequest:
    # Mostly what PEP 3333 servers give (latin-1 native strings); sometimes raw text.
    path = draw(st.one_of(_route_like(), paths().map(_native), st.text(max_size=20)))
    method = draw(st.sampled_from(["POST", "POST", "PUT", "GET", "HEAD"]))
    environ: dict[str, Any] = {"REQUEST_METHOD": method, "PATH_INFO": path}
    fitting = fitting_names(wsgi_route_path(environ))
    if draw(st.booleans()):  # plausible headers
        environ[WSGI_ID], environ[WSGI_NAME] = draw(VALID_IDS), draw(fitting)
    else:
        for key, values in ((WSGI_ID, event_ids()), (WSGI_NAME, fitting)):
            lines = draw(header_lines(values))
            if lines:
                environ[key] = _native(", ".join(lines))
    optional: dict[str, st.SearchStrategy[Any]] = {
        "SCRIPT_NAME": st.sampled_from(["", "/mount", "/x/"]) | _text(max_size=6),
        "QUERY_STRING": queries().map(_native),
        "SERVER_NAME": st.sampled_from(["localhost", "example.com", "/tmp/app.sock", "", "[::1]", "a b"]),
        # Werkzeug's dev server on a unix socket: no Host, a path for a port.
        "SERVER_PORT": st.sampled_from(["80", "443", "8000", "", "abc", "/tmp/app.sock", "99999999", "-1", "٣"]),
        "SERVER_PROTOCOL": st.sampled_from(["HTTP/1.1", "HTTP/1.0", ""]),
        "wsgi.url_scheme": st.sampled_from(["http", "https", ""]),
        "REMOTE_ADDR": st.sampled_from(["203.0.113.9", "::1", "", "unknown", "x" * 5000]),
        "wsgi.version": st.just((1, 0)),
    }
    for key, values in optional.items():
        if draw(st.integers(0, 3)):
            environ[key] = draw(values)
    for name in _OTHER_HEADERS:
        if draw(st.booleans()):
            key = "HTTP_HOST" if name == "host" else "HTTP_" + name.upper().replace("-", "_")
            environ[key] = draw(header_values()).decode("latin-1")
    return WsgiRequest(environ)
