"""The platform rules against their documented formats: the browser SDK's event-name
tables, Meta's match-key rules and de-duplication windows, and the three payloads."""

from __future__ import annotations

import json
import os
import re
import shlex
from pathlib import Path
from typing import Any

import pytest

from layersync_middleware.hub import platforms as p
from layersync_middleware.hub.platforms import Side

HASH = "7f83b1657ff1fc53b92dc18148a1d65dfc2d4b1fa3d677284addd200126d9069"
SDK = Path(__file__).parents[1] / "e2e" / "node_modules" / "@alaasync" / "layersync-web" / "dist" / "index.js"


def sdk_table(source: str, var: str) -> dict[str, str]:
    m = re.search(r"var " + var + r" = \{(.*?)\};", source, re.S)
    assert m is not None, var
    return dict(re.findall(r'(\w+): "(\w+)"', m.group(1)))


def test_event_names_are_the_browser_sdks_tables() -> None:
    if not SDK.is_file():  # as tests/e2e/conftest.py: a failure in CI, a skip elsewhere
        if os.environ.get("CI"):
            pytest.fail(f"the browser SDK is not installed ({SDK})")
        pytest.skip("the browser SDK is not installed: npm ci --prefix tests/e2e")
    source = SDK.read_text()
    assert "src/pixels/tiktok.ts" in source and "src/pixels/meta.ts" in source
    assert sdk_table(source, "EVENT_MAP") == p.TIKTOK_EVENTS
    assert sdk_table(source, "EVENT_MAP2") == p.META_EVENTS
    assert sdk_table(source, "EVENT_MAP7") == p.GOOGLE_EVENTS


def test_known_names() -> None:
    assert p.META_EVENTS["purchase"] == "Purchase" and p.TIKTOK_EVENTS["purchase"] == "CompletePayment"
    assert p.GOOGLE_EVENTS["lead"] == "generate_lead" and "page_view" not in p.TIKTOK_EVENTS


@pytest.mark.parametrize(
    ("key", "value", "status", "note"),
    [
        ("em", HASH, "present", "SHA-256"),
        ("em", HASH.upper(), "invalid", "lowercase"),
        ("em", "ada@example.com", "invalid", "must be hashed"),
        ("ph", "16505551212", "invalid", "must be hashed"),
        ("external_id", "user_1", "present", "recommends hashing"),
        ("fbp", "fb.1.1795665695826.1234567890", "present", "fb.<index>"),
        ("fbp", "fb.1.1795665695826.abc", "invalid", "random number"),
        ("fbp", "1234567890", "invalid", "not in the fb."),
        ("fbp", HASH, "invalid", "Meta wants it raw"),
        ("fbc", "fb.1.1795665695826.IwAR2xYz", "present", "fb.<index>"),
        ("fbc", "fb.1.1795665695826.IwAR2xYz.AbCd", "present", "fb.<index>"),  # Parameter Builder's appendix
        ("fbc", "fb.1.179566569.IwAR2xYz", "invalid", "creation ms"),  # seconds, not ms
        ("client_ip_address", "2a03:2880::1", "present", "IPv6"),
        ("client_ip_address", "8.8.8.8", "present", "prefers IPv6"),
        ("client_ip_address", "203.0.113.9", "present", "documentation"),
        ("client_ip_address", "127.0.0.1", "invalid", "not the shopper's"),
        ("client_ip_address", "10.0.0.7", "invalid", "not the shopper's"),
        ("client_ip_address", HASH, "invalid", "hashed"),
        ("client_user_agent", "Mozilla/5.0", "present", "raw"),
        ("client_user_agent", HASH, "invalid", "raw"),
        ("country", None, "absent", ""),
        ("ge", 1, "invalid", "not a string"),
    ],
)
def test_check_key_follows_metas_parameter_rules(key: str, value: object, status: str, note: str) -> None:
    got, why = p.check_key(key, value)
    assert got == status and note in why


