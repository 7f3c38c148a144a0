from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import json
import re
import uuid
from decimal import Decimal
from typing import Any

import pydantic
import pytest

from layersync_middleware import LayerSync, _event
from layersync_middleware._event import (
    MAX_DEPTH,
    MAX_EVENT_BYTES,
    Built,
    Dropped,
    build_checked,
    build_event,
    custom_data,
    looks_like_pii,
    map_props,
    new_event_id,
)
from layersync_middleware._pairing import PendingEvent


def test_event_ids_follow_the_browser_sdk() -> None:
    assert re.fullmatch(r"atc_[0-9a-f]{16}", new_event_id("add_to_cart"))
    assert re.fullmatch(r"pur_[0-9a-f]{16}", new_event_id("purchase"))
    assert re.fullmatch(r"evt_[0-9a-f]{16}", new_event_id("my_thing"))
    assert new_event_id("purchase") != new_event_id("purchase")


def test_props_map_to_custom_data_like_the_browser_sdk() -> None:
    props = {
        "order_id": "ORD-1",
        "value": 129.5,
        "currency": "USD",
        "search_term": "red widget",
        "items": [{"item_id": "SKU-A", "name": "Widget", "quantity": 2, "price": 79.5}, {"item_id": "SKU-B"}],
        "coupon": "X",
        "email": "ada@example.com",
        "phone": "1",
        "first_name": "A",
        "last_name": "B",
        "__proto__": 1,
        "constructor": 1,
        "prototype": 1,
        "item_id": "ignored-with-items",
    }
    assert custom_data(props) == {
        "value": 129.5,
        "currency": "USD",
        "order_id": "ORD-1",
        "search_string": "red widget",
        "contents": [
            {"id": "SKU-A", "quantity": 2, "item_price": 79.5},
            {"id": "SKU-B", "quantity": 1, "item_price": 0},
        ],
        "content_ids": ["SKU-A", "SKU-B"],
        "num_items": 2,
        "coupon": "X",
    }


def test_lone_item_id_and_decimal_money() -> None:
    assert custom_data({"item_id": "SKU-A", "value": Decimal("10.50")}) == {"content_ids": ["SKU-A"], "value": 10.5}


def test_non_numeric_value_is_not_sent_as_value() -> None:
    assert map_props({"value": "ten"}) == ({}, [Dropped("value", "not_a_number")])


def test_build_event_shape() -> None:
    event = build_event(
        site_id="site_1",
        event_name="purchase",
        event_id="pur_0123456789abcdef",
        props={"value": 1},
        user_data={"em": "x"},
        event_source_url="https://s/x",
    )
    assert set(event) == {
        "site_id",
        "event_id",
        "event_name",
        "event_time",
        "event_source_url",
        "action_source",
        "user_data",
        "custom_data",
        "client_meta",
    }
    assert event["client_meta"]["source"] == "server"
    assert event["client_meta"]["sdk"].startswith("layersync-middleware@")
    assert isinstance(event["event_time"], int)


def checked(**props: Any) -> Built:
    return build_checked(
        site_id="site_1",
        event_name="purchase",
        event_id="pur_0123456789abcdef",
        props=props,
        user_data={},
        event_source_url=None,
    )


def wire(built: Built) -> str:
    # Plain json, no default= and no NaN: what build_checked returns is JSON as it is.
    return json.dumps(built.event, allow_nan=False)


# -- 14.9 props a real app passes -----------------------------------------------------------------
@dataclasses.dataclass
class CartItem:
    item_id: str
    price: Decimal
    quantity: int = 1
    name: str = "Widget"


class OrderItem(pydantic.BaseModel):
    item_id: str
    price: Decimal
    quantity: int = 1


@dataclasses.dataclass
class Order:
    order_id: str
    value: Decimal
    currency: str
    items: list[CartItem]


class PydanticOrder(pydantic.BaseModel):
    order_id: str
    value: str
    currency: str


