"""What the ad platforms would make of one event id: the verdict and the rule that
decided it, the match keys, each field's origin, and the bodies Meta, TikTok and
Google Ads would receive. Pure functions over event bodies: the hub's page only
renders what this module says.

Sources (the notes in ``shared/notes/screen-and-metrics.md``, part A):

* event names: the browser SDK ``@alaasync/layersync-web@0.4.0``, ``dist/index.js``
  (``src/pixels/meta.ts``, ``tiktok.ts``, ``google.ts``): a name missing from a table
  fires no pixel event on that platform;
* de-duplication: Meta pairs ``eventID``+``event`` with ``event_id``+``event_name``
  within 48 h and prefers the browser event when both arrive within 5 minutes; TikTok
  merges a pixel and an API event within 5 minutes and de-duplicates up to 48 h;
* match keys: Meta's customer information parameters (hashing and format per key)
  and its published priority tiers (no weights: the total here is a *local coverage
  score*, never EMQ);
* payloads: Meta Conversions API ``POST /{pixel}/events`` ``data[]``; TikTok Events
  API 2.0 ``POST /open_api/v1.3/event/track/``; Google Ads API
  ``customers/{id}:uploadClickConversions`` ``ClickConversion``.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import ipaddress
import json
import re
import shlex
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from .. import _wire

# -- event names, as the browser SDK 0.4.0 maps them --------------------------------------
META_EVENTS: dict[str, str] = {
    "page_view": "PageView",
    "view_item": "ViewContent",
    "view_content": "ViewContent",
    "view_category": "ViewCategory",
    "view_item_list": "ViewCategory",
    "search": "Search",
    "add_to_cart": "AddToCart",
    "add_to_wishlist": "AddToWishlist",
    "begin_checkout": "InitiateCheckout",
    "add_payment_info": "AddPaymentInfo",
    "purchase": "Purchase",
    "complete_payment": "Purchase",
    "lead": "Lead",
    "contact": "Contact",
    "sign_up": "CompleteRegistration",
    "complete_registration": "CompleteRegistration",
    "subscribe": "Subscribe",
    "start_trial": "StartTrial",
    "submit_application": "SubmitApplication",
    "schedule": "Schedule",
    "customize_product": "CustomizeProduct",
    "find_location": "FindLocation",
    "donate": "Donate",
}
TIKTOK_EVENTS: dict[str, str] = {
    "view_content": "ViewContent",
    "view_item": "ViewContent",
    "view_item_list": "ViewContent",
    "view_category": "ViewContent",
    "search": "Search",
    "add_to_cart": "AddToCart",
    "add_to_wishlist": "AddToWishlist",
    "begin_checkout": "InitiateCheckout",
    "add_payment_info": "AddPaymentInfo",
    "purchase": "CompletePayment",
    "lead": "SubmitForm",
    "sign_up": "CompleteRegistration",
    "complete_registration": "CompleteRegistration",
    "contact": "Contact",
}
GOOGLE_EVENTS: dict[str, str] = {
    "page_view": "page_view",
    "view_item": "view_item",
    "view_content": "view_item",
    "view_category": "view_item_list",
    "view_item_list": "view_item_list",
    "search": "search",
    "add_to_cart": "add_to_cart",
    "add_to_wishlist": "add_to_wishlist",
    "begin_checkout": "begin_checkout",
    "add_payment_info": "add_payment_info",
    "purchase": "purchase",
    "complete_payment": "purchase",
    "refund": "refund",
    "lead": "generate_lead",
    "contact": "contact",
    "submit_form": "form_submit",
    "sign_up": "sign_up",
    "complete_registration": "sign_up",
    "subscribe": "subscribe",
    "start_trial": "begin_trial",
    "submit_application": "submit_application",
    "schedule": "schedule",
    "download": "file_download",
    "login": "login",
    "video_start": "video_start",
    "share": "share",
}

META_API = "https://graph.facebook.com/v21.0"
TIKTOK_API = "https://business-api.tiktok.com/open_api/v1.3/event/track/"
GOOGLE_ADS_API = "https://googleads.googleapis.com/v26"

# -- windows ------------------------------------------------------------------------------
BROWSER_PREFERENCE_S = 5 * 60  # Meta favours the browser event, TikTok merges: within 5 min
DEDUP_WINDOW_S = 48 * 3600  # Meta and TikTok de-duplicate within 48 h
MAX_EVENT_AGE_S = 7 * 24 * 3600  # Meta refuses the whole request for an older event_time
FUTURE_SLACK_S = 60  # clocks differ a little; more than this is an event "in the future"
COVERAGE_GOAL = 75  # Meta's event_coverage goal_percentage

Verdict = Literal["paired", "browser_only", "server_only", "name_mismatch", "id_reused", "late_pair"]
VERDICTS: tuple[Verdict, ...] = ("paired", "browser_only", "server_only", "name_mismatch", "id_reused", "late_pair")
VERDICT_LABELS: dict[str, str] = {
    "paired": "Paired",
    "browser_only": "Browser only",
    "server_only": "Server only",
    "name_mismatch": "Name mismatch",
    "id_reused": "ID reused",
    "late_pair": "Late pair",
}


# -- verdicts ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Side:
    """The events of one id with one name from one source: how many arrived, how
    many *different* events they are (a resend is the same instance), when."""

    source: str  # "browser" | "server"
    name: str
    count: int
    instances: int
    first_at: float
    last_at: float


@dataclass(frozen=True)
class Decision:
    verdict: Verdict
    rule: str  # the rule that decided, in words, with the values it looked at
    meta: str  # what Meta would do
    tiktok: str  # what TikTok would do
    gap_s: float | None = None  # browser -> server arrival gap when both sides came

    @property
    def label(self) -> str:
        return VERDICT_LABELS[self.verdict]


def _span(seconds: float) -> str:
    seconds = abs(seconds)
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def decide(sides: Sequence[Side]) -> Decision:
    """The verdict for every event carrying one ``event_id`` (of one site). The rules,
    in order: an id carried by several different events is *reused*; a browser and a
    server event whose names differ are a *name mismatch*; a pair further apart than
    5 minutes is *late*; else *paired*, or one side only."""
    names = sorted({s.name for s in sides})
    by_name = {n: {s.source for s in sides if s.name == n} for n in names}
    many = [s for s in sides if s.instances > 1]
    if many or len(names) > 2 or (len(names) == 2 and any(len(v) > 1 for v in by_name.values())):
        return _reused(sides, names, many)
    if len(names) == 2:
        (a, sa), (b, sb) = by_name.items()
        if sa == sb:  # both names from one side
            return _reused(sides, names, many)
        browser, server = (a, b) if "browser" in sa else (b, a)
        how = "only by case" if browser.lower() == server.lower() else "in spelling"
        return Decision(
            "name_mismatch",
            f"same event_id, but the browser sent event_name {browser!r} and the server {server!r}: "
            f"they differ {how}, and names are compared exactly",
            _mismatch("Meta", META_EVENTS, browser, server, "eventID+event with event_id+event_name"),
            _mismatch("TikTok", TIKTOK_EVENTS, browser, server, "event+event_id"),
        )
    sources = {s.source for s in sides}
    if sources == {"browser", "server"}:
        first = {s.source: s.first_at for s in sides}
        gap = first["server"] - first["browser"]
        order = "after" if gap >= 0 else "before"
        when = f"the server event arrived {_span(gap)} {order} the browser event"
        if abs(gap) > DEDUP_WINDOW_S:
            return Decision(
                "late_pair",
                f"{when}: more than 48 h apart",
                "Meta de-duplicates only within 48 h: both are counted",
                "TikTok de-duplicates only within 48 h: both are counted",
                gap,
            )
        if abs(gap) > BROWSER_PREFERENCE_S:
            return Decision(
                "late_pair",
                f"{when}: more than 5 minutes apart",
                "Meta keeps the first to arrive (no browser preference after 5 minutes): de-duplicated",
                "TikTok de-duplicates but does not merge the server's match keys into the pixel event",
                gap,
            )
        return Decision(
            "paired",
            f"same event_id and event_name from browser and server; {when} (within 5 minutes)",
            "Meta de-duplicates and keeps the browser event",
            "TikTok merges the two and enriches the first with the other's match keys",
            gap,
        )
    source = next(iter(sources))
    other = "server" if source == "browser" else "browser"
    return Decision(
        "browser_only" if source == "browser" else "server_only",
        f"no {other} event carries this event_id (yet)",
        f"Meta counts the {source} event alone",
        f"TikTok counts the {source} event alone",
    )


def _mismatch(platform: str, table: Mapping[str, str], browser: str, server: str, key: str) -> str:
    """What ``platform`` makes of two names, once the browser SDK has mapped them."""
    if browser not in table:
        return (
            f"the browser SDK 0.4.0 fires no {platform} pixel event for {browser!r} (its tables know only "
            f"lowercase snake_case names): only the server event reaches {platform}"
        )
    mapped = table.get(server, server)
    if mapped == table[browser]:
        return (
            f"both map to {mapped!r}, so {platform} would still pair them; but the hub groups by event_name, "
            "and a server-side mapping other than the SDK's would not"
        )
    return f"{platform} pairs {key}: {table[browser]!r} and {mapped!r} do not match, both are counted"


def _reused(sides: Sequence[Side], names: list[str], many: list[Side]) -> Decision:
    if many:
        worst = max(many, key=lambda s: s.instances)
        why = f"{worst.instances} different {worst.source} events named {worst.name!r} carry it"
    else:
        why = f"it is used by {len(names)} event names ({', '.join(repr(n) for n in names)})"
    return Decision(
        "id_reused",
        f"one event_id, several events: {why}",
        "Meta keeps only the first event per event_id+event_name within 48 h; the others are dropped "
        '("Same Event ID Received for Many Event Instances")',
        "TikTok keeps only the first per event+event_id within 48 h",
    )


# -- match keys ------------------------------------------------------------------------------
_SHA256 = re.compile(r"[0-9a-f]{64}")
_ANY_HEX64 = re.compile(r"[0-9a-fA-F]{64}")
# fb.<subdomain index>.<creation time, ms>.<value>[.<appendix>] (Meta's fbp-and-fbc page)
_FB_COOKIE = re.compile(r"fb\.(?P<index>[0-2])\.(?P<ms>[0-9]{13})\.(?P<value>[^.\s]+)(?:\.[A-Za-z0-9_-]+)?")
_DOC_NETS = tuple(
    ipaddress.ip_network(n) for n in ("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24", "2001:db8::/32")
)

Hashing = Literal["required", "recommended", "never"]


@dataclass(frozen=True)
class KeyRule:
    key: str  # Meta's name
    tier: str  # Meta's priority tier: "high", "medium", "low" or "" (none published)
    hashing: Hashing
    label: str


# Meta's customer information parameters, in Meta's names. The wire's ``user_agent``
# is Meta's ``client_user_agent``; the browser's IP is the address its request came from.
KEY_RULES: dict[str, KeyRule] = {
    r.key: r
    for r in (
        KeyRule("em", "high", "required", "email"),
        KeyRule("fbc", "high", "never", "click id (_fbc / fbclid)"),
        KeyRule("ph", "medium", "required", "phone"),
        KeyRule("external_id", "medium", "recommended", "external id"),
        KeyRule("fbp", "medium", "never", "browser id (_fbp)"),
        KeyRule("country", "medium", "required", "country"),
        KeyRule("db", "medium", "required", "date of birth"),
        KeyRule("fn", "low", "required", "first name"),
        KeyRule("ln", "low", "required", "last name"),
        KeyRule("ct", "low", "required", "city"),
        KeyRule("zp", "low", "required", "zip"),
        KeyRule("st", "", "required", "state"),
        KeyRule("ge", "", "required", "gender"),
        KeyRule("client_ip_address", "", "never", "IP address"),
        KeyRule("client_user_agent", "", "never", "user agent"),
    )
}
TIER_WEIGHTS = {"high": 3, "medium": 2, "low": 1}  # ours, for the local score: Meta publishes none
_WIRE_NAMES = {"client_user_agent": "user_agent"}


def wire_key(meta_key: str) -> str:
    """The ``user_data`` key on the wire for one of Meta's names."""
    return _WIRE_NAMES.get(meta_key, meta_key)


