"""Event bodies in the wire format (docs/wire.md, section 3), built the way the browser SDK builds them.

This is the one place that builds the wire body. Props are read, not trusted: a
mapping, a dataclass or a pydantic model (anything with ``model_dump()``), at any
level; ``Decimal`` and numeric strings (``"10.50"``) for ``value``, ``price`` and
``quantity``. Whatever is not sent is reported as a :class:`Dropped` (where it was
and why, never the value) in :func:`build_checked`'s result, so the client can count
and log it:

==================  ==========================================================
reason              what was dropped
==================  ==========================================================
``pii_prop``        a key that names an identity field (:func:`._pii.is_pii_key`),
                    at any depth: identity goes through ``identity=``/``identify()``,
                    hashed, never through props
``not_a_number``    ``value`` / ``price`` / ``quantity`` that is not a finite number
                    (or a whole one, for ``quantity``), any NaN or infinity
``not_a_string``    ``currency``, ``order_id``, ``search_term``, ``item_id`` of the
                    wrong type
``no_item_id``      an item without ``item_id`` (sent without an ``id``)
``unsupported_type`` a value JSON cannot carry, an item that is not a mapping
``bad_key``         a key that is not a string or an int
``reserved``        ``__proto__`` / ``constructor`` / ``prototype``, as the SDK drops
``too_deep``        nesting deeper than :data:`MAX_DEPTH`
``too_large``       values past the first :data:`MAX_VALUES` of one event
==================  ==========================================================
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import decimal
import enum
import math
import os
import re
import threading
import time
import uuid
from collections.abc import Mapping
from typing import Any, NamedTuple

from . import _wire
from ._pii import is_pii_key

Event = dict[str, Any]

# An event name from our own caller: a bounded, printable identifier.
EVENT_NAME_RE = re.compile(r"[A-Za-z][A-Za-z0-9_.:-]{0,63}")
# An event id from our caller, or from the pairing header (untrusted): bounded, safe charset.
EVENT_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{7,63}")
# The name in a pairing header: snake_case as the browser SDK sends it.
HEADER_NAME_RE = _wire.EVENT_NAME_HEADER_RE

# Props are small; these bound the walk when an app hands over something that is not.
MAX_DEPTH = 8
MAX_VALUES = 1000

# Props the browser SDK maps to their own custom_data fields (docs/wire.md, section 3).
_MAPPED = frozenset({"value", "currency", "order_id", "items", "item_id", "search_term"})
# Dropped by the browser SDK too (they mean something to JavaScript objects).
_RESERVED = frozenset({"__proto__", "constructor", "prototype"})
_NUMBER_RE = re.compile(r"[+-]?\d{1,15}(?:\.\d{1,10})?")
_PATH_KEY = 40  # a key in a reported path is cut to this many characters
_DROP: Any = object()


class Dropped(NamedTuple):
    """A prop that was not sent: its path (``customer.email``, ``items[0].price``) and
    the reason (see the module docstring). Never its value."""

    path: str
    reason: str


class Built(NamedTuple):
    event: Event
    dropped: list[Dropped]


def new_event_id(event_name: str) -> str:
    """``<prefix>_<16 hex>`` from 8 random bytes, as the browser SDK makes them."""
    return f"{_wire.event_id_prefix(event_name)}_{_random_hex()}"


class _Entropy(threading.local):
    """Random bytes read from the OS 4 KiB at a time: one system call per 512 ids, not per id.
    Per thread, and read again in a forked child (a copied buffer would repeat the parent's ids)."""

    pid = 0
    buffer = b""
    at = 0


_entropy = _Entropy()


def _random_hex() -> str:
    e = _entropy
    at = e.at
    if at >= len(e.buffer) or e.pid != os.getpid():
        e.buffer, at, e.pid = os.urandom(4096), 0, os.getpid()
    e.at = at + 8
    return e.buffer[at : at + 8].hex()


def as_mapping(obj: object) -> Mapping[Any, Any] | None:
    """``obj`` read as a mapping: a Mapping itself, a dataclass instance's fields (one
    level: nested values are read when they are walked), a pydantic model's
    ``model_dump()``; None for anything else, or when ``model_dump`` fails."""
    if type(obj) is dict or isinstance(obj, Mapping):  # a dict, nearly always: skip the ABC check
        return obj
    if isinstance(obj, type):
        return None
    if dataclasses.is_dataclass(obj):
        return {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}
    dump = getattr(obj, "model_dump", None)
    if callable(dump):
        try:
            dumped = dump()
        except Exception:  # the app's model; its failure is reported as unsupported
            return None
        return dumped if isinstance(dumped, Mapping) else None
    return None


def _number(value: object) -> int | float | None:
    """A finite JSON number from a number, a Decimal or a plain decimal string."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, decimal.Decimal):
        # Decimal is how Python code holds money; the wire wants a JSON number.
        return float(value) if value.is_finite() else None
    if isinstance(value, str) and _NUMBER_RE.fullmatch(value.strip()):
        return float(value)
    return None


def _integer(value: object) -> int | None:
    number = _number(value)
    if isinstance(number, float):
        return int(number) if number.is_integer() else None
    return number


def _id(value: object) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, uuid.UUID):
        return str(value)
    return None


def _join(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    if len(key) > _PATH_KEY:
        key = key[:_PATH_KEY] + "…"
    if not key.isprintable():  # paths are logged: no line breaks or control characters
        key = "".join(c if c.isprintable() else "?" for c in key)
    return f"{path}.{key}" if path else key


class _Walk:
    """One event's props walk: the drops it found and the values it may still visit."""

    __slots__ = ("budget", "dropped")

    def __init__(self) -> None:
        self.dropped: list[Dropped] = []
        self.budget = MAX_VALUES

    def drop(self, path: str, reason: str) -> None:
        self.dropped.append(Dropped(path, reason))

    def value(self, value: Any, path: str, depth: int) -> Any:
        """A JSON-ready copy of ``value``, or ``_DROP`` (reported)."""
        self.budget -= 1
        if value is None or isinstance(value, (str, int)):  # bool is an int
            return value
        if isinstance(value, (float, decimal.Decimal)):
            number = _number(value)
            if number is None:
                self.drop(path, "not_a_number")
                return _DROP
            return number
        if isinstance(value, (_dt.date, _dt.time)):  # datetime is a date
            return value.isoformat()
        if isinstance(value, uuid.UUID):
            return str(value)
        if isinstance(value, enum.Enum):  # str and int enums took the first branch
            return self.value(value.value, path, depth + 1)
        if depth >= MAX_DEPTH:
            self.drop(path, "too_deep")
            return _DROP
        if isinstance(value, (list, tuple, set, frozenset)):
            return self.sequence(value, path, depth + 1)
        mapping = as_mapping(value)
        if mapping is None:
            self.drop(path, "unsupported_type")
            return _DROP
        return self.mapping(mapping, path, depth + 1)

    def sequence(self, values: Any, path: str, depth: int) -> list[Any]:
        out: list[Any] = []
        for i, v in enumerate(values):
            if self.budget <= 0:
                self.drop(f"{path}[{i}:]", "too_large")
                break
            clean = self.value(v, _join(path, i), depth)
            if clean is not _DROP:
                out.append(clean)
        return out

    def mapping(self, values: Mapping[Any, Any], path: str, depth: int, skip: frozenset[str] = frozenset()) -> Event:
        out: Event = {}
        for key, v in values.items():
            if key in skip:
                continue
            if self.budget <= 0:
                self.drop(_join(path, "*"), "too_large")
                break
            if not isinstance(key, str):
                if not isinstance(key, int) or isinstance(key, bool):
                    self.budget -= 1
                    self.drop(_join(path, f"<{type(key).__name__}>"), "bad_key")
                    continue
                key = str(key)
            if key in _RESERVED or is_pii_key(key):
                self.budget -= 1
                self.drop(_join(path, key), "reserved" if key in _RESERVED else "pii_prop")
                continue
            # Scalars (most props) never need their path: it is only built on the way down.
            if v is None or isinstance(v, (str, int)):
                self.budget -= 1
                out[key] = v
                continue
            clean = self.value(v, _join(path, key), depth)
            if clean is not _DROP:
                out[key] = clean
        return out

    def custom_data(self, props: Mapping[Any, Any]) -> Event:
        """Props -> ``custom_data``, mapped exactly as the browser SDK maps them (docs/wire.md, section 3)."""
        out: Event = {}
        value = props.get("value")
        if value is not None:
            number = _number(value)
            if number is None:
                self.drop("value", "not_a_number")
            else:
                out["value"] = number
        for key, field in (("currency", "currency"), ("order_id", "order_id"), ("search_term", "search_string")):
            raw = props.get(key)
            if raw is None:
                continue
            text = raw if isinstance(raw, str) else _id(raw) if key == "order_id" else None
            if text is None:
                self.drop(key, "not_a_string")
            else:
                out[field] = text
        items = props.get("items")
        if items is not None:
            if isinstance(items, (list, tuple)):
                self.items(items, out)
            else:
                self.drop("items", "unsupported_type")
        elif props.get("item_id") is not None:
            item_id = _id(props["item_id"])
            if item_id is None:
                self.drop("item_id", "not_a_string")
            else:
                out["content_ids"] = [item_id]
        out.update(self.mapping(props, "", 0, skip=_MAPPED))
        return out

    def items(self, items: list[Any] | tuple[Any, ...], out: Event) -> None:
        contents: list[dict[str, Any]] = []
        for i, item in enumerate(items):
            if self.budget <= 0:
                self.drop(f"items[{i}:]", "too_large")
                break
            self.budget -= 1
            fields = as_mapping(item)
            if fields is None:
                self.drop(f"items[{i}]", "unsupported_type")
                continue
            content: dict[str, Any] = {}
            item_id = fields.get("item_id")
            if item_id is None:
                self.drop(f"items[{i}].item_id", "no_item_id")
            elif (text := _id(item_id)) is None:
                self.drop(f"items[{i}].item_id", "not_a_string")
            else:
                content["id"] = text
            quantity = fields.get("quantity")
            content["quantity"] = 1 if quantity is None else _integer(quantity)
            if content["quantity"] is None:
                self.drop(f"items[{i}].quantity", "not_a_number")
                content["quantity"] = 1
            price = fields.get("price")
            content["item_price"] = 0 if price is None else _number(price)
            if content["item_price"] is None:
                self.drop(f"items[{i}].price", "not_a_number")
                content["item_price"] = 0
            contents.append(content)
        out["contents"] = contents
        out["content_ids"] = [c["id"] for c in contents if "id" in c]
        out["num_items"] = len(contents)


def map_props(props: object) -> tuple[Event, list[Dropped]]:
    """``(custom_data, dropped)`` for props given as a mapping, a dataclass or a model."""
    walk = _Walk()
    if props is None:
        return {}, walk.dropped
    mapping = as_mapping(props)
    if mapping is None:
        walk.drop("*", "unsupported_type")
        return {}, walk.dropped
    return walk.custom_data(mapping), walk.dropped


def custom_data(props: object) -> Event:
    """Props -> ``custom_data``; see :func:`map_props` for what was dropped."""
    return map_props(props)[0]


def build_checked(
    *,
    site_id: str | int,
    event_name: str,
    event_id: str,
    props: object,
    user_data: dict[str, str],
    event_source_url: str | None,
    event_time: int | None = None,
) -> Built:
    """The event body and the props that were dropped from it (counted by the caller)."""
    data, dropped = map_props(props)
    return Built(assemble(site_id, event_name, event_id, data, user_data, event_source_url, event_time), dropped)


def assemble(
    site_id: str | int,
    event_name: str,
    event_id: str,
    custom: Event,
    user_data: dict[str, str],
    event_source_url: str | None,
    event_time: int | None = None,
    queued_at: float | None = None,
) -> Event:
    """The wire body from parts already checked (``custom`` from :func:`map_props`)."""
    now = time.time() if queued_at is None else queued_at
    event: Event = {
        "site_id": site_id,
        "event_id": event_id,
        "event_name": event_name,
        "event_time": int(now) if event_time is None else event_time,
        "action_source": "website",
        "user_data": user_data,
        "custom_data": custom,
        "client_meta": {
            "sdk": _wire.SDK_NAME,
            "source": _wire.SOURCE,
            "queued_at_ms": int(now * 1000),
            "attempts": 0,
        },
    }
    if event_source_url:
        event["event_source_url"] = event_source_url
    return event


def build_event(
    *,
    site_id: str | int,
    event_name: str,
    event_id: str,
    props: object,
    user_data: dict[str, str],
    event_source_url: str | None,
    event_time: int | None = None,
) -> Event:
    """:func:`build_checked` for callers that do not count drops (tests, the demo)."""
    return build_checked(
        site_id=site_id,
        event_name=event_name,
        event_id=event_id,
        props=props,
        user_data=user_data,
        event_source_url=event_source_url,
        event_time=event_time,
    ).event