def test_items_as_dataclasses_and_pydantic_models() -> None:
    # pending.update(items=saved.items): was {"id": null, "quantity": 1, "item_price": 0}, silently
    built = checked(items=[CartItem("SKU-A", Decimal("79.50"), 2), OrderItem(item_id="SKU-B", price=Decimal("10"))])
    assert built.dropped == []
    assert built.event["custom_data"] == {
        "contents": [
            {"id": "SKU-A", "quantity": 2, "item_price": 79.5},
            {"id": "SKU-B", "quantity": 1, "item_price": 10.0},
        ],
        "content_ids": ["SKU-A", "SKU-B"],
        "num_items": 2,
    }
    wire(built)


@pytest.mark.parametrize(
    "props",
    [
        Order("O-1", Decimal("129.50"), "EUR", [CartItem("SKU-A", Decimal("129.50"))]),
        PydanticOrder(order_id="O-1", value="129.50", currency="EUR"),
        {"order_id": "O-1", "value": "129.50", "currency": "EUR"},
    ],
    ids=["dataclass", "pydantic", "mapping"],
)
def test_props_themselves_may_be_a_dataclass_or_a_model(props: object) -> None:
    data, dropped = map_props(props)
    assert dropped == []
    assert (data["order_id"], data["value"], data["currency"]) == ("O-1", 129.5, "EUR")


@pytest.mark.parametrize(
    ("value", "sent"),
    [
        ("10.50", 10.5),  # the example, dropped before
        (" 10.50 ", 10.5),
        ("10", 10.0),
        ("-3.5", -3.5),
        (Decimal("10.50"), 10.5),
        (Decimal("7.00"), 7.0),
        (12, 12),
        (12.25, 12.25),
    ],
)
def test_value_from_numbers_decimals_and_numeric_strings(value: object, sent: float) -> None:
    built = checked(value=value)
    assert built.event["custom_data"] == {"value": sent} and built.dropped == []


@pytest.mark.parametrize(
    "value", ["ten", "1,000.00", "$10", "1e3", "", "nan", float("nan"), float("inf"), Decimal("NaN"), True, [1]]
)
def test_a_value_that_is_not_a_number_is_dropped_and_reported(value: object) -> None:
    built = checked(value=value, order_id="O-1")
    assert built.event["custom_data"] == {"order_id": "O-1"}
    assert built.dropped == [Dropped("value", "not_a_number")]
    wire(built)


@pytest.mark.parametrize(
    ("item", "content", "dropped"),
    [
        ({"item_id": "A", "quantity": "2", "price": "79.50"}, {"id": "A", "quantity": 2, "item_price": 79.5}, []),
        ({"item_id": "A", "quantity": Decimal("3"), "price": 5}, {"id": "A", "quantity": 3, "item_price": 5}, []),
        ({"item_id": "A", "quantity": 2.0}, {"id": "A", "quantity": 2, "item_price": 0}, []),
        ({"item_id": 42}, {"id": "42", "quantity": 1, "item_price": 0}, []),
        (
            {"item_id": "A", "quantity": 2.5, "price": "free"},
            {"id": "A", "quantity": 1, "item_price": 0},
            [Dropped("items[0].quantity", "not_a_number"), Dropped("items[0].price", "not_a_number")],
        ),
        ({"price": 5}, {"quantity": 1, "item_price": 5}, [Dropped("items[0].item_id", "no_item_id")]),
        ({"item_id": ["A"]}, {"quantity": 1, "item_price": 0}, [Dropped("items[0].item_id", "not_a_string")]),
    ],
)
def test_item_fields(item: dict[str, Any], content: dict[str, Any], dropped: list[Dropped]) -> None:
    built = checked(items=[item])
    assert built.event["custom_data"]["contents"] == [content]
    assert built.dropped == dropped
    wire(built)


@pytest.mark.parametrize("item", ["SKU-A", 7, object(), None])
def test_an_item_that_is_not_a_mapping_is_dropped_not_sent_empty(item: object) -> None:
    built = checked(items=[item, {"item_id": "B"}])
    assert built.event["custom_data"]["contents"] == [{"id": "B", "quantity": 1, "item_price": 0}]
    assert built.event["custom_data"]["num_items"] == 1
    assert built.dropped == [Dropped("items[0]", "unsupported_type")]