KeyStatus = Literal["present", "absent", "invalid"]


def check_key(key: str, value: object) -> tuple[KeyStatus, str]:
    """``(status, note)`` for one value of Meta key ``key`` against Meta's rules."""
    if value is None or value == "":
        return "absent", ""
    if not isinstance(value, str):
        return "invalid", f"a {type(value).__name__}, not a string"
    rule = KEY_RULES[key]
    if rule.hashing == "required":
        if _SHA256.fullmatch(value):
            return "present", "SHA-256, lowercase hex"
        if _ANY_HEX64.fullmatch(value):
            return "invalid", "SHA-256 in uppercase hex: Meta wants lowercase"
        return "invalid", "must be hashed (SHA-256 of the normalised value) but is raw"
    if rule.hashing == "recommended":
        return "present", "hashed" if _SHA256.fullmatch(value) else "raw (Meta recommends hashing it)"
    if key in ("fbp", "fbc"):
        if _ANY_HEX64.fullmatch(value):
            return "invalid", "hashed, but Meta wants it raw"
        m = _FB_COOKIE.fullmatch(value)
        if m is None:
            return (
                "invalid",
                f"not in the fb.<subdomain index>.<creation ms>.<{'fbclid' if key == 'fbc' else 'random'}> form",
            )
        if key == "fbp" and not m.group("value").isdigit():
            return "invalid", "the last part of fbp is a random number"
        return "present", "raw, fb.<index>.<ms>.<value>"
    if key == "client_ip_address":
        return _check_ip(value)
    if _ANY_HEX64.fullmatch(value):  # client_user_agent
        return "invalid", "hashed, but Meta wants it raw"
    return "present", "raw"


