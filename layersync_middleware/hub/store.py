"""SQLite storage of received events.

Events are grouped into dedupe groups by ``(site_id, event_name, event_id)``, as the
platforms de-duplicate: a browser event and its paired server event form one group; a
second event from the same source is a duplicate. The screen's verdicts look one level
up, at every event carrying one ``event_id`` (:mod:`.platforms`).

The store is bounded: past ``max_bytes`` of event bodies the oldest events are evicted
(counted, and said on the page), so a flood of test events cannot fill the disk.
Lists are paged newest first, with a cursor (``before``) and a ``next`` cursor when
they were cut.
"""

from __future__ import annotations

import json
import re
import sqlite3
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from . import platforms

_HASH_RE = re.compile(r"[0-9a-f]{64}")
DEFAULT_MAX_BYTES = 64 * 1024 * 1024
DEFAULT_LIMIT = 200
MAX_LIMIT = 1000
_EVICT_TO = 0.9  # evict down to this share of the cap, so that eviction is not per insert
_STALE_FACTOR = 4  # an aggregate that took t s to build may be served for 4 t s after a change...
_COSTLY_S = 0.05  # ...when t is more than this, and only to the live page

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
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value REAL NOT NULL);
"""
# Added after the first release: an older file gets them on open.
_COLUMNS = {
    "peer": "TEXT",
    "fingerprint": "TEXT",
    "size": "INTEGER NOT NULL DEFAULT 0",
    "event_time": "INTEGER",
    "keys": "TEXT NOT NULL DEFAULT ''",
}


def hashed_fields(user_data: dict[str, Any]) -> list[str]:
    return sorted(k for k, v in user_data.items() if isinstance(v, str) and _HASH_RE.fullmatch(v))


def _derived(source: str, event: dict[str, Any], peer: str | None) -> tuple[str, int | None, str]:
    et = event.get("event_time")
    event_time = et if isinstance(et, int) and not isinstance(et, bool) else None
    keys = platforms.present_keys(event, peer if source == "browser" else None)
    return platforms.fingerprint(event), event_time, " ".join(keys)


@dataclass(frozen=True)
class Page:
    items: list[dict[str, Any]]
    next: int | None  # pass as ``before`` for the next page; None: nothing older
    total: int | None = None  # how many match, all pages together (when known cheaply)

    def as_dict(self, name: str) -> dict[str, Any]:
        doc: dict[str, Any] = {name: self.items, "next": self.next, "truncated": self.next is not None}
        if self.total is not None:
            doc["total"] = self.total
        return doc


class Store:
    def __init__(
        self, path: str = ":memory:", max_bytes: int = DEFAULT_MAX_BYTES, clock: Callable[[], float] = time.time
    ) -> None:
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        if path != ":memory:":  # lets the page read while ingest writes
            self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(_SCHEMA)
        self._lock = threading.Lock()
        self.max_bytes = max_bytes
        self.clock = clock  # the demo moves it to play a late webhook
        self.version = 0  # bumped on every change: caches and ETags key on it
        # name -> (version, value, built at, cost, tag): one entry per name, whatever the filters
        self._cache: dict[str, tuple[int, Any, float, float, str]] = {}
        self._migrate()
        self._bytes = int(self._db.execute("SELECT COALESCE(SUM(size), 0) FROM events").fetchone()[0])

    def _migrate(self) -> None:
        have = {row[1] for row in self._db.execute("PRAGMA table_info(events)")}
        for name, kind in _COLUMNS.items():
            if name not in have:
                self._db.execute(f"ALTER TABLE events ADD COLUMN {name} {kind}")
        self._db.execute("CREATE INDEX IF NOT EXISTS events_id ON events (site_id, event_id)")
        stale = self._db.execute("SELECT seq, source, body FROM events WHERE fingerprint IS NULL").fetchall()
        for seq, source, body in stale:
            fp, event_time, keys = _derived(source, json.loads(body), None)
            self._db.execute(
                "UPDATE events SET fingerprint=?, event_time=?, keys=?, size=? WHERE seq=?",
                (fp, event_time, keys, len(body.encode()), seq),
            )

    # -- writing ---------------------------------------------------------------------------
    def add(self, site_id: str, source: str, event: dict[str, Any], peer: str | None = None) -> bool:
        """Store one event; returns False when its group already had one from this source.
        ``peer``: the address the event came from (a browser's is the shopper's IP)."""
        body = json.dumps(event)
        size = len(body.encode())
        fp, event_time, keys = _derived(source, event, peer)
        with self._lock:
            dup = self._db.execute(
                "SELECT 1 FROM events WHERE site_id=? AND event_name=? AND event_id=? AND source=? LIMIT 1",
                (site_id, event["event_name"], event["event_id"], source),
            ).fetchone()
            self._db.execute(
                "INSERT INTO events (site_id, event_name, event_id, source, received_at, body, peer, fingerprint,"
                " size, event_time, keys) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                (
                    site_id,
                    event["event_name"],
                    event["event_id"],
                    source,
                    self.clock(),
                    body,
                    peer,
                    fp,
                    size,
                    event_time,
                    keys,
                ),
            )
            self._bytes += size
            self.version += 1
            if self._bytes > self.max_bytes:
                self._evict()
            return dup is None

    def _evict(self) -> None:
        """Delete the oldest events down to 90 % of the cap (under the lock)."""
        excess = self._bytes - int(self.max_bytes * _EVICT_TO)
        row = self._db.execute(
            "SELECT seq FROM (SELECT seq, SUM(size) OVER (ORDER BY seq) AS upto FROM events) WHERE upto >= ? LIMIT 1",
            (excess,),
        ).fetchone()
        if row is None:
            return
        gone = self._db.execute("DELETE FROM events WHERE seq <= ?", (row[0],)).rowcount
        self._bytes = int(self._db.execute("SELECT COALESCE(SUM(size), 0) FROM events").fetchone()[0])
        self._db.execute(
            "INSERT INTO meta (key, value) VALUES ('evicted', ?) ON CONFLICT(key) DO UPDATE SET value = value + ?",
            (gone, gone),
        )
        self._db.execute(
            "INSERT INTO meta (key, value) VALUES ('evicted_at', ?) ON CONFLICT(key) DO UPDATE SET value = ?",
            (self.clock(), self.clock()),
        )

    @contextmanager
    def later(self, seconds: float) -> Iterator[None]:
        """The store's clock ``seconds`` ahead for the block: what arrives meanwhile
        arrived that much later (the demo's late webhook, the tests' late pairs)."""
        clock = self.clock
        self.clock = lambda: clock() + seconds
        try:
            yield
        finally:
            self.clock = clock

    def clear(self) -> None:
        with self._lock:
            self._cache.clear()
            self._db.execute("DELETE FROM events")
            self._db.execute("DELETE FROM meta")
            self._bytes = 0
            self.version += 1

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # -- reading ---------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        """How full the store is, and what the cap has evicted so far."""
        with self._lock:
            count = self._db.execute("SELECT COUNT(*) FROM events").fetchone()[0]
            meta = dict(self._db.execute("SELECT key, value FROM meta").fetchall())
        return {
            "events": count,
            "bytes": self._bytes,
            "max_bytes": self.max_bytes,
            "evicted": int(meta.get("evicted", 0)),
            "evicted_at": meta.get("evicted_at"),
            "version": self.version,
        }

    def events(self, limit: int = DEFAULT_LIMIT, site_id: str | None = None) -> list[dict[str, Any]]:
        return self.events_page(limit, site_id).items

    def events_page(self, limit: int = DEFAULT_LIMIT, site_id: str | None = None, before: int | None = None) -> Page:
        """Events newest first, ``limit`` of them older than the ``before`` cursor."""
        where, args = _where(site_id=site_id, before=before)
        query = (
            "SELECT seq, site_id, source, received_at, body, peer FROM events" + where + " ORDER BY seq DESC LIMIT ?"
        )
        with self._lock:
            rows = self._db.execute(query, (*args, limit + 1)).fetchall()
        out = [_record(*row) for row in rows[:limit]]
        return Page(out, out[-1]["seq"] if len(rows) > limit else None)

    def id_events(self, site_id: str, event_id: str) -> list[dict[str, Any]]:
        """Every event carrying ``event_id``, oldest first (any name, either source)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT seq, site_id, source, received_at, body, peer FROM events"
                " WHERE site_id=? AND event_id=? ORDER BY seq LIMIT ?",
                (site_id, event_id, MAX_LIMIT),
            ).fetchall()
        return [_record(*row) for row in rows]

    def _cached(self, name: str, build: Callable[[], Any], lag: bool = False, tag: str = "") -> Any:
        """``build()``'s value until the store changes. With ``lag`` (the live page's
        polls), under a flood of events a costly aggregate is served for a few times
        what it cost to build, so that rebuilding takes at most a fifth of the hub's time."""
        hit = self._cache.get(name)
        now = time.monotonic()
        if (
            hit is not None
            and hit[4] == tag
            and (hit[0] == self.version or (lag and hit[3] > _COSTLY_S and now - hit[2] < _STALE_FACTOR * hit[3]))
        ):
            return hit[1]
        version = self.version
        value = build()
        self._cache[name] = (version, value, now, time.monotonic() - now, tag)  # one entry per name
        return value

    def all_groups(self, lag: bool = False) -> list[dict[str, Any]]:
        """Every dedupe group with its id's verdict, newest first (cached per change)."""
        return list(self._cached("groups", self._build_groups, lag))

    def _build_groups(self) -> list[dict[str, Any]]:
        with self._lock:
            rows = self._db.execute(
                "SELECT site_id, event_id, event_name, source, COUNT(*), COUNT(DISTINCT fingerprint),"
                " MIN(received_at), MAX(received_at), MIN(seq) FROM events"
                " GROUP BY site_id, event_id, event_name, source"
            ).fetchall()
        by_id: dict[tuple[str, str], list[tuple[Any, ...]]] = defaultdict(list)
        for row in rows:
            by_id[(row[0], row[1])].append(row)
        groups = []
        for (site, eid), id_rows in by_id.items():
            sides = [platforms.Side(r[3], r[2], r[4], r[5], r[6], r[7]) for r in id_rows]
            decision = platforms.decide(sides)
            by_name: dict[str, list[tuple[Any, ...]]] = defaultdict(list)
            for r in id_rows:
                by_name[r[2]].append(r)
            for name, name_rows in by_name.items():
                count = {r[3]: r[4] for r in name_rows}
                browser, server = count.get("browser", 0), count.get("server", 0)
                groups.append(
                    {
                        "site_id": site,
                        "event_name": name,
                        "event_id": eid,
                        "first_received_at": min(r[6] for r in name_rows),
                        "last_received_at": max(r[7] for r in name_rows),
                        "browser": browser,
                        "server": server,
                        "sources": [s for s in ("browser", "server") if count.get(s)],
                        "paired": bool(browser and server),
                        "duplicates": max(browser - 1, 0) + max(server - 1, 0),
                        "verdict": decision.verdict,
                        "verdict_label": decision.label,
                        "rule": decision.rule,
                        "gap_s": decision.gap_s,
                        "seq": min(r[8] for r in name_rows),
                    }
                )
        groups.sort(key=lambda g: g["seq"], reverse=True)
        return groups

    def groups(self, limit: int = DEFAULT_LIMIT, site_id: str | None = None) -> list[dict[str, Any]]:
        return self.groups_page(limit, site_id=site_id).items

    def groups_page(
        self,
        limit: int = DEFAULT_LIMIT,
        *,
        site_id: str | None = None,
        before: int | None = None,
        name: str | None = None,
        verdict: str | None = None,
        since: float | None = None,
        until: float | None = None,
        lag: bool = False,
    ) -> Page:
        """Dedupe groups, newest first (by when each was first seen, so a page stays
        put while its groups fill in), filtered, ``limit`` of them older than ``before``."""
        picked = [
            g
            for g in self.all_groups(lag)
            if _keep(g, site_id, name, since, until) and (not verdict or g["verdict"] == verdict)
        ]
        total = len(picked)
        if before is not None:
            picked = [g for g in picked if g["seq"] < before]
        items = picked[:limit]
        return Page(items, items[-1]["seq"] if len(picked) > limit else None, total)

    def verdict_counts(
        self,
        *,
        site_id: str | None = None,
        name: str | None = None,
        since: float | None = None,
        until: float | None = None,
        lag: bool = False,
    ) -> dict[str, int]:
        """Dedupe groups per verdict under the same filters (verdict aside)."""
        counts: dict[str, int] = dict.fromkeys(platforms.VERDICTS, 0)
        for g in self.all_groups(lag):
            if _keep(g, site_id, name, since, until):
                counts[g["verdict"]] += 1
        return counts

    def dashboard(
        self,
        *,
        site_id: str | None = None,
        name: str | None = None,
        since: float | None = None,
        until: float | None = None,
        lag: bool = False,
    ) -> dict[str, Any]:
        """Totals with Meta's definitions, per event name: event coverage (share of
        browser events covered by a server event with the same event_id and
        event_name; goal 75 %), each key's coverage on each side, and freshness
        (p50/p95 from event_time to arrival)."""
        tag = json.dumps([site_id, name, since, until])
        return dict(self._cached("dashboard", lambda: self._build_dashboard(site_id, name, since, until), lag, tag))

    def _build_dashboard(
        self, site_id: str | None, name: str | None, since: float | None, until: float | None
    ) -> dict[str, Any]:
        where, args = _where(site_id=site_id, since=since, until=until, alias="b.")
        with self._lock:
            rows = self._db.execute(
                "SELECT b.event_name, b.source, b.keys, b.received_at - b.event_time,"
                " b.source = 'browser' AND EXISTS (SELECT 1 FROM events s WHERE s.site_id = b.site_id"
                " AND s.event_name = b.event_name AND s.event_id = b.event_id AND s.source = 'server')"
                " FROM events b" + where,
                args,
            ).fetchall()
        per: dict[str, dict[str, Any]] = {}
        for ev_name, source, keys, lag, covered in rows:
            if name and name.lower() not in ev_name.lower():
                continue
            entry = per.setdefault(
                ev_name,
                {
                    "browser": 0,
                    "server": 0,
                    "covered": 0,
                    "keys": {"browser": defaultdict(int), "server": defaultdict(int)},
                    "lags": [],
                },
            )
            entry[source] += 1
            entry["covered"] += bool(covered)
            for k in keys.split():
                entry["keys"][source][k] += 1
            if lag is not None:
                entry["lags"].append(lag)
        names = []
        all_b = all_covered = 0
        all_lags: list[float] = []
        sides = {"browser": 0, "server": 0}
        all_keys: dict[str, dict[str, int]] = {"browser": defaultdict(int), "server": defaultdict(int)}
        for ev_name in sorted(per):
            e = per[ev_name]
            all_b += e["browser"]
            all_covered += e["covered"]
            all_lags += e["lags"]
            for side in sides:
                sides[side] += e[side]
                for k, n in e["keys"][side].items():
                    all_keys[side][k] += n
            names.append(
                {
                    "event_name": ev_name,
                    "browser_events": e["browser"],
                    "server_events": e["server"],
                    "covered": e["covered"],
                    "coverage": _pct(e["covered"], e["browser"]),
                    "meets_goal": None
                    if not e["browser"]
                    else 100 * e["covered"] >= platforms.COVERAGE_GOAL * e["browser"],
                    "key_coverage": {
                        key: {side: _pct(e["keys"][side].get(key, 0), e[side]) for side in ("browser", "server")}
                        for key in platforms.KEY_RULES
                    },
                    "freshness_s": _freshness(e["lags"]),
                }
            )
        return {
            "goal": platforms.COVERAGE_GOAL,
            "coverage": _pct(all_covered, all_b),
            "browser_events": all_b,
            "covered": all_covered,
            "freshness_s": _freshness(all_lags),
            "key_coverage": {
                key: {"tier": rule.tier, **{side: _pct(all_keys[side].get(key, 0), sides[side]) for side in sides}}
                for key, rule in platforms.KEY_RULES.items()
            },
            "names": names,
            "definitions": {
                "coverage": "share of browser events covered by a server event with the same event_id and event_name "
                "(Meta's event_coverage; goal 75 %)",
                "key_coverage": "share of each side's events carrying the key, valid "
                "(Meta's match_key_feedback coverage)",
                "freshness": "time from event_time to the hub's receipt, p50 and p95 (Meta's data_freshness)",
            },
        }


