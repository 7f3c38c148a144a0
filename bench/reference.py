"""The reference layer of issue 12: the simplest honest pairing middleware.

One regex match on the path, read the two pairing headers, validate the id, build a
small event dict (ip, user agent, url), append it to a ``deque`` when the response starts
with a 2xx, and a daemon thread that every 100 ms posts batches of 50 with one keep-alive
``httpx.Client``. No dedupe, retries, consent or enrichment: it is the floor that
``LayerSyncMiddleware`` is measured against, not a product.
"""

from __future__ import annotations

import re
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import httpx

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

PATHS = re.compile(r"/api/(?:cart|checkout|orders)(?:/[^/]*)?/?")
VALID_ID = re.compile(r"[A-Za-z0-9_-]{8,64}")
BATCH = 50
INTERVAL = 0.1


class Shipper:
    """Posts what is in the deque, 50 at a time, every 100 ms, from a daemon thread."""

    def __init__(self, api_url: str, secret_key: str, site_id: str) -> None:
        self.queue: deque[dict[str, Any]] = deque(maxlen=10_000)
        self._url = api_url.rstrip("/") + "/api/v1/events/server/batch"
        self._site_id = site_id
        self._http = httpx.Client(headers={"Authorization": f"Bearer {secret_key}", "X-LayerSync-Site-Id": site_id})
        threading.Thread(target=self._run, name="reference-shipper", daemon=True).start()

    def _run(self) -> None:
        while True:
            time.sleep(INTERVAL)
            while self.queue:
                self._post([self.queue.popleft() for _ in range(min(BATCH, len(self.queue)))])

    def _post(self, events: list[dict[str, Any]]) -> None:
        for event in events:
            event["site_id"] = self._site_id
        try:
            self._http.post(self._url, json={"events": events}, timeout=5)
        except httpx.HTTPError:
            pass  # the reference layer drops on failure: it is a floor, not a sender


class ReferenceLayer:
    def __init__(self, app: ASGIApp, shipper: Shipper) -> None:
        self.app = app
        self.queue = shipper.queue

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not PATHS.fullmatch(scope["path"]):
            await self.app(scope, receive, send)
            return
        event_id = event_name = user_agent = host = ""
        for key, value in scope["headers"]:
            if key == b"x-layersync-event-id":
                event_id = value.decode("latin-1")
            elif key == b"x-layersync-event-name":
                event_name = value.decode("latin-1")
            elif key == b"user-agent":
                user_agent = value.decode("latin-1")
            elif key == b"host":
                host = value.decode("latin-1")
        if not VALID_ID.fullmatch(event_id) or not event_name:
            await self.app(scope, receive, send)
            return
        client = scope.get("client")
        event = {
            "event_id": event_id,
            "event_name": event_name,
            "event_time": int(time.time()),
            "event_source_url": f"{scope.get('scheme', 'http')}://{host}{scope['path']}",
            "action_source": "website",
            "user_data": {"client_ip_address": client[0] if client else None, "user_agent": user_agent},
        }
        queue = self.queue

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start" and 200 <= message["status"] < 300:
                queue.append(event)
            await send(message)

        await self.app(scope, receive, send_wrapper)