@pytest.mark.parametrize(
    ("props", "reason"),
    [
        ({"currency": 978}, "not_a_string"),
        ({"order_id": 1.5}, "not_a_string"),
        ({"search_term": ["a"]}, "not_a_string"),
        ({"item_id": {"x": 1}}, "not_a_string"),
        ({"items": "SKU-A"}, "unsupported_type"),
    ],
)
def test_mapped_props_of_the_wrong_type_are_reported(props: dict[str, Any], reason: str) -> None:
    [key] = props
    assert map_props(props) == ({}, [Dropped(key, reason)])


class Colour(enum.Enum):
    RED = "red"


class Size(str, enum.Enum):
    L = "large"


def test_passthrough_values_become_json() -> None:
    when = dt.datetime(2026, 1, 2, 3, 4, 5)
    ident = uuid.UUID(int=1)
    built = checked(
        order_id=uuid.UUID(int=7),
        coupon=None,
        discount=Decimal("1.25"),
        at=when,
        day=when.date(),
        ref=ident,
        colour=Colour.RED,
        size=Size.L,
        tags=("a", "b"),
        flags=frozenset({"x"}),
        extra={"line": CartItem("SKU-A", Decimal("1"))},
        model=OrderItem(item_id="B", price=Decimal("2")),
        counts={1: "one"},
    )
    assert built.dropped == []
    data = json.loads(wire(built))["custom_data"]
    assert data == {
        "order_id": str(uuid.UUID(int=7)),
        "coupon": None,
        "discount": 1.25,
        "at": "2026-01-02T03:04:05",
        "day": "2026-01-02",
        "ref": str(ident),
        "colour": "red",
        "size": "large",
        "tags": ["a", "b"],
        "flags": ["x"],
        "extra": {"line": {"item_id": "SKU-A", "price": 1.0, "quantity": 1, "name": "Widget"}},
        "model": {"item_id": "B", "price": 2.0, "quantity": 1},
        "counts": {"1": "one"},
    }


class BrokenModel:
    def model_dump(self) -> dict[str, Any]:
        raise RuntimeError("the app's bug")


@pytest.mark.parametrize(
    ("props", "dropped"),
    [
        ({"x": object()}, [Dropped("x", "unsupported_type")]),
        ({"x": BrokenModel()}, [Dropped("x", "unsupported_type")]),
        ({"x": {"y": [1, float("nan")]}}, [Dropped("x.y[1]", "not_a_number")]),
        ({"x": Decimal("Infinity")}, [Dropped("x", "not_a_number")]),
        ({("a", "b"): 1}, [Dropped("<tuple>", "bad_key")]),
        (
            {"__proto__": 1, "constructor": 2, "prototype": 3},
            [Dropped(k, "reserved") for k in ("__proto__", "constructor", "prototype")],
        ),
        ({"x": CartItem}, [Dropped("x", "unsupported_type")]),  # a class is not an instance
    ],
)
def test_what_json_cannot_carry_is_dropped_and_reported_not_the_whole_event(
    props: dict[Any, Any], dropped: list[Dropped]
) -> None:
    built = checked(order_id="O-1", extra=props)
    assert built.dropped == [d._replace(path="extra." + d.path) for d in dropped]
    assert built.event["custom_data"]["order_id"] == "O-1"
    wire(built)


def test_the_event_does_not_alias_the_apps_props() -> None:
    nested = {"k": [1, 2]}
    built = checked(extra=nested)
    nested["k"].append(3)
    assert built.event["custom_data"]["extra"] == {"k": [1, 2]}


# -- 10.7 raw PII under other prop keys -----------------------------------------------------------
def test_identity_fields_in_props_are_dropped_at_any_depth() -> None:
    # The adversarial review's f15 repro: all of these reached the wire unhashed.
    built = checked(
        order_id="O1",
        value=1,
        email="ada@example.com",
        Email="Ada@Example.COM",
        customer={"email": "ada@example.com", "address": "221B Baker", "tier": "gold"},
        shipping_zip="SW1A 1AA",
        **{"billing.phone": "+1 650 555 1212"},
        guests=[{"firstName": "Ada", "seat": 1}, {"DOB": "1815-12-10", "seat": 2}],
        contact=OrderItem(item_id="x", price=Decimal("1")),
        email_opt_in=True,
        name="Widget",
    )
    assert built.event["custom_data"] == {
        "order_id": "O1",
        "value": 1,
        "customer": {"tier": "gold"},
        "guests": [{"seat": 1}, {"seat": 2}],
        "contact": {"item_id": "x", "price": 1.0, "quantity": 1},
        "email_opt_in": True,
        "name": "Widget",
    }
    assert built.dropped == [
        Dropped(path, "pii_prop")
        for path in (
            "email",
            "Email",
            "customer.email",
            "customer.address",
            "shipping_zip",
            "billing.phone",
            "guests[0].firstName",
            "guests[1].DOB",
        )
    ]
    text = wire(built) + repr(built.dropped)
    for raw in ("ada@example.com", "Ada@Example.COM", "221B Baker", "SW1A 1AA", "555 1212", "Ada", "1815-12-10"):
        assert raw not in text