def test_tiers_are_metas_published_ones() -> None:
    tiers = {t: sorted(k for k, r in p.KEY_RULES.items() if r.tier == t) for t in ("high", "medium", "low")}
    assert tiers == {
        "high": ["em", "fbc"],
        "medium": ["country", "db", "external_id", "fbp", "ph"],
        "low": ["ct", "fn", "ln", "zp"],
    }


def sides(*specs: tuple[str, str, float], instances: int = 1, count: int = 1) -> list[Side]:
    return [Side(src, name, count, instances, at, at) for src, name, at in specs]


@pytest.mark.parametrize(
    ("specs", "verdict", "words"),
    [
        ([("browser", "purchase", 0), ("server", "purchase", 299)], "paired", "within 5 minutes"),
        ([("browser", "purchase", 10), ("server", "purchase", 0)], "paired", "before the browser"),
        ([("browser", "purchase", 0), ("server", "purchase", 301)], "late_pair", "more than 5 minutes"),
        ([("browser", "purchase", 0), ("server", "purchase", 48 * 3600 + 1)], "late_pair", "more than 48 h"),
        ([("browser", "Purchase", 0), ("server", "purchase", 1)], "name_mismatch", "only by case"),
        ([("browser", "lead", 0), ("server", "sign_up", 1)], "name_mismatch", "in spelling"),
        ([("browser", "a", 0), ("server", "b", 0), ("server", "c", 0)], "id_reused", "3 event names"),
        ([("browser", "a", 0), ("server", "a", 0), ("server", "b", 0)], "id_reused", "2 event names"),
        ([("browser", "page_view", 0), ("browser", "purchase", 0)], "id_reused", "2 event names"),
        ([("browser", "view_item", 0)], "browser_only", "no server event"),
        ([("server", "purchase", 0)], "server_only", "no browser event"),
    ],
)
def test_decide(specs: list[tuple[str, str, float]], verdict: str, words: str) -> None:
    decision = p.decide(sides(*specs))
    assert decision.verdict == verdict and words in decision.rule


def test_a_resend_is_not_a_reuse_but_another_instance_is() -> None:
    resend = p.decide(sides(("browser", "purchase", 0), ("server", "purchase", 1), count=2, instances=1))
    assert resend.verdict == "paired"
    reused = p.decide(sides(("browser", "purchase", 0), count=2, instances=2))
    assert reused.verdict == "id_reused" and "Many Event Instances" in reused.meta


@pytest.mark.parametrize(
    ("browser", "server", "meta"),
    [
        ("Purchase", "purchase", "fires no Meta pixel event for 'Purchase'"),
        ("sign_up", "complete_registration", "both map to 'CompleteRegistration'"),
        ("lead", "contact", "'Lead' and 'Contact' do not match, both are counted"),
    ],
)
def test_a_name_mismatch_says_what_the_mapped_names_do(browser: str, server: str, meta: str) -> None:
    decision = p.decide(sides(("browser", browser, 0), ("server", server, 1)))
    assert decision.verdict == "name_mismatch" and meta in decision.meta


def test_late_pair_says_what_each_platform_does() -> None:
    late = p.decide(sides(("browser", "purchase", 0), ("server", "purchase", 400)))
    assert "no browser preference" in late.meta and "does not merge" in late.tiktok and late.gap_s == 400


@pytest.mark.parametrize(
    ("event_time", "flag"),
    [
        (1_796_000_000_000, "milliseconds"),
        (1_796_000_000 - 8 * 86400, "more than 7 days old"),
        (1_796_000_000 + 3600, "in the future"),
        ("1796000000", "not an integer"),
    ],
)
def test_event_time_flags(event_time: object, flag: str) -> None:
    assert flag in " ".join(p.event_time_flags(event_time, 1_796_000_000))
    assert p.event_time_flags(1_796_000_000 - 5, 1_796_000_000) == []