def ip_family(value: str) -> str | None:
    try:
        return f"IPv{ipaddress.ip_address(value).version}"
    except ValueError:
        return None


def _check_ip(value: str) -> tuple[KeyStatus, str]:
    try:
        addr = ipaddress.ip_address(value)
    except ValueError:
        return "invalid", "not an IPv4 or IPv6 address" + (
            " (hashed? Meta wants it raw)" if _ANY_HEX64.fullmatch(value) else ""
        )
    family = f"IPv{addr.version}"
    if any(addr in net for net in _DOC_NETS):
        return "present", f"{family}, a documentation address (fine for a test)"
    if addr.is_loopback or addr.is_private or addr.is_link_local or addr.is_unspecified or addr.is_multicast:
        return "invalid", f"{family} {value} is not the shopper's public address (behind a proxy? see trust_proxy)"
    return "present", family + (" (Meta prefers IPv6)" if addr.version == 4 else "")


def user_keys(event: Mapping[str, Any] | None, peer: str | None = None) -> dict[str, object]:
    """The match keys of one event, by Meta's name. ``peer``: the address the event
    came from, the IP Meta's pixel would see (for a browser event)."""
    if event is None:
        return {}
    data = event.get("user_data")
    data = data if isinstance(data, Mapping) else {}
    keys = {k: data.get(wire_key(k)) for k in KEY_RULES}
    if peer and not keys.get("client_ip_address"):
        keys["client_ip_address"] = peer
    return {k: v for k, v in keys.items() if v not in (None, "")}


