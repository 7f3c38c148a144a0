from __future__ import annotations

import random
import re
import time
from pathlib import Path

import pytest
from strategies import sdk_name_for

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
    _wire.DEFAULT_RULES._name_for(url[: _wire.MAX_URL])  # the longest URL still classified
    assert time.perf_counter() - start < 0.5
    assert _wire.browser_event_name_for(url) is None  # longer than MAX_URL: never classified


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


# The probe's 16 representative URLs of the SDK's 15 default rules (issue 20), and the
# extra shapes it tried, with the name the real SDK stamped on each in Chromium.
SDK_TABLE = [
    ("/cart/add", "add_to_cart"),  # C1
    ("/cart/items", "add_to_cart"),  # C2
    ("/add-to-cart", "add_to_cart"),  # C3
    ("/addtocart", "add_to_cart"),  # C4
    ("/api/cart", "add_to_cart"),  # C5
    ("/?wc-ajax=add_to_cart", "add_to_cart"),  # C6: the query alone
    ("/carts/12/items", "add_to_cart"),  # C7
    ("/orders", "purchase"),  # O1
    ("/order/create", "purchase"),  # O1
    ("/place-order", "purchase"),  # O2
    ("/checkout/complete", "purchase"),  # O3
    ("/api/orders", "purchase"),  # O4
    ("/?wc-ajax=checkout", "purchase"),  # O5
    ("/checkout/start", "begin_checkout"),  # K1
    ("/api/checkout", "begin_checkout"),  # K2
    ("/create-checkout", "begin_checkout"),  # K3
    ("/api/cart/add", "add_to_cart"),  # X0
    ("/cart/add.js", "add_to_cart"),  # X1: Shopify
    ("/api/com/addToCart", "add_to_cart"),  # X2: case-insensitive
    ("/shop/cart/add", "add_to_cart"),  # X3
    ("/api/checkout/complete", "purchase"),  # X4: O3 beats K2
    ("/api/checkout/start", "begin_checkout"),  # X5
    ("/cart/add?next=/orders", "purchase"),  # the order rule reads the query
    ("/api/v1/cart", None),  # C5 needs cart right after /api/
    ("/api/v1/events/cart/add", None),  # the SDK never stamps its own ingest
    ("/products/1", None),
]


@pytest.mark.parametrize(("url", "name"), SDK_TABLE)
def test_the_default_rules_name_each_url_as_the_sdk_stamped_it(url: str, name: str | None) -> None:
    assert _wire.browser_event_name_for(url) == name
    assert _wire.browser_event_name_for(url.upper()) == name  # the SDK's rules are /i


def test_one_alternation_per_group_answers_as_the_rules_one_by_one() -> None:
    rng = random.Random(20)
    words = "/cart /carts /add /items /orders /order /checkout /api/ /complete /start ? wc-ajax= checkout".split()
    words += ["add_to_cart", "-", "_", "to", "s", "x", "/", "place", ".js"]
    for _ in range(5000):
        url = "".join(rng.choice(words) for _ in range(rng.randint(1, 8)))
        assert _wire.DEFAULT_RULES._name_for(url) == sdk_name_for(url), url


def test_the_apps_own_endpoints_join_their_group_as_in_the_sdk() -> None:
    rules = _wire.EndpointRules(cart=[r"/api/v1/basket"], order=[re.compile(r"/cart/add")], checkout=["/pay/begin"])
    assert rules.name_for("/api/v1/BASKET") == "add_to_cart"  # matched case-insensitively
    assert rules.name_for("/cart/add") == "purchase"  # order endpoints are checked first
    assert rules.name_for("/Cart/add") == "add_to_cart"  # a compiled regex keeps its own flags
    assert rules.name_for("/pay/begin") == "begin_checkout"
    assert ("/api/v1/basket", "add_to_cart") in rules.describe()
    with pytest.raises(ValueError, match="not a valid regular expression"):
        _wire.EndpointRules(cart=["/cart/("])


def test_the_answer_cache_stays_bounded() -> None:
    rules = _wire.EndpointRules()
    for n in range(5000):
        rules.name_for(f"/cart/{n}")
    assert len(rules._cache) <= 1024
    assert rules.name_for("/x" * 1000) is None and len(rules._cache) <= 1024  # long URLs are not kept


def test_the_readmes_table_of_sdk_rules_is_the_code() -> None:
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    table = readme.split("### What the browser SDK stamps", 1)[1].split("\n\n", 3)[2]
    rows = [[c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", line)[1:-1]] for line in table.splitlines()]
    listed = []
    for urls, regex, name in rows[2:]:
        for url in re.findall(r"`([^`]+)`", urls):
            assert _wire.browser_event_name_for(url) == name.strip("`"), url
        listed.append((regex.strip("`").replace("$", "\\Z"), name.strip("`")))
    assert listed == _wire.DEFAULT_RULES.describe()
