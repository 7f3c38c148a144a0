"""SQLite storage of received events, grouped into dedupe groups by
``(site_id, event_name, event_id)``: a browser event and its paired server event form
one group; a second event from the same source is a duplicate."""

from __future__ import annotations

import json
import re
import sqlite3
import threading
import time
from typing import Any

_HASH_RE = re.compile(r"[0-9a-f]{64}")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    site_id TEXT NOT NULL,
    event_name TEXT NOT NULL,
    event_id TEXT NOT NULL,
    source TEXT NOT NULL,
    received_at REAL NOT NULL,
    body TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_group ON events (site_id, event_name, event_id);
"""


def hashed_fields(user_data: dict[str, Any]) -> list[str]:
    return sorted(k for k, v in user_data.items() if isinstance(v, str) and _HASH_RE.fullmatch(v))


class Store:
    def __init__(self, path: str = ":memory:") -> None:
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        if path != ":memory:":  # lets the page read while ingest writes
            self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(_SCHEMA)
        self._lock = threading.Lock()

    def add(self, site_id: str, source: str, event: dict[str, Any]) -> bool:
        """Store one event; returns False when its group already had one from this source."""
        with self._lock:
            dup = self._db.execute(
                "SELECT 1 FROM events WHERE site_id=? AND event_name=? AND event_id=? AND source=? LIMIT 1",
                (site_id, event["event_name"], event["event_id"], source),
            ).fetchone()
            self._db.execute(
                "INSERT INTO events (site_id, event_name, event_id, source, received_at, body) VALUES (?,?,?,?,?,?)",
                (site_id, event["event_name"], event["event_id"], source, time.time(), json.dumps(event)),
            )
            return dup is None

    def events(self, limit: int = 200, site_id: str | None = None) -> list[dict[str, Any]]:
        query = "SELECT seq, site_id, source, received_at, body FROM events"
        args: tuple[Any, ...] = ()
        if site_id is not None:
            query, args = query + " WHERE site_id=?", (site_id,)
        with self._lock:
            rows = self._db.execute(query + " ORDER BY seq DESC LIMIT ?", (*args, limit)).fetchall()
        out = []
        for seq, site, source, received_at, body in rows:
            event = json.loads(body)
            out.append(
                {
                    "seq": seq,
                    "site_id": site,
                    "source": source,
                    "received_at": received_at,
                    "event": event,
                    "hashed_fields": hashed_fields(event.get("user_data") or {}),
                }
            )
        return out

    def groups(self, limit: int = 200, site_id: str | None = None) -> list[dict[str, Any]]:
        """Dedupe groups, newest first: sources, counts, and the merged user_data keys."""
        query = (
            "SELECT site_id, event_name, event_id, MIN(received_at), MAX(seq), "
            "SUM(source='browser'), SUM(source='server') FROM events"
        )
        args: tuple[Any, ...] = ()
        if site_id is not None:
            query, args = query + " WHERE site_id=?", (site_id,)
        query += " GROUP BY site_id, event_name, event_id ORDER BY MAX(seq) DESC LIMIT ?"
        with self._lock:
            rows = self._db.execute(query, (*args, limit)).fetchall()
        groups = []
        for site, name, eid, first, _, browser, server in rows:
            sources = [s for s, n in (("browser", browser), ("server", server)) if n]
            groups.append(
                {
                    "site_id": site,
                    "event_name": name,
                    "event_id": eid,
                    "first_received_at": first,
                    "browser": browser,
                    "server": server,
                    "sources": sources,
                    "paired": bool(browser and server),
                    "duplicates": max(browser - 1, 0) + max(server - 1, 0),
                }
            )
        return groups

    def clear(self) -> None:
        with self._lock:
            self._db.execute("DELETE FROM events")

    def close(self) -> None:
        with self._lock:
            self._db.close()
