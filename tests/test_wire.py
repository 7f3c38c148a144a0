from __future__ import annotations

import time

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


@pytest.mark.parametrize(
    "url",
    [
        "/cart" * 20_000,  # 100 KB: 0.75 s per 40 KB with the SDK's `/carts?\b.*/items?\b` as one regex
        "/carts" * 20_000 + "/item",
        "/api/" + "order" * 20_000,
        "/api/" * 20_000,
        "/orders" * 15_000,
    ],
    ids=lambda u: f"{u[:12]}...{len(u)}",
)
def test_classifying_a_hostile_url_takes_bounded_time(url: str) -> None:
    start = time.perf_counter()
    _wire.browser_event_name_for(url)
    assert time.perf_counter() - start < 0.5


@pytest.mark.parametrize(
    ("path", "name"),
    [
        ("/cart/12/x/items", "add_to_cart"),  # items anywhere after the cart segment
        ("/items/1/cart", None),  # not in that order
        ("/cart/x\n/items", "add_to_cart"),  # the browser's URL has %0A there: no line to end
        ("/orders\n", None),  # JS `$` is the end of the URL, not a line
        ("/cart/addé", "add_to_cart"),  # JS `\b` is ASCII: the browser sees /cart/add%C3%A9
    ],
)
def test_browser_rules_read_like_the_browser_sdk(path: str, name: str | None) -> None:
    assert _wire.browser_event_name_for(path) == name


def test_one_event_name_rule_for_headers_and_matchers() -> None:
    assert _wire.EVENT_NAME_HEADER_RE.fullmatch("add_to_cart")
    assert _wire.EVENT_NAME_HEADER_RE.fullmatch("a" * 64)
    for bad in ("a" * 65, "AddToCart", "1st", "add-to-cart", ""):
        assert not _wire.EVENT_NAME_HEADER_RE.fullmatch(bad)
