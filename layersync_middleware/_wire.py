"""Everything the wire knows, in one module.

The browser-side facts (event-id prefixes, cookie names, URL classification,
retry policy, priorities, batch limits) were read from the published browser SDK
``@alaasync/layersync-web@0.4.0``. The *server* ingest contract (paths, the auth
header, ``client_meta.source``) is this package's assumption: the hub does not
publish it, so it lives here and nowhere else, and a change to the hub's contract
is a change to this file.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Union

from ._version import __version__

DEFAULT_API_URL = "https://layersynchub.com"

# --- server ingest [ours] -------------------------------------------------------
SERVER_EVENT_PATH = "/api/v1/events/server"
SERVER_BATCH_PATH = "/api/v1/events/server/batch"
AUTH_HEADER = "Authorization"
AUTH_SCHEME = "Bearer"
SITE_ID_HEADER = "X-LayerSync-Site-Id"
SDK_NAME = f"layersync-middleware@{__version__}"
USER_AGENT = f"layersync-middleware/{__version__}"
SOURCE = "server"
SECRET_KEY_PREFIX = "sk_"
PUBLISHABLE_KEY_PREFIX = "pk_"

# Status codes worth another try (besides every 5xx and network errors).
RETRY_STATUSES = frozenset({408, 429})

# --- browser ingest [browser SDK] -----------------------------------------------
BROWSER_EVENT_PATH = "/api/v1/events/browser"
BROWSER_BATCH_PATH = "/api/v1/events/browser/batch"
CONFIG_PATH = "/api/v1/config/platforms"
API_KEY_HEADER = "X-LayerSync-Api-Key"
BEACON_KEY_PARAM = "_ls_api_key"
BEACON_SITE_PARAM = "_ls_site_id"

# --- pairing headers [browser SDK] ----------------------------------------------
EVENT_ID_HEADER = "X-LayerSync-Event-Id"
EVENT_NAME_HEADER = "X-LayerSync-Event-Name"
# The name a pairing header may carry, and a matcher may list: snake_case, as the
# browser SDK's own names are. 64 characters, the bound of any event name we send
# (``track()``'s names), so every name an app can track can also be paired.
EVENT_NAME_HEADER_RE = re.compile(r"[a-z][a-z0-9_]{0,63}")

# --- batching [browser SDK limits, reused for the server] -------------------------
BATCH_MAX_EVENTS = 50
BATCH_MAX_BYTES = 100 * 1024
GZIP_MIN_BYTES = 4 * 1024
# The server ingest's batches [ours, docs/wire.md section 6]: a sender with events waiting
# sends up to this many per request (the hub's per-request cost is most of a batch's CPU).
# The byte bound is on the JSON before gzip, under the hub's 1 MiB body limit.
SERVER_BATCH_MAX_EVENTS = 500
SERVER_BATCH_MAX_BYTES = 1000 * 1024

# --- event ids [browser SDK] ------------------------------------------------------
EVENT_ID_PREFIXES: dict[str, str] = {
    "page_view": "pv",
    "view_content": "vc",
    "view_item": "vi",
    "view_item_list": "vil",
    "view_category": "vcat",
    "view_cart": "vcart",
    "search": "srch",
    "add_to_cart": "atc",
    "add_to_wishlist": "wl",
    "begin_checkout": "bc",
    "add_payment_info": "api",
    "purchase": "pur",
    "refund": "ref",
    "lead": "lead",
    "sign_up": "su",
    "complete_registration": "creg",
    "contact": "ct",
}
DEFAULT_EVENT_ID_PREFIX = "evt"

# --- ad-click identifiers [browser SDK] -------------------------------------------
# user_data key -> (URL parameter or None, cookie or None). The URL parameter wins.
CLICK_IDS: dict[str, tuple[str | None, str | None]] = {
    "fbp": (None, "_fbp"),
    "fbc": ("fbclid", "_fbc"),
    "ga": (None, "_ga"),
    "gclid": ("gclid", "_gcl_aw"),
    "ttclid": ("ttclid", "ttclid"),
    "epik": ("epik", "_epik"),
    "sccid": ("ScCid", None),
    "scid": (None, "_scid"),
    "rdtcid": ("rdt_cid", "rdt_cid"),
    "twclid": ("twclid", "_twclid"),
    "lfid": ("li_fat_id", "li_fat_id"),
}

# --- retry policy and priority [browser SDK] -------------------------------------
_H = 3600.0
_D = 24 * _H
# event name -> (max age in seconds, max attempts)
RETRY_POLICY: dict[str, tuple[float, int]] = {
    "purchase": (7 * _D, 20),
    "lead": (3 * _D, 10),
    "begin_checkout": (3 * _D, 10),
    "add_payment_info": (2 * _D, 8),
    "add_to_cart": (1 * _D, 7),
    "add_to_wishlist": (1 * _D, 5),
    "search": (12 * _H, 4),
    "view_item": (12 * _H, 4),
    "view_item_list": (12 * _H, 4),
    "view_category": (12 * _H, 4),
    "view_cart": (12 * _H, 4),
    "page_view": (6 * _H, 3),
}
DEFAULT_RETRY_POLICY = (12 * _H, 5)

BACKOFF_JITTER = 0.2

# Eviction priority when the queue is full: higher is kept longer.
PRIORITY: dict[str, int] = {
    "purchase": 10,
    "lead": 8,
    "begin_checkout": 7,
    "add_payment_info": 6,
    "add_to_cart": 5,
    "add_to_wishlist": 4,
    "search": 3,
    "view_item": 2,
    "view_item_list": 2,
    "view_category": 2,
    "view_cart": 2,
    "page_view": 1,
}
DEFAULT_PRIORITY = 1

# --- URL classification [browser SDK autoTrack defaults] ------------------------
# The browser stamps pairing headers with the name it derives from the URL it
# calls, checking order endpoints first, then cart, then checkout. Each rule is a
# sequence of regexes found one after the other (the SDK's ``/carts?\b.*/items?\b``
# is ``/carts?\b`` then, further on, ``/items?\b``): searched that way, without
# ``.*``, every rule costs time linear in the URL. The SDK sees the percent-encoded
# URL, so ``\b`` is ASCII-only and a line break is just another character.
_F = re.IGNORECASE | re.ASCII | re.DOTALL
URL_EVENT_NAMES: tuple[tuple[str, tuple[tuple[re.Pattern[str], ...], ...]], ...] = (
    (
        "purchase",
        (
            (re.compile(r"/orders?/?(?:\?|\Z|/(?:create|place|submit|complete))", _F),),  # JS $ is \Z
            (re.compile(r"/place[-_]?orders?\b", _F),),
            (re.compile(r"/checkout/(?:complete|finalize|place|submit)\b", _F),),
            (re.compile(r"/api/[^/]*order[^/]*\b", _F),),
            (re.compile(r"\bwc-ajax=checkout\b", _F),),
        ),
    ),
    (
        "add_to_cart",
        (
            (re.compile(r"/cart/add\b", _F),),
            (re.compile(r"/cart/items?\b", _F),),
            (re.compile(r"/add[-_]?to[-_]?cart\b", _F),),
            (re.compile(r"/addtocart\b", _F),),
            (re.compile(r"/api/[^/]*cart[^/]*/?\b", _F),),
            (re.compile(r"\bwc-ajax=add_to_cart\b", _F),),
            (re.compile(r"/carts?\b", _F), re.compile(r"/items?\b", _F)),
        ),
    ),
    (
        "begin_checkout",
        (
            (re.compile(r"/checkout/(?:init|start|begin|create)\b", _F),),
            (re.compile(r"/api/[^/]*checkout[^/]*\b", _F),),
            (re.compile(r"/create[-_]?checkout\b", _F),),
        ),
    ),
)


# URLs the browser SDK never stamps, whatever its rules say (its own ingest and config).
NEVER_STAMPED_RE = re.compile(r"layersynchub\.com|/api/v1/(?:events|config)", _F)
# Longer URLs are not classified: no route the browser calls is that long, and it bounds
# the work per request (the classification is cached per URL, see EndpointRules).
MAX_URL = 4096
_CACHE_SIZE = 1024  # URLs remembered per rule set; a shop's cart and order URLs are few
_CACHED_URL_MAX = 512
EndpointSpec = Union[str, "re.Pattern[str]"]


def _joined(rules: tuple[tuple[re.Pattern[str], ...], ...], extra: tuple[re.Pattern[str], ...]) -> re.Pattern[str]:
    """One case-insensitive alternation of a group's one-part rules (and the app's own)."""
    parts = [parts[0].pattern for parts in rules if len(parts) == 1]
    parts += [p.pattern if p.flags & re.IGNORECASE else f"(?-i:{p.pattern})" for p in extra]
    return re.compile("|".join(f"(?:{p})" for p in parts), _F)


def compile_endpoint(spec: EndpointSpec) -> re.Pattern[str]:
    if isinstance(spec, re.Pattern) and isinstance(spec.pattern, str):
        return spec
    if not isinstance(spec, str) or not spec:
        raise ValueError(f"{spec!r} is not a regular expression (a non-empty string)")
    try:
        return re.compile(spec, _F)
    except re.error as exc:
        raise ValueError(f"{spec!r} is not a valid regular expression: {exc}") from None


class EndpointRules:
    """The browser SDK's URL rules: which event name it stamps on a request to a URL.

    Its 15 ``autoTrack`` defaults, then the app's own ``cartEndpoints``,
    ``orderEndpoints`` and ``checkoutEndpoints`` (given here as regexes, matched
    case-insensitively unless they say ``(?-i:...)``). As in the SDK, the order rules
    are tried first, then cart, then checkout, on the URL as the browser sent it, query
    included. Each group is one compiled alternation (the SDK's ``/carts?\b.*/items?\b``
    is searched in two steps, so no rule backtracks over the URL), and the answer is
    remembered per URL in a small bounded dict: a shop's cart and order URLs are few.
    """

    __slots__ = ("_cache", "_carts", "_groups", "extra", "key")

    def __init__(
        self,
        cart: Iterable[EndpointSpec] = (),
        order: Iterable[EndpointSpec] = (),
        checkout: Iterable[EndpointSpec] = (),
    ) -> None:
        extra = {
            name: tuple(compile_endpoint(s) for s in specs)
            for name, specs in (("add_to_cart", cart), ("purchase", order), ("begin_checkout", checkout))
        }
        self.extra: dict[str, tuple[re.Pattern[str], ...]] = extra
        # What makes two rule sets the same (settings compare by value).
        self.key = tuple((name, tuple((p.pattern, p.flags) for p in patterns)) for name, patterns in extra.items())
        self._groups = tuple((name, _joined(rules, extra[name])) for name, rules in URL_EVENT_NAMES)
        # The one two-part rule: /carts?\b, then further on /items?\b.
        (self._carts,) = (parts for _, rules in URL_EVENT_NAMES for parts in rules if len(parts) == 2)
        self._cache: dict[str, str | None] = {}

    def name_for(self, url: str) -> str | None:
        """The event name the SDK stamps on a request to ``url`` (path and query), or None."""
        cache = self._cache
        try:
            return cache[url]
        except KeyError:
            pass
        name = self._name_for(url)
        if len(url) <= _CACHED_URL_MAX:
            if len(cache) >= _CACHE_SIZE:
                cache.clear()  # crude but bounded; refilled by the few real URLs at once
            cache[url] = name
        return name

    def _name_for(self, url: str) -> str | None:
        if len(url) > MAX_URL or NEVER_STAMPED_RE.search(url):
            return None
        for name, group in self._groups:
            if group.search(url):
                return name
            if name == "add_to_cart":
                first, then = self._carts
                found = first.search(url)
                if found is not None and then.search(url, found.end()):
                    return name
        return None

    def describe(self) -> list[tuple[str, str]]:
        """``(regex, name)`` for each rule, in the SDK's order, for ``layersync check``."""
        shown = []
        for name, rules in URL_EVENT_NAMES:
            shown += [(".*".join(p.pattern for p in parts), name) for parts in rules]
            shown += [(p.pattern, name) for p in self.extra[name]]
        return shown


DEFAULT_RULES = EndpointRules()


def browser_event_name_for(url: str) -> str | None:
    """The event name the browser SDK, with its default rules, stamps on a request to
    ``url`` (the URL as the page passed it: path and query)."""
    return DEFAULT_RULES.name_for(url)


def event_id_prefix(event_name: str) -> str:
    return EVENT_ID_PREFIXES.get(event_name, DEFAULT_EVENT_ID_PREFIX)


def retry_policy(event_name: str) -> tuple[float, int]:
    return RETRY_POLICY.get(event_name, DEFAULT_RETRY_POLICY)


def priority(event_name: str) -> int:
    return PRIORITY.get(event_name, DEFAULT_PRIORITY)