def present_keys(event: Mapping[str, Any] | None, peer: str | None = None) -> list[str]:
    """The valid match keys of one event (for coverage counts)."""
    return sorted(k for k, v in user_keys(event, peer).items() if check_key(k, v)[0] == "present")


@dataclass
class KeyRow:
    key: str
    label: str
    tier: str
    hashing: Hashing
    browser: KeyStatus
    browser_note: str
    server: KeyStatus
    server_note: str
    agree: bool | None  # browser and server carry the same value (None: not compared)
    agree_note: str = ""
    values: dict[str, object] = field(default_factory=dict)


_COMPARED = ("fbp", "fbc", "client_ip_address", "external_id", "client_user_agent")


def match_keys(
    browser: Mapping[str, Any] | None,
    server: Mapping[str, Any] | None,
    browser_peer: str | None = None,
) -> tuple[list[KeyRow], dict[str, Any]]:
    """One row per Meta key, and the *local coverage score* of the event the
    Conversions API would get (the server's, else the browser's)."""
    b, s = user_keys(browser, browser_peer), user_keys(server)
    rows = []
    for key, rule in KEY_RULES.items():
        bs, bn = check_key(key, b.get(key)) if browser is not None else ("absent", "")
        ss, sn = check_key(key, s.get(key)) if server is not None else ("absent", "")
        agree: bool | None = None
        note = ""
        if key in _COMPARED and b.get(key) and s.get(key):
            agree = b[key] == s[key]
            if key == "client_ip_address":
                bf, sf = ip_family(str(b[key])), ip_family(str(s[key]))
                note = "same address" if agree else f"differ (browser {bf}, server {sf})"
                if not agree:
                    note += (
                        ": Meta flags a different IP family" if bf != sf else ': Meta flags "mismatched IP addresses"'
                    )

            elif key == "external_id" and not agree:
                note = (
                    "differ: one side hashed it, the other not?"
                    if len({len(str(v)) for v in (b[key], s[key])}) > 1
                    else "differ"
                )
            else:
                note = "same value" if agree else "differ: Meta may flag invalid match keys"
        rows.append(
            KeyRow(
                key,
                rule.label,
                rule.tier,
                rule.hashing,
                bs,
                bn,
                ss,
                sn,
                agree,
                note,
                {"browser": b.get(key), "server": s.get(key)},
            )
        )
    basis = "server" if server is not None else "browser"
    got = {r.key for r in rows if (r.server if basis == "server" else r.browser) == "present"}
    tiers = {
        t: (
            sum(1 for k, r in KEY_RULES.items() if r.tier == t and k in got),
            sum(1 for r in KEY_RULES.values() if r.tier == t),
        )
        for t in TIER_WEIGHTS
    }
    total = sum(TIER_WEIGHTS[t] * n for t, (_, n) in tiers.items())
    score = sum(TIER_WEIGHTS[t] * have for t, (have, _) in tiers.items())
    summary = {
        "basis": basis,
        "local_coverage_score": round(100 * score / total),
        "tiers": {t: {"present": have, "of": n} for t, (have, n) in tiers.items()},
        "note": "local coverage score: Meta's tiered keys present on the event, weighted 3/2/1 by tier here; "
        "Meta publishes no weights, so this is not Event Match Quality",
    }
    return rows, summary


def fingerprint(event: Mapping[str, Any]) -> str:
    """One event *instance*: a resend (another attempt, the same body) has the same."""
    core = {k: v for k, v in event.items() if k != "client_meta"}
    return hashlib.sha256(json.dumps(core, sort_keys=True, default=str).encode()).hexdigest()[:16]


# -- event_time ------------------------------------------------------------------------------
def event_time_flags(event_time: object, received_at: float) -> list[str]:
    """What is wrong with an ``event_time`` that reached the hub at ``received_at``."""
    if not isinstance(event_time, int) or isinstance(event_time, bool):
        return ["event_time is not an integer of unix seconds"]
    if event_time > 10**11:
        return ["event_time looks like milliseconds, not seconds"]
    flags = []
    if event_time < received_at - MAX_EVENT_AGE_S:
        flags.append("event_time is more than 7 days old: Meta refuses the whole request")
    if event_time > received_at + FUTURE_SLACK_S:
        flags.append(f"event_time is {_span(event_time - received_at)} in the future")
    return flags