def body(name: str = "purchase", **user_data: Any) -> dict[str, Any]:
    return {
        "site_id": "s",
        "event_id": "pur_0123456789abcdef",
        "event_name": name,
        "event_time": 1_796_000_000,
        "action_source": "website",
        "event_source_url": "https://shop.example/thanks",
        "user_data": user_data,
        "custom_data": {
            "value": 12.5,
            "currency": "usd",
            "order_id": "O-1",
            "contents": [{"id": "SKU-A", "quantity": 2, "item_price": 6.25}],
            "content_ids": ["SKU-A"],
        },
    }


def test_meta_entry() -> None:
    entry = p.meta_entry(body(em=HASH, user_agent="UA/1", fbp="fb.1.1795665695826.1", client_ip_address="8.8.8.8"))
    assert entry["event_name"] == "Purchase" and entry["action_source"] == "website"
    assert entry["user_data"] == {
        "em": [HASH],  # hashed keys as arrays
        "fbp": "fb.1.1795665695826.1",
        "client_ip_address": "8.8.8.8",
        "client_user_agent": "UA/1",  # the wire's user_agent, under Meta's name
    }
    assert entry["custom_data"]["content_type"] == "product" and entry["custom_data"]["value"] == 12.5


def test_meta_entry_takes_a_browser_events_ip_from_its_request() -> None:
    assert p.meta_entry(body(), peer="2a03:2880::1")["user_data"]["client_ip_address"] == "2a03:2880::1"


def test_tiktok_event() -> None:
    event = p.tiktok_event(body(em=HASH, ttclid="E.C.P.x", client_ip_address="8.8.8.8", user_agent="UA/1"))
    assert event["event"] == "CompletePayment" and event["event_id"] == "pur_0123456789abcdef"
    assert event["user"] == {"email": HASH, "ttclid": "E.C.P.x", "ip": "8.8.8.8", "user_agent": "UA/1"}
    props = event["properties"]
    assert props["contents"] == [{"content_id": "SKU-A", "quantity": 2, "price": 6.25}]
    assert props["content_type"] == "product" and props["order_id"] == "O-1"
    assert event["page"] == {"url": "https://shop.example/thanks"}


def test_google_click_conversion() -> None:
    conversion = p.google_click_conversion(body(em=HASH, ph=HASH, gclid="Cj0KCQ"))
    assert conversion["conversionDateTime"] == "2026-11-30 00:53:20+00:00"
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d[+-]\d\d:\d\d", conversion["conversionDateTime"])
    assert conversion["gclid"] == "Cj0KCQ" and conversion["currencyCode"] == "USD" and conversion["orderId"] == "O-1"
    assert conversion["userIdentifiers"] == [{"hashedEmail": HASH}, {"hashedPhoneNumber": HASH}]


def test_previews_are_redacted_by_default_and_curl_is_one_shell_command() -> None:
    event = body(em=HASH, user_agent="Mozilla/5.0 (X11)", client_ip_address="8.8.8.8")
    shown = p.previews(event)
    for platform in ("meta", "tiktok", "google"):
        assert HASH not in json.dumps(shown[platform]["body"]) and HASH not in shown[platform]["curl"]
        words = shlex.split(shown[platform]["curl"].replace("\\\n", " "))
        assert words[:3] == ["curl", "-X", "POST"] and json.loads(words[-1]) == shown[platform]["body"]
    assert "${META_ACCESS_TOKEN}" in shown["meta"]["curl"] and "${TIKTOK_ACCESS_TOKEN}" in shown["tiktok"]["curl"]
    assert shown["meta"]["body"]["data"][0]["user_data"]["em"] == [HASH[:6] + "…"]
    assert HASH in json.dumps(p.previews(event, reveal=True)["meta"]["body"])
    assert "no gclid" in shown["google"]["note"]


def test_previews_say_when_the_sdk_fires_no_event() -> None:
    note = p.previews(body("page_view"))["tiktok"]["note"]
    assert "fires no TikTok event for 'page_view'" in note


