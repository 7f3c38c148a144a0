from __future__ import annotations

import pytest

from layersync_middleware import _wire


@pytest.mark.parametrize(
    ("url", "name"),
    [
        ("/api/cart/add", "add_to_cart"),
        ("/cart/add", "add_to_cart"),
        ("/api/com/addToCart", "add_to_cart"),
        ("/carts/12/items", "add_to_cart"),
        ("/api/orders", "purchase"),
        ("/orders/create", "purchase"),
        ("/checkout/complete", "purchase"),
        ("/place-order", "purchase"),
        ("/api/checkout/start", "begin_checkout"),
        ("/checkout/init", "begin_checkout"),
        ("/create-checkout", "begin_checkout"),
        ("/products/a", None),
        ("/api/users", None),
    ],
)
def test_browser_event_name_for_matches_the_browser_sdk(url: str, name: str | None) -> None:
    assert _wire.browser_event_name_for(url) == name


def test_order_beats_cart_as_in_the_browser_sdk() -> None:
    # "/api/cart-order" matches both tables; the SDK checks orders first.
    assert _wire.browser_event_name_for("/api/cart-order") == "purchase"


def test_prefixes_and_policy() -> None:
    assert _wire.event_id_prefix("add_to_cart") == "atc"
    assert _wire.event_id_prefix("my_custom") == "evt"
    assert _wire.retry_policy("purchase") == (7 * 86400, 20)
    assert _wire.retry_policy("whatever") == (12 * 3600, 5)
    assert _wire.priority("purchase") > _wire.priority("add_to_cart") > _wire.priority("page_view")