# -- origins and the diff --------------------------------------------------------------------
_COOKIE_OF = {key: cookie for key, (_, cookie) in _wire.CLICK_IDS.items()}
_PARAM_OF = {key: param for key, (param, _) in _wire.CLICK_IDS.items()}
_HASHED_TRAITS = {"em", "ph", "fn", "ln", "ct", "st", "zp", "country", "db", "ge"}


def origin(source: str, path: str, paired: bool = False) -> str:
    """Where a field of a ``source`` event's body came from."""
    browser = source == "browser"
    top, _, key = path.partition(".")
    if top == "user_data":
        if key == "client_ip_address":
            return "the browser's own request (its address)" if browser else "request (peer / X-Forwarded-For)"
        if key == "user_agent":
            return "browser (navigator.userAgent)" if browser else "request header User-Agent"
        if key in _COOKIE_OF:
            parts = [
                f"cookie {_COOKIE_OF[key]}" if _COOKIE_OF[key] else "",
                f"URL ?{_PARAM_OF[key]}" if _PARAM_OF[key] else "",
            ]
            return " or ".join(p for p in parts if p)
        if key in _HASHED_TRAITS or key == "external_id":
            return (
                "browser SDK identify(), hashed in the page" if browser else "app code identity, hashed by the package"
            )
        return "browser SDK" if browser else "app code"
    if top == "custom_data":
        return "browser SDK track() props" if browser else "app code props"
    if top in ("event_id", "event_name"):
        if browser:
            return "browser SDK track()"
        return "pairing header from the browser" if paired else "app code"
    if top == "event_source_url":
        return "browser (location.href)" if browser else "the request's URL or Referer"
    if top == "client_meta":
        return "browser SDK queue" if browser else "the package's sender"
    return "browser SDK" if browser else "the package"


def flatten(doc: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"user_data.em": ..., "custom_data.contents": [...]}``: objects flattened two
    levels deep; lists kept whole."""
    out: dict[str, Any] = {}
    for key, value in doc.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping) and not prefix:
            out.update(flatten(value, path + "."))
        else:
            out[path] = value
    return out


def diff(
    browser: Mapping[str, Any] | None, server: Mapping[str, Any] | None, browser_peer: str | None = None
) -> list[dict[str, Any]]:
    """Both bodies field by field: each value, whether they agree, each side's origin."""
    paired = browser is not None and server is not None
    b = flatten(browser or {})
    s = flatten(server or {})
    if browser is not None and browser_peer and "user_data.client_ip_address" not in b:
        b["user_data.client_ip_address"] = browser_peer  # what the pixel's request carries
    rows = []
    for path in sorted(set(b) | set(s), key=_field_order):
        in_b, in_s = path in b, path in s
        if in_b and in_s:
            state = "same" if b[path] == s[path] else "differs"
        else:
            state = "browser only" if in_b else "server only"
        rows.append(
            {
                "field": path,
                "browser": b.get(path),
                "server": s.get(path),
                "state": state,
                "browser_origin": origin("browser", path, paired) if in_b else "",
                "server_origin": origin("server", path, paired) if in_s else "",
            }
        )
    return rows


_TOP_ORDER = [
    "event_name",
    "event_id",
    "event_time",
    "action_source",
    "event_source_url",
    "site_id",
    "user_data",
    "custom_data",
    "client_meta",
]


def _field_order(path: str) -> tuple[int, str]:
    top = path.partition(".")[0]
    return (_TOP_ORDER.index(top) if top in _TOP_ORDER else len(_TOP_ORDER), path)


# -- redaction -------------------------------------------------------------------------------
_SECRET_KEYS = {
    *KEY_RULES,
    "user_agent",
    "ga",
    "gclid",
    "ttclid",
    "ttp",
    "epik",
    "sccid",
    "scid",
    "rdtcid",
    "twclid",
    "lfid",
}


def redact(value: object) -> object:
    """A match key's value cut to its first characters: enough to compare by eye."""
    if isinstance(value, list):
        return [redact(v) for v in value]
    if isinstance(value, str) and len(value) > 8:
        return value[:6] + "…"
    return "…" if isinstance(value, str) and value else value


def redact_keys(doc: Any, reveal: bool) -> Any:
    """``doc`` with every match-key value redacted, unless ``reveal``."""
    if reveal:
        return doc
    if isinstance(doc, Mapping):
        return {
            k: redact(v) if k in _SECRET_KEYS or k in _PLATFORM_SECRET_KEYS else redact_keys(v, reveal)
            for k, v in doc.items()
        }
    if isinstance(doc, list):
        return [redact_keys(v, reveal) for v in doc]
    return doc


_PLATFORM_SECRET_KEYS = {
    "email",
    "phone",
    "ip",
    "user_agent",
    "hashedEmail",
    "hashedPhoneNumber",
    "ttp",
    "client_ip_address",
    "client_user_agent",
}


# -- platform payloads -----------------------------------------------------------------------
def _custom(event: Mapping[str, Any]) -> dict[str, Any]:
    data = event.get("custom_data")
    return dict(data) if isinstance(data, Mapping) else {}


