"""The framework-free pairing every adapter runs (``_pairing.Pairing``): hooks checked at
start-up, consent and success answers taken only when they are what they claim, the
pending event a handler enriches, and why a name was refused."""

from __future__ import annotations

import asyncio
import contextvars
import logging
from typing import Any

import pytest
from helpers import settings

from layersync_middleware import LayerSync
from layersync_middleware._pairing import Pairing, PendingEvent, current_event, reset_current, set_current
from layersync_middleware.testing import MemoryTransport

ATC_ID = "atc_0123456789abcdef"
SCOPE: dict[str, Any] = {
    "type": "http",
    "path": "/api/cart/add",
    "root_path": "",
    "scheme": "https",
    "query_string": b"",
    "headers": [(b"host", b"shop.example")],
    "client": ("10.0.0.2", 1234),
    "server": ("shop.example", 443),
}


@pytest.fixture
def client(memory: MemoryTransport) -> LayerSync:
    return LayerSync(settings(sender="sync", matcher={"/api/cart/*": None, "/hooks/*": "lead"}), transport=memory)


def start(pairing: Pairing, path: str = "/api/cart/add", name: str = "add_to_cart") -> PendingEvent | None:
    return pairing.start("POST", path, path, ATC_ID, name, SCOPE)


def test_hooks_are_checked_when_the_middleware_is_made(client: LayerSync) -> None:
    async def consent(request: object) -> bool:
        return True

    with pytest.raises(TypeError, match="consent must be a callable, got str"):
        Pairing(client, consent="yes")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="is_success is an async function, which this synchronous middleware"):
        Pairing(client, is_success=consent)
    assert Pairing(client, consent=consent, can_await=True).consent is consent


def test_only_true_consents(client: LayerSync, memory: MemoryTransport) -> None:
    assert start(Pairing(client, consent=lambda request: False)) is None
    assert start(Pairing(client, consent=lambda request: "yes")) is None  # type: ignore[arg-type,return-value]
    assert client.stats().dropped == {"invalid_consent": 1}
    pending = start(Pairing(client, consent=lambda request: True))
    assert pending is not None and pending.event_id == ATC_ID


def test_an_awaitable_answer_in_a_sync_middleware_is_a_no_and_is_closed(
    client: LayerSync, memory: MemoryTransport, caplog: pytest.LogCaptureFixture
) -> None:
    async def later() -> bool:
        return True

    # Were the coroutines left unawaited and unclosed, Python would warn (an error here).
    assert start(Pairing(client, consent=lambda request: later())) is None
    pairing = Pairing(client, is_success=lambda status: later())
    pending = start(pairing)
    assert pending is not None
    pairing.finish(pending, SCOPE, 200)
    assert client.flush(1) == 0 and memory.events == []
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert any(m.startswith("consent returned an awaitable") for m in errors), errors
    assert any(m.startswith("is_success returned an awaitable") for m in errors), errors


def test_the_async_path_awaits_consent_and_is_success(client: LayerSync, memory: MemoryTransport) -> None:
    async def consent(request: object) -> bool:
        return True

    async def is_success(status: int) -> bool:
        return status == 201

    pairing = Pairing(client, consent=consent, is_success=is_success, can_await=True)

    async def request(status: int) -> None:
        pending = await pairing.astart("POST", "/api/cart/add", "/api/cart/add", ATC_ID, "add_to_cart", SCOPE)
        assert pending is not None
        await pairing.afinish(pending, SCOPE, status)

    asyncio.run(request(200))  # not a success for this app
    assert client.flush(1) == 0 and memory.events == []
    asyncio.run(request(201))
    assert client.flush(1) == 0 and [e["event_id"] for e in memory.events] == [ATC_ID]


def test_a_cancelled_pending_event_is_not_sent(client: LayerSync, memory: MemoryTransport) -> None:
    pairing = Pairing(client)
    pending = start(pairing)
    assert pending is not None
    pending.update({"value": 79.5}, currency="USD")
    pending.identify({"email": "ada@example.com"}, phone="+44 20 7946 0958")
    pending.cancel()
    # The repr names props, never their values or the traits (PII).
    assert repr(pending) == f"<PendingEvent add_to_cart {ATC_ID} cancelled props=['currency', 'value']>"
    for finish in (pairing.finish, pairing.afinish):
        outcome = finish(pending, SCOPE, 200)
        if outcome is not None:
            asyncio.run(outcome)
    assert client.flush(1) == 0 and memory.events == []


def test_a_name_the_pattern_does_not_allow_is_refused_saying_which_it_allows(
    client: LayerSync, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="layersync")
    assert start(Pairing(client), "/hooks/stripe", "purchase") is None
    assert "the pattern /hooks/* allows lead here (see the matcher setting)" in caplog.text
    assert client.stats().dropped == {"name_not_allowed": 1}


def test_the_current_event_resets_quietly_from_another_context() -> None:
    pending = PendingEvent(ATC_ID, "add_to_cart")
    token = set_current(pending)
    assert current_event() is pending
    contextvars.Context().run(reset_current, token)  # a token of another context: nothing to undo
    assert current_event() is pending
    reset_current(token)
    assert current_event() is None


def test_a_hook_that_raises_is_counted_and_the_request_goes_on(client: LayerSync, memory: MemoryTransport) -> None:
    def broken(value: object) -> bool:
        raise RuntimeError("a bug in the app's hook")

    async def abroken(value: object) -> bool:
        raise RuntimeError("a bug in the app's hook")

    assert start(Pairing(client, consent=broken)) is None
    pairing = Pairing(client, is_success=broken)
    pending = start(pairing)
    assert pending is not None
    pairing.finish(pending, SCOPE, 200)

    async def request() -> None:
        apairing = Pairing(client, consent=abroken, can_await=True)
        assert await apairing.astart("POST", "/api/cart/add", "/api/cart/add", ATC_ID, "add_to_cart", SCOPE) is None
        afinishing = Pairing(client, is_success=abroken, can_await=True)
        apending = await afinishing.astart("POST", "/api/cart/add", "/api/cart/add", ATC_ID, "add_to_cart", SCOPE)
        assert apending is not None
        await afinishing.afinish(apending, SCOPE, 200)

    asyncio.run(request())
    assert client.stats().dropped == {"internal_error": 4} and memory.events == []
