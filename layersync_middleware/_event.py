"""Event bodies in the wire format (wire.md 3), built the way the browser SDK builds them."""

from __future__ import annotations

import decimal
import re
import secrets
import time
from collections.abc import Mapping
from typing import Any

from . import _wire

Event = dict[str, Any]

# An event name from our own caller: a bounded, printable identifier.
EVENT_NAME_RE = re.compile(r"[A-Za-z][A-Za-z0-9_.:-]{0,63}")
# An event id from our caller, or from the pairing header (untrusted): bounded, safe charset.
EVENT_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{7,63}")
# The name in a pairing header: snake_case as the browser SDK sends it.
HEADER_NAME_RE = re.compile(r"[a-z][a-z0-9_]{0,39}")


def new_event_id(event_name: str) -> str:
    """``<prefix>_<16 hex>`` from 8 random bytes, as the browser SDK makes them."""
    return f"{_wire.event_id_prefix(event_name)}_{secrets.token_hex(8)}"


def _money(value: Any) -> Any:
    # Decimal is how Python code holds money; the wire wants a JSON number.
    return float(value) if isinstance(value, decimal.Decimal) else value


def custom_data(props: Mapping[str, Any] | None) -> dict[str, Any]:
    """Props -> ``custom_data``, mapped exactly as the browser SDK maps them."""
    if not props:
        return {}
    out: dict[str, Any] = {}
    value = _money(props.get("value"))
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        out["value"] = value
    if isinstance(props.get("currency"), str):
        out["currency"] = props["currency"]
    order_id = props.get("order_id")
    if isinstance(order_id, str):
        out["order_id"] = order_id
    elif isinstance(order_id, int) and not isinstance(order_id, bool):
        out["order_id"] = str(order_id)
    if isinstance(props.get("search_term"), str):
        out["search_string"] = props["search_term"]
    items = props.get("items")
    if isinstance(items, (list, tuple)):
        contents = []
        for item in items:
            it = item if isinstance(item, Mapping) else {}
            quantity = it.get("quantity")
            price = it.get("price")
            contents.append(
                {
                    "id": it.get("item_id"),
                    "quantity": 1 if quantity is None else quantity,
                    "item_price": 0 if price is None else _money(price),
                }
            )
        out["contents"] = contents
        out["content_ids"] = [c["id"] for c in contents]
        out["num_items"] = len(contents)
    elif isinstance(props.get("item_id"), str):
        out["content_ids"] = [props["item_id"]]
    for key, val in props.items():
        if key not in _wire.SKIPPED_PROPS and isinstance(key, str):
            out[key] = val
    return out


def build_event(
    *,
    site_id: str | int,
    event_name: str,
    event_id: str,
    props: Mapping[str, Any] | None,
    user_data: dict[str, str],
    event_source_url: str | None,
    event_time: int | None = None,
) -> Event:
    now = time.time()
    event: Event = {
        "site_id": site_id,
        "event_id": event_id,
        "event_name": event_name,
        "event_time": int(now) if event_time is None else event_time,
        "action_source": "website",
        "user_data": user_data,
        "custom_data": custom_data(props),
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