def _data(event: Mapping[str, Any]) -> dict[str, Any]:
    data = event.get("user_data")
    return dict(data) if isinstance(data, Mapping) else {}


def meta_entry(event: Mapping[str, Any], peer: str | None = None) -> dict[str, Any]:
    """The event as one entry of a Conversions API request's ``data[]``: hashed keys
    as arrays, the IP and user agent raw, the name as the browser SDK maps it."""
    name = str(event.get("event_name", ""))
    keys = user_keys(event, peer)
    user: dict[str, Any] = {}
    for key, value in keys.items():
        rule = KEY_RULES[key]
        user[key] = [value] if rule.hashing != "never" else value
    custom = _custom(event)
    if "contents" in custom and "content_type" not in custom:
        custom["content_type"] = "product"
    entry: dict[str, Any] = {
        "event_name": META_EVENTS.get(name, name),
        "event_time": event.get("event_time"),
        "event_id": event.get("event_id"),
        "action_source": event.get("action_source", "website"),
    }
    if event.get("event_source_url"):
        entry["event_source_url"] = event["event_source_url"]
    entry["user_data"] = user
    if custom:
        entry["custom_data"] = custom
    return entry


def tiktok_event(event: Mapping[str, Any], peer: str | None = None) -> dict[str, Any]:
    """The event as one ``data[]`` entry of TikTok's Events API 2.0."""
    name = str(event.get("event_name", ""))
    data, custom = _data(event), _custom(event)
    user: dict[str, Any] = {}
    for wire, tt in (
        ("em", "email"),
        ("ph", "phone"),
        ("external_id", "external_id"),
        ("ttclid", "ttclid"),
        ("ttp", "ttp"),
    ):
        if data.get(wire):
            user[tt] = data[wire]
    ip = data.get("client_ip_address") or peer
    if ip:
        user["ip"] = ip
    if data.get("user_agent"):
        user["user_agent"] = data["user_agent"]
    props: dict[str, Any] = {k: custom[k] for k in ("currency", "value", "order_id") if k in custom}
    if isinstance(custom.get("contents"), list):
        props["contents"] = [
            {"content_id": c.get("id"), "quantity": c.get("quantity", 1), "price": c.get("item_price", 0)}
            for c in custom["contents"]
            if isinstance(c, Mapping)
        ]
        props["content_type"] = "product"
    if "search_string" in custom:
        props["query"] = custom["search_string"]
    out: dict[str, Any] = {
        "event": TIKTOK_EVENTS.get(name, name),
        "event_time": event.get("event_time"),
        "event_id": event.get("event_id"),
        "user": user,
    }
    if props:
        out["properties"] = props
    if event.get("event_source_url"):
        out["page"] = {"url": event["event_source_url"]}
    return out


def google_conversion_time(event_time: object) -> str:
    """Google Ads' ``conversion_date_time``: ``yyyy-mm-dd hh:mm:ss+|-hh:mm``."""
    seconds = event_time if isinstance(event_time, int) and not isinstance(event_time, bool) else 0
    when = _dt.datetime.fromtimestamp(seconds, _dt.timezone.utc)
    return when.strftime("%Y-%m-%d %H:%M:%S+00:00")


def google_click_conversion(event: Mapping[str, Any]) -> dict[str, Any]:
    """The event as a Google Ads API ``ClickConversion`` (REST JSON names): at most 5
    user identifiers, only a hashed email and a hashed phone number."""
    data, custom = _data(event), _custom(event)
    out: dict[str, Any] = {"conversionAction": "customers/CUSTOMER_ID/conversionActions/CONVERSION_ACTION_ID"}
    if data.get("gclid"):
        out["gclid"] = data["gclid"]
    out["conversionDateTime"] = google_conversion_time(event.get("event_time"))
    if isinstance(custom.get("value"), (int, float)):
        out["conversionValue"] = custom["value"]
    if isinstance(custom.get("currency"), str):
        out["currencyCode"] = custom["currency"].upper()
    if custom.get("order_id"):
        out["orderId"] = custom["order_id"]
    ids = [{"hashedEmail": data["em"]}] if data.get("em") else []
    ids += [{"hashedPhoneNumber": data["ph"]}] if data.get("ph") else []
    if ids:
        out["userIdentifiers"] = ids[:5]
    return out


def _curl(url: str, headers: Iterable[str], body: Any) -> str:
    lines = [f"curl -X POST {url}"]
    lines += [f"  -H {h}" for h in headers]
    lines.append(f"  --data {shlex.quote(json.dumps(body, ensure_ascii=False))}")
    return " \\\n".join(lines)


