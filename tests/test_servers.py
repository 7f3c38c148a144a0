"""Every ASGI server of the README's table (uvicorn, hypercorn, daphne, granian) running
the Starlette shop against the local hub: a pair sent twice arrives once; SIGTERM under
load loses no accepted event; with the hub hanging, the exit takes one
``shutdown_timeout`` whatever hooks the server runs, and the loss is logged once."""

from __future__ import annotations

import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from durable_apps.hubctl import until
from helpers import SITE, LiveHub
from servers import launch, stop

from layersync_middleware._event import new_event_id

SERVERS = ["uvicorn", "hypercorn", "daphne", "granian"]
APP = "example_apps.starlette_app:app"
REQUESTS = 160  # SIGTERM when half of them were answered
BUDGET = 1.5  # shutdown_timeout with the hub hanging: 2x (3 s) is what the test must not see


def environ(hub: LiveHub, shutdown_timeout: float) -> dict[str, str]:
    return {
        "LAYERSYNC_SITE_ID": SITE.site_id,
        "LAYERSYNC_SECRET": SITE.secret_key,
        "LAYERSYNC_API_URL": hub.url,
        "LAYERSYNC_SHUTDOWN_TIMEOUT": str(shutdown_timeout),
    }


def add_to_cart(http: httpx.Client, event_id: str) -> bool:
    """One paired request; True when the app answered it (its event was accepted)."""
    headers = {"X-LayerSync-Event-Id": event_id, "X-LayerSync-Event-Name": "add_to_cart"}
    try:
        return http.post("/api/cart/add", json={"item_id": "SKU-A"}, headers=headers).status_code == 200
    except httpx.HTTPError:  # refused or cut during the shutdown: not accepted
        return False


def server_ids(hub: LiveHub) -> list[str]:
    return [e["event"]["event_id"] for e in hub.events("server")]


@pytest.mark.parametrize("server", SERVERS)
def test_a_pair_arrives_once_and_sigterm_under_load_loses_no_accepted_event(hub: LiveHub, server: str) -> None:
    # The first batch is answered 429 with Retry-After: 30 s, so no event reaches the hub
    # on its own during the test: every one that arrives went through the exit drain.
    hub.faults(mode="429", retry_after=30, count=1)
    pair = new_event_id("add_to_cart")
    load = [new_event_id("add_to_cart") for _ in range(REQUESTS)]
    accepted: list[str] = []
    lock = threading.Lock()
    with launch(server, APP, environ(hub, 5)) as (proc, url), httpx.Client(base_url=url, timeout=10) as http:
        assert add_to_cart(http, pair) and add_to_cart(http, pair)
        accepted.append(pair)

        def one(event_id: str) -> None:
            if add_to_cart(http, event_id):
                with lock:
                    accepted.append(event_id)
                    if len(accepted) == REQUESTS // 2:
                        proc.send_signal(signal.SIGTERM)

        with ThreadPoolExecutor(8) as pool:
            list(pool.map(one, load))
        assert proc.wait(15) in (0, -signal.SIGTERM)
        output = stop(proc)
    arrived = server_ids(hub)
    assert len(arrived) == len(set(arrived)), output  # each once, the pair sent twice included
    assert set(accepted) <= set(arrived), output  # nothing accepted is lost
    assert set(arrived) <= {pair, *load}
    assert "undelivered" not in output


@pytest.mark.parametrize("server", SERVERS)
def test_with_the_hub_hanging_the_exit_takes_one_shutdown_timeout(hub: LiveHub, server: str) -> None:
    hub.faults(mode="hang", hang_seconds=10)
    with launch(server, APP, environ(hub, BUDGET)) as (proc, url), httpx.Client(base_url=url, timeout=10) as http:
        assert all(add_to_cart(http, new_event_id("add_to_cart")) for _ in range(20))
        assert until(lambda: hub.http.get("/api/hub/faults").json()["hits"] >= 1)  # a batch hangs
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(4 * BUDGET + 5) in (0, -signal.SIGTERM)
        took = time.monotonic() - started
        output = stop(proc)
    print(f"{server}: exit {took:.2f}s with the hub hanging, shutdown_timeout {BUDGET}s")
    assert took < 2 * BUDGET, output  # 3.0-4.6 s under uvicorn, hypercorn and granian before
    assert output.count("undelivered event") == 1, output  # said once, with the count
    assert "20 undelivered event(s)" in output, output
