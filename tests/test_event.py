from __future__ import annotations

import re
from decimal import Decimal

from layersync_middleware._event import build_event, custom_data, new_event_id


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
    assert "value" not in custom_data({"value": "10"})


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