def previews(event: Mapping[str, Any], peer: str | None = None, reveal: bool = False) -> dict[str, dict[str, Any]]:
    """What Meta, TikTok and Google Ads would receive for ``event``, as bodies and as
    ``curl`` commands. Match-key values are redacted unless ``reveal``; tokens and
    account ids are always placeholders (``$META_ACCESS_TOKEN``...): the hub has none."""
    name = str(event.get("event_name", ""))
    meta_body = redact_keys({"data": [meta_entry(event, peer)], "test_event_code": "TEST_EVENT_CODE"}, reveal)
    tiktok_body = redact_keys(
        {
            "event_source": "web",
            "event_source_id": "PIXEL_CODE",
            "test_event_code": "TEST_EVENT_CODE",
            "data": [tiktok_event(event, peer)],
        },
        reveal,
    )
    google_body = redact_keys(
        {"conversions": [google_click_conversion(event)], "partialFailure": True, "validateOnly": True}, reveal
    )

    def note(table: dict[str, str], platform: str) -> str:
        if name in table:
            return f"{name!r} -> {table[name]!r}, as the browser SDK 0.4.0 maps it"
        return (
            f"the browser SDK 0.4.0 fires no {platform} event for {name!r}: "
            "the server event would be a custom event without a pixel side"
        )

    google_note = note(GOOGLE_EVENTS, "Google")
    if not _data(event).get("gclid"):
        google_note += "; no gclid on this event: Google Ads attributes a click conversion by gclid (or gbraid/wbraid)"
    return {
        "meta": {
            "platform": "Meta Conversions API",
            "event_name": META_EVENTS.get(name),
            "note": note(META_EVENTS, "Meta"),
            "body": meta_body,
            "curl": _curl(
                '"' + META_API + '/${META_PIXEL_ID}/events?access_token=${META_ACCESS_TOKEN}"',
                ["'Content-Type: application/json'"],
                meta_body,
            ),
        },
        "tiktok": {
            "platform": "TikTok Events API",
            "event_name": TIKTOK_EVENTS.get(name),
            "note": note(TIKTOK_EVENTS, "TikTok"),
            "body": tiktok_body,
            "curl": _curl(
                TIKTOK_API, ['"Access-Token: ${TIKTOK_ACCESS_TOKEN}"', "'Content-Type: application/json'"], tiktok_body
            ),
        },
        "google": {
            "platform": "Google Ads click conversion",
            "event_name": GOOGLE_EVENTS.get(name),
            "note": google_note,
            "body": google_body,
            "curl": _curl(
                '"' + GOOGLE_ADS_API + '/customers/${GOOGLE_ADS_CUSTOMER_ID}:uploadClickConversions"',
                [
                    '"Authorization: Bearer ${GOOGLE_ADS_OAUTH_TOKEN}"',
                    '"developer-token: ${GOOGLE_ADS_DEVELOPER_TOKEN}"',
                    "'Content-Type: application/json'",
                ],
                google_body,
            ),
        },
    }


# -- warnings --------------------------------------------------------------------------------
def warnings(
    decision: Decision,
    events: Sequence[Mapping[str, Any]],
    now: float,
    unpaired_after: float,
    keys: Sequence[KeyRow] = (),
) -> list[str]:
    """Everything worth a second look in one id's events. ``events``: the stored
    records (``source``, ``received_at``, ``event``), oldest first."""
    out: list[str] = []
    if decision.verdict in ("browser_only", "server_only") and events:
        waited = now - min(float(e["received_at"]) for e in events)
        if waited > unpaired_after:
            out.append(f"unpaired after {_span(waited)} (the limit is {_span(unpaired_after)})")
    if decision.gap_s is not None and abs(decision.gap_s) > DEDUP_WINDOW_S:
        out.append(f"the two sides arrived {_span(decision.gap_s)} apart: over 48 h, no de-duplication")
    elif decision.gap_s is not None and abs(decision.gap_s) > BROWSER_PREFERENCE_S:
        out.append(f"the two sides arrived {_span(decision.gap_s)} apart: over 5 minutes")
    times = {e["source"]: e["event"].get("event_time") for e in events}
    fired = [t for t in times.values() if isinstance(t, int) and not isinstance(t, bool)]
    if len(fired) == 2 and abs(fired[0] - fired[1]) > BROWSER_PREFERENCE_S:
        out.append(
            f"the two sides' event_time differ by {_span(fired[0] - fired[1])}: they fired at different moments "
            "(a server event from a later step or a webhook?)"
        )
    if decision.verdict == "id_reused" or len(events) > 2:
        out.append(f"{len(events)} events share this event_id")
    for e in events:
        body = e["event"]
        who = f"{e['source']} event {body.get('event_name')!r}"
        if body.get("action_source", "website") == "website":
            missing = [k for k in ("action_source", "event_source_url") if not body.get(k)]
            if not _data(body).get("user_agent"):
                missing.append("client_user_agent")
            if missing:
                out.append(f"{who}: a website event without {', '.join(missing)}")
        out.extend(f"{who}: {flag}" for flag in event_time_flags(body.get("event_time"), float(e["received_at"])))
    for row in keys:
        if row.agree is False:
            out.append(f"{row.key}: browser and server {row.agree_note}")
    return out