def test_a_whole_identity_subtree_is_dropped_once() -> None:
    built = checked(address={"line1": "221B Baker Street", "city": "London"})
    assert built.event["custom_data"] == {}
    assert built.dropped == [Dropped("address", "pii_prop")]


def test_reported_paths_are_bounded_and_printable() -> None:
    built = checked(extra={"x\n" + "y" * 200 + "_email": "ada@example.com"})
    [drop] = built.dropped
    assert drop.reason == "pii_prop" and drop.path.isprintable() and len(drop.path) < 60


# -- issue 22.13: PII inside neutral values, whatever the key --------------------------------------
PII_VALUES = [
    "ada@example.com",
    "a@b.co",
    "mail me at Ada.Lovelace+shop@mail.example.co.uk, thanks",
    "+1 650 555 1212",
    "+4915123456789",
    "+44 (0)20 7946 0958",
    "(650) 555-1212",
    "650-555-1212",
    "650.555.1212",
    "020 7946 0958",
    "06 12 34 56 78",
]
NOT_PII_VALUES = [
    "ORD-2026-0001",
    "SKU-123-456",
    "12345678901",  # a numeric id
    "4111111111111111",
    "2026-12-03",
    "2026-12-03T10:25:00Z",
    "03-12-2026",
    "19.99",
    "+10.50",
    "1 234 567.89",
    "12 345 678.90",
    "192.168.100.200",
    "pur_0123456789abcdef",
    "@ada_lovelace",
    "root@localhost",
    "50% off @ checkout",
    "red widget, size 42",
]


@pytest.mark.parametrize("value", PII_VALUES)
def test_an_email_or_phone_number_in_any_prop_value_is_dropped_and_counted(value: str) -> None:
    built = checked(order_id="O-1", note=value, extra={"lines": ["ok", value]}, search_term=value)
    assert built.event["custom_data"] == {"order_id": "O-1", "extra": {"lines": ["ok"]}}
    assert built.dropped == [Dropped(p, "pii_prop") for p in ("search_term", "note", "extra.lines[1]")]
    assert value not in wire(built) + repr(built.dropped)


@pytest.mark.parametrize("value", NOT_PII_VALUES)
def test_ids_skus_prices_dates_and_numbers_are_not_taken_for_pii(value: str) -> None:
    built = checked(order_id=value, note=value, extra=[value], search_term=value)
    assert not looks_like_pii(value)
    assert built.dropped == []
    assert built.event["custom_data"] == {"order_id": value, "search_string": value, "note": value, "extra": [value]}


def test_the_client_counts_pii_values_as_pii_prop(sync_client: LayerSync) -> None:
    props = {"note": "write to ada@example.com", "mobile_alt": "+33 6 12 34 56 78", "plan": "pro"}
    assert sync_client.track("lead", props) is not None
    assert sync_client.stats().dropped == {"pii_prop": 2}


