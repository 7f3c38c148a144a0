from __future__ import annotations

import pytest

from layersync_middleware import Matcher

# The README's table: pattern, path, matches?
TABLE = [
    ("/api/cart/*", "/api/cart/add", True),
    ("/api/cart/*", "/api/cart/add/", True),
    ("/api/cart/*", "/api/cart", False),
    ("/api/cart/*", "/api/cart/a/b", False),
    ("/api/cart/**", "/api/cart", True),
    ("/api/cart/**", "/api/cart/a/b/c", True),
    ("/api/cart/**", "/api/carts", False),
    ("/api/cart/:path*", "/api/cart", True),
    ("/api/cart/:path*", "/api/cart/a/b", True),
    ("/api/cart/:path+", "/api/cart", False),
    ("/api/cart/:path+", "/api/cart/a", True),
    ("/api/cart/:id", "/api/cart/42", True),
    ("/api/cart/:id", "/api/cart/42/x", False),
    ("/api/cart/:id?", "/api/cart", True),
    ("/api/*cart*", "/api/addtocart", True),
    ("/api/orders", "/api/orders", True),
    ("/api/orders", "/api/ORDERS", False),
    ("/api/orders", "/api/orders/1", False),
    ("/", "/", True),
    ("/", "/x", False),
]


@pytest.mark.parametrize(("pattern", "path", "expected"), TABLE)
def test_pattern_table(pattern: str, path: str, expected: bool) -> None:
    assert (Matcher([pattern]).match(path) is not None) is expected


def test_one_regex_reports_which_rule_matched() -> None:
    m = Matcher({"/api/cart/*": ["add_to_cart"], "/api/orders/**": None})
    rule = m.match("/api/orders/1")
    assert rule is not None and rule.pattern == "/api/orders/**" and rule.names is None
    rule = m.match("/api/cart/add")
    assert rule is not None and rule.names == frozenset({"add_to_cart"})
    assert m.match("/elsewhere") is None


@pytest.mark.parametrize(
    "bad",
    ["api/cart", "/api//cart", "/api/(.*)", "/api/ca?t", "/a/***", "/api/x y"],
)
def test_malformed_patterns_are_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="pattern"):
        Matcher([bad])


def test_names_must_be_snake_case() -> None:
    with pytest.raises(ValueError, match="snake_case"):
        Matcher({"/api/cart/*": ["AddToCart"]})
    with pytest.raises(ValueError, match="at least one"):
        Matcher({"/api/cart/*": []})


def test_default_names_follow_the_browser_sdk() -> None:
    rule = Matcher(["/api/**"]).match("/api/cart/add")
    assert rule is not None
    assert rule.allows("add_to_cart", "/api/cart/add")
    assert not rule.allows("purchase", "/api/cart/add")  # forged name on a cart route
    assert rule.allows("purchase", "/api/orders")
    assert not rule.allows("add_to_cart", "/api/users")  # the browser never stamps this URL


def test_star_allows_any_name() -> None:
    rule = Matcher({"/hooks/*": "*"}).match("/hooks/x")
    assert rule is not None and rule.allows("lead", "/hooks/x")


def test_equality_and_repr() -> None:
    assert Matcher(["/a/*"]) == Matcher(["/a/*"])
    assert hash(Matcher(["/a/*"])) == hash(Matcher(["/a/*"]))
    assert "purchase" in repr(Matcher({"/o": ["purchase"]}))
    assert not Matcher([])
