"""A hub of the test's own that can go down and come back on the same port."""

from __future__ import annotations

import collections
import os
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

from helpers import SITE

from layersync_middleware.hub import HubApp, HubServer, create_hub

ROOT = Path(__file__).resolve().parent.parent.parent


class SwitchableHub:
    """``down()`` refuses connections (the port stays reserved by nobody else for the
    few seconds a test runs); ``up()`` brings the same store back on the same port."""

    def __init__(self) -> None:
        self.app: HubApp = create_hub([SITE])
        self.server = HubServer(self.app).start()
        self.port = self.server.port
        self.url = self.server.url

    def down(self) -> None:
        self.server.stop()

    def up(self) -> None:
        self.server = HubServer(self.app, port=self.port).start()

    def ids(self) -> list[str]:
        """Every server event id the hub received, once per receipt."""
        return [e["event"]["event_id"] for e in self.app.hub.store.events(limit=100_000) if e["source"] == "server"]

    def counts(self) -> collections.Counter[str]:
        return collections.Counter(self.ids())

    def close(self) -> None:
        self.server.stop()
        self.app.hub.store.close()


def env(hub_url: str, **extra: str) -> dict[str, str]:
    """The environment of an app process: the test site, this hub, the repo importable."""
    return {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests")]),
        "LAYERSYNC_SITE_ID": SITE.site_id,
        "LAYERSYNC_SECRET": SITE.secret_key,
        "LAYERSYNC_API_URL": hub_url,
        **extra,
    }


def spool_rows(path: str | Path, where: str = "1") -> list[tuple[Any, ...]]:
    db = sqlite3.connect(str(path))
    try:
        return db.execute(
            f"SELECT event_id, event_name, owner, attempts, queued_at_ms FROM events WHERE {where}"
        ).fetchall()
    finally:
        db.close()


def python(code: str, environ: dict[str, str], **kwargs: Any) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", code],
        env=environ,
        cwd=ROOT,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        **kwargs,
    )