# -- issue 22.10: an event over the wire's limit is refused at track() -----------------------------
def test_an_event_over_the_wire_limit_is_refused_when_tracked_with_the_reason(
    hub_client: LayerSync, caplog: pytest.LogCaptureFixture
) -> None:
    fits = {"blob": "x" * (MAX_EVENT_BYTES - 2000)}
    assert (built := checked(**fits)).too_large is None and len(wire(built)) < MAX_EVENT_BYTES
    assert checked(blob="x" * MAX_EVENT_BYTES).too_large is not None
    # JSON escapes make a string bigger than its length: the check counts bytes, not characters.
    assert checked(blob="\x01" * (MAX_EVENT_BYTES // 5)).too_large is not None
    huge = [hub_client.track("purchase", {"blob": "x" * 8_000_000}) for _ in range(3)]
    many = hub_client.track("purchase", {"lines": ["y" * 900] * 999})
    kept = hub_client.track("purchase", fits)
    assert huge == [None, None, None] and many is None and kept is not None
    paired = PendingEvent("pur_0123456789abcdef", "purchase")  # a handler's props on a paired event
    paired.update({"blob": "z" * 200_000})
    hub_client._track_paired(paired, {"type": "http", "path": "/api/orders", "headers": [(b"host", b"s.example")]})
    assert hub_client.flush(5) == 0
    assert hub_client.stats().dropped == {"too_large": 5}  # refused before the queue sent (or spooled) it
    assert hub_client.stats().sent == 1
    assert "refused a purchase event of at least" in caplog.text and "the hub takes at most" in caplog.text


# -- bounds: a huge or deep structure is cut, never walked to the end ----------------------------
def test_nesting_deeper_than_the_cap_is_dropped() -> None:
    deep: dict[str, Any] = {"leaf": 1}
    for _ in range(50):
        deep = {"d": deep}
    built = checked(deep=deep)
    [drop] = built.dropped
    assert drop == Dropped("deep" + ".d" * MAX_DEPTH, "too_deep")
    wire(built)


def test_a_self_referencing_prop_ends() -> None:
    loop: list[Any] = [1]
    loop.append(loop)
    built = checked(loop=loop)
    assert [d.reason for d in built.dropped] == ["too_deep"]


@pytest.mark.parametrize(
    "props",
    [
        {"big": list(range(200_000))},
        {"big": {f"k{i}": i for i in range(200_000)}},
        {f"k{i}": i for i in range(200_000)},
        {"items": [{"item_id": str(i)} for i in range(200_000)]},
    ],
    ids=["list", "dict", "top-level", "items"],
)
def test_a_huge_prop_is_cut_with_one_report(props: dict[str, Any]) -> None:
    data, dropped = map_props(props)
    assert [d.reason for d in dropped] == ["too_large"]
    assert len(json.dumps(data)) < 100_000  # wire.md: a batch is at most 100 KiB


# -- the API the client wires ----------------------------------------------------------------------
def test_build_event_is_build_checked_without_the_report() -> None:
    kwargs: dict[str, Any] = {
        "site_id": "s",
        "event_name": "purchase",
        "event_id": "pur_0123456789abcdef",
        "props": {"value": "1.5", "email": "a@b.co"},
        "user_data": {},
        "event_source_url": None,
        "event_time": 5,
    }
    built = build_checked(**kwargs)
    event = build_event(**kwargs)
    assert isinstance(built, Built) and built.dropped == [Dropped("email", "pii_prop")]
    assert event["custom_data"] == built.event["custom_data"] == {"value": 1.5}
    assert custom_data(kwargs["props"]) == {"value": 1.5}


# -- encoding -----------------------------------------------------------------------------------
@pytest.mark.parametrize("encode", _event._encoders, ids=lambda f: f.__name__)
def test_encoding_handles_python_values(encode: Any) -> None:
    body = encode({"v": Decimal("1.5"), "t": dt.datetime(2026, 1, 1), "s": {1}, "u": "café"})
    assert json.loads(body) == {"v": 1.5, "t": "2026-01-01T00:00:00", "s": [1], "u": "café"}
    assert b" " not in body and "café".encode() in body  # compact UTF-8, as the browser sends
    with pytest.raises(TypeError):
        encode({"x": object()})


def test_orjson_is_used_when_installed_and_json_refuses_nan() -> None:
    assert [f.__name__ for f in _event._encoders] == ["_encode_orjson", "_encode_stdlib"]
    assert _event.encode_event is _event._encoders[0]
    with pytest.raises(ValueError):
        _event._encode_stdlib({"x": float("nan")})


def test_props_that_are_not_a_mapping_are_dropped_whole_and_said_so() -> None:
    assert _event.map_props_sized(["SKU-A", "SKU-B"]) == ({}, [Dropped("*", "unsupported_type")], 0)
    assert _event.map_props_sized(None) == ({}, [], 0)