# -- one id, explained ----------------------------------------------------------------------
def sides_of(records: Sequence[Mapping[str, Any]]) -> list[Side]:
    """:class:`Side` summaries of stored records (``source``, ``received_at``, ``event``)."""
    grouped: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
    for r in records:
        grouped.setdefault((str(r["source"]), str(r["event"].get("event_name"))), []).append(r)
    return [
        Side(
            source,
            name,
            len(rs),
            len({fingerprint(r["event"]) for r in rs}),
            min(float(r["received_at"]) for r in rs),
            max(float(r["received_at"]) for r in rs),
        )
        for (source, name), rs in grouped.items()
    ]


def _pick(records: Sequence[Mapping[str, Any]]) -> tuple[Mapping[str, Any] | None, Mapping[str, Any] | None]:
    """The browser and server records to compare: the first pair with one name, else
    the first of each side."""
    browser = [r for r in records if r["source"] == "browser"]
    server = [r for r in records if r["source"] == "server"]
    for b in browser:
        for s in server:
            if b["event"].get("event_name") == s["event"].get("event_name"):
                return b, s
    return (browser[0] if browser else None), (server[0] if server else None)


def _shown(row: dict[str, Any], reveal: bool) -> dict[str, Any]:
    if reveal or not row["field"].startswith("user_data."):
        return row
    return {**row, "browser": redact(row["browser"]), "server": redact(row["server"])}


def explain(
    records: Sequence[Mapping[str, Any]], now: float, unpaired_after: float = 60.0, reveal: bool = False
) -> dict[str, Any]:
    """Everything the group view shows for the records of one ``event_id``, oldest
    first: verdict and rule, warnings, timeline, the diff with origins, match keys,
    and the platforms' payloads. Match-key values are redacted unless ``reveal``."""
    decision = decide(sides_of(records))
    b, s = _pick(records)
    peer = str(b["peer"]) if b is not None and b.get("peer") else None
    rows, summary = match_keys(b["event"] if b else None, s["event"] if s else None, peer)
    first = {
        src: min((float(r["received_at"]) for r in records if r["source"] == src), default=None)
        for src in ("browser", "server")
    }
    timeline = []
    for r in records:
        ev, meta = r["event"], r["event"].get("client_meta") or {}
        queued = meta.get("queued_at_ms") if isinstance(meta, Mapping) else None
        et = ev.get("event_time")
        timeline.append(
            {
                "seq": r.get("seq"),
                "source": r["source"],
                "event_name": ev.get("event_name"),
                "received_at": r["received_at"],
                "event_time": et,
                "lag_s": float(r["received_at"]) - et if isinstance(et, int) and not isinstance(et, bool) else None,
                "queued_at_ms": queued,
                "queued_for_s": float(r["received_at"]) - queued / 1000 if isinstance(queued, (int, float)) else None,
                "attempts": meta.get("attempts") if isinstance(meta, Mapping) else None,
                "sdk": meta.get("sdk") if isinstance(meta, Mapping) else None,
                "flags": event_time_flags(et, float(r["received_at"])),
                "instance": fingerprint(ev),
            }
        )
    basis = s or b
    assert basis is not None, "explain() needs at least one record"
    return {
        "event_id": basis["event"].get("event_id"),
        "verdict": decision.verdict,
        "verdict_label": decision.label,
        "rule": decision.rule,
        "meta": decision.meta,
        "tiktok": decision.tiktok,
        "gap_s": decision.gap_s,
        "first_received": first,
        "warnings": warnings(decision, records, now, unpaired_after, rows),
        "timeline": timeline,
        "compared": {"browser": b.get("seq") if b else None, "server": s.get("seq") if s else None},
        "diff": [_shown(row, reveal) for row in diff(b["event"] if b else None, s["event"] if s else None, peer)],
        "match_keys": {
            "rows": [
                {
                    "key": r.key,
                    "label": r.label,
                    "tier": r.tier,
                    "hashing": r.hashing,
                    "browser": r.browser,
                    "browser_note": r.browser_note,
                    "server": r.server,
                    "server_note": r.server_note,
                    "agree": r.agree,
                    "agree_note": r.agree_note,
                    "values": r.values if reveal else {k: redact(v) for k, v in r.values.items()},
                }
                for r in rows
            ],
            **summary,
        },
        "preview_source": basis["source"],
        "previews": previews(basis["event"], peer if basis is b else None, reveal),
        "revealed": reveal,
    }


def percentile(values: Sequence[float], q: float) -> float | None:
    """The ``q``-quantile (0-1) by the nearest-rank method; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * q // 1))  # ceil(n q), at least 1
    return ordered[int(rank) - 1]


__all__ = [
    "COVERAGE_GOAL",
    "GOOGLE_EVENTS",
    "KEY_RULES",
    "META_EVENTS",
    "TIKTOK_EVENTS",
    "VERDICTS",
    "Decision",
    "KeyRow",
    "Side",
    "check_key",
    "decide",
    "diff",
    "event_time_flags",
    "explain",
    "match_keys",
    "origin",
    "percentile",
    "previews",
    "warnings",
]