def _pct(part: int, whole: int) -> float | None:
    return None if not whole else round(100 * part / whole, 1)


def _freshness(lags: list[float]) -> dict[str, float | None]:
    p50, p95 = platforms.percentile(lags, 0.5), platforms.percentile(lags, 0.95)
    return {"p50": None if p50 is None else round(p50, 1), "p95": None if p95 is None else round(p95, 1)}


def _keep(g: dict[str, Any], site_id: str | None, name: str | None, since: float | None, until: float | None) -> bool:
    return (
        (site_id is None or g["site_id"] == site_id)
        and (not name or name.lower() in g["event_name"].lower())
        and (since is None or g["last_received_at"] >= since)
        and (until is None or g["first_received_at"] <= until)
    )


def _where(
    *,
    site_id: str | None = None,
    before: int | None = None,
    since: float | None = None,
    until: float | None = None,
    alias: str = "",
) -> tuple[str, tuple[Any, ...]]:
    parts: list[str] = []
    args: list[Any] = []
    for column, op, value in (
        ("site_id", "=", site_id),
        ("seq", "<", before),
        ("received_at", ">=", since),
        ("received_at", "<=", until),
    ):
        if value is not None:
            parts.append(f"{alias}{column} {op} ?")
            args.append(value)
    return (" WHERE " + " AND ".join(parts) if parts else ""), tuple(args)


def _record(seq: int, site: str, source: str, received_at: float, body: str, peer: str | None) -> dict[str, Any]:
    event = json.loads(body)
    return {
        "seq": seq,
        "site_id": site,
        "source": source,
        "received_at": received_at,
        "peer": peer,
        "event": event,
        "hashed_fields": hashed_fields(event.get("user_data") or {}),
    }