def test_diff_marks_each_fields_origin() -> None:
    browser = body(fbp="fb.1.1795665695826.1", user_agent="UA/1")
    server = body(fbp="fb.1.1795665695826.2", user_agent="UA/1", em=HASH, client_ip_address="8.8.8.8")
    rows = {r["field"]: r for r in p.diff(browser, server, browser_peer="8.8.4.4")}
    assert rows["user_data.fbp"]["state"] == "differs" and rows["user_data.fbp"]["browser_origin"] == "cookie _fbp"
    assert rows["user_data.em"]["state"] == "server only"
    assert rows["user_data.em"]["server_origin"] == "app code identity, hashed by the package"
    assert rows["user_data.client_ip_address"]["browser"] == "8.8.4.4"
    assert rows["user_data.user_agent"]["server_origin"] == "request header User-Agent"
    assert rows["event_id"]["server_origin"] == "pairing header from the browser"
    assert rows["custom_data.value"]["browser_origin"] == "browser SDK track() props"
    assert p.origin("server", "user_data.fbc") == "cookie _fbc or URL ?fbclid"
    assert p.origin("server", "event_id", paired=False) == "app code"


def test_match_keys_compare_both_sides_and_score_locally() -> None:
    browser = body(fbp="fb.1.1795665695826.1", user_agent="UA/1")
    server = body(fbp="fb.1.1795665695826.1", user_agent="UA/1", em=HASH, client_ip_address="8.8.8.8")
    rows, summary = p.match_keys(browser, server, browser_peer="2a03:2880::1")
    by_key = {r.key: r for r in rows}
    assert by_key["fbp"].agree is True
    ip = by_key["client_ip_address"]
    assert ip.agree is False and "browser IPv6, server IPv4" in ip.agree_note
    assert by_key["em"].browser == "absent" and by_key["em"].server == "present"
    # em (3) + fbp (2) of 3*2 + 2*5 + 1*4 = 20
    assert summary["local_coverage_score"] == 25 and "not Event Match Quality" in summary["note"]


def test_explain_one_id() -> None:
    records = [
        {"seq": 1, "source": "browser", "received_at": 1_796_000_001.0, "peer": "8.8.4.4", "event": body()},
        {"seq": 2, "source": "server", "received_at": 1_796_000_002.0, "peer": None, "event": body(em=HASH)},
    ]
    doc = p.explain(records, now=1_796_000_010.0)
    assert doc["verdict"] == "paired" and doc["gap_s"] == 1.0 and doc["preview_source"] == "server"
    assert [t["source"] for t in doc["timeline"]] == ["browser", "server"]
    assert "a website event without client_user_agent" in " ".join(doc["warnings"])
    assert HASH not in json.dumps(doc)  # redacted throughout
    assert HASH in json.dumps(p.explain(records, now=1_796_000_010.0, reveal=True))


def test_sides_that_fired_at_different_moments_are_flagged() -> None:
    late = {**body(), "event_time": 1_796_000_000 + 600}
    records = [
        {"seq": 1, "source": "browser", "received_at": 1_796_000_001.0, "peer": None, "event": body()},
        {"seq": 2, "source": "server", "received_at": 1_796_000_002.0, "peer": None, "event": late},
    ]
    assert "fired at different moments" in " ".join(p.explain(records, now=1_796_000_010.0)["warnings"])


def test_unpaired_after_is_configurable() -> None:
    records = [{"seq": 1, "source": "server", "received_at": 100.0, "peer": None, "event": body()}]
    assert "unpaired after" in " ".join(p.explain(records, now=200.0, unpaired_after=60)["warnings"])
    assert "unpaired after" not in " ".join(p.explain(records, now=200.0, unpaired_after=600)["warnings"])


def test_percentile() -> None:
    assert p.percentile([], 0.5) is None
    assert p.percentile([3, 1, 2], 0.5) == 2 and p.percentile(list(range(1, 101)), 0.95) == 95
