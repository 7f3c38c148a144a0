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


class _Index:
    """Every id's sides and its dedupe groups' rows, kept up to date on each add, so
    that listing and counting groups costs no query and no re-decision. Rebuilt from
    the database on open and after an eviction."""

    def __init__(self) -> None:
        # (site, id) -> (source, name) -> [count, {fingerprint}, first at, last at, first seq]
        self.ids: dict[tuple[str, str], dict[tuple[str, str], list[Any]]] = {}
        self.groups: dict[tuple[str, str, str], dict[str, Any]] = {}  # (site, name, id) -> row
        self.order: list[tuple[str, str, str]] = []  # group keys, oldest first

    @classmethod
    def of(cls, rows: list[tuple[Any, ...]]) -> _Index:
        """``rows``: (seq, site, id, name, source, received_at, fingerprint), by seq."""
        index = cls()
        for row in rows:
            index._count(*row)
        for site, eid in index.ids:
            index._decide(site, eid)
        return index

    def forget(self, ids: set[tuple[str, str]]) -> None:
        """Drop these ids (their events were evicted) and their groups."""
        for site, eid in ids:
            for _, name in self.ids.pop((site, eid), {}):
                self.groups.pop((site, name, eid), None)
        self.order = [key for key in self.order if key in self.groups]

    def extend(self, rows: list[tuple[Any, ...]]) -> None:
        """Count ``rows`` (as :meth:`of` takes them) in, then decide their ids again."""
        for row in rows:
            self._count(*row)
        for site, eid in {(r[1], r[2]) for r in rows}:
            self._decide(site, eid)
        self.order.sort(key=lambda key: self.groups[key]["seq"])

    def add(self, seq: int, site: str, eid: str, name: str, source: str, at: float, fp: str) -> None:
        self._count(seq, site, eid, name, source, at, fp)
        self._decide(site, eid)

    def _count(self, seq: int, site: str, eid: str, name: str, source: str, at: float, fp: str) -> None:
        side = self.ids.setdefault((site, eid), {}).setdefault((source, name), [0, set(), at, at, seq])
        side[0] += 1
        side[1].add(fp)
        side[3] = at
        if (site, name, eid) not in self.groups:
            self.groups[(site, name, eid)] = {"site_id": site, "event_name": name, "event_id": eid, "seq": seq}
            self.order.append((site, name, eid))

    def _decide(self, site: str, eid: str) -> None:
        sides = self.ids[(site, eid)]
        decision = platforms.decide(
            [platforms.Side(src, n, v[0], len(v[1]), v[2], v[3]) for (src, n), v in sides.items()]
        )
        for name in {n for _, n in sides}:
            count = {src: v[0] for (src, n), v in sides.items() if n == name}
            mine = [v for (_, n), v in sides.items() if n == name]
            browser, server = count.get("browser", 0), count.get("server", 0)
            self.groups[(site, name, eid)].update(
                first_received_at=min(v[2] for v in mine),
                last_received_at=max(v[3] for v in mine),
                browser=browser,
                server=server,
                sources=[src for src in ("browser", "server") if count.get(src)],
                paired=bool(browser and server),
                duplicates=max(browser - 1, 0) + max(server - 1, 0),
                verdict=decision.verdict,
                verdict_label=decision.label,
                rule=decision.rule,
                gap_s=decision.gap_s,
            )

    def newest_first(self) -> Iterator[dict[str, Any]]:
        return (self.groups[key] for key in reversed(self.order))


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
        self._reindex()

    def _reindex(self) -> None:
        self._index = _Index.of(
            self._db.execute(
                "SELECT seq, site_id, event_id, event_name, source, received_at, fingerprint FROM events ORDER BY seq"
            ).fetchall()
        )

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
        name, eid, at = event["event_name"], event["event_id"], self.clock()
        with self._lock:
            dup = (source, name) in self._index.ids.get((site_id, eid), {})
            cursor = self._db.execute(
                "INSERT INTO events (site_id, event_name, event_id, source, received_at, body, peer, fingerprint,"
                " size, event_time, keys) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                (site_id, name, eid, source, at, body, peer, fp, size, event_time, keys),
            )
            self._index.add(int(cursor.lastrowid or 0), site_id, eid, name, source, at, fp)
            self._bytes += size
            self.version += 1
            if self._bytes > self.max_bytes:
                self._evict()
            return not dup

    def _evict(self) -> None:
        """Delete the oldest events down to 90 % of the cap (under the lock)."""
        excess = self._bytes - int(self.max_bytes * _EVICT_TO)
        row = self._db.execute(
            "SELECT seq FROM (SELECT seq, SUM(size) OVER (ORDER BY seq) AS upto FROM events) WHERE upto >= ? LIMIT 1",
            (excess,),
        ).fetchone()
        if row is None:
            return
        upto = row[0]
        touched = set(self._db.execute("SELECT DISTINCT site_id, event_id FROM events WHERE seq <= ?", (upto,)))
        # What the ids that lose events keep: counted again once they are forgotten.
        kept = self._db.execute(
            "SELECT seq, site_id, event_id, event_name, source, received_at, fingerprint FROM events"
            " WHERE seq > ? AND event_id IN (SELECT event_id FROM events WHERE seq <= ?) ORDER BY seq",
            (upto, upto),
        ).fetchall()
        gone = self._db.execute("DELETE FROM events WHERE seq <= ?", (upto,)).rowcount
        self._bytes = int(self._db.execute("SELECT COALESCE(SUM(size), 0) FROM events").fetchone()[0])
        self._index.forget(touched)
        self._index.extend([r for r in kept if (r[1], r[2]) in touched])
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
            self._index = _Index()
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
    ) -> Page:
        """Dedupe groups, newest first (by when each was first seen, so a page stays
        put while its groups fill in), filtered, ``limit`` of them older than ``before``;
        each with its id's verdict (:func:`.platforms.decide`)."""
        total, items = 0, list[dict[str, Any]]()
        with self._lock:  # one pass, no query: the index is kept up to date on each add
            for g in self._index.newest_first():
                if not _keep(g, site_id, name, since, until) or (verdict and g["verdict"] != verdict):
                    continue
                total += 1
                if (before is None or g["seq"] < before) and len(items) <= limit:
                    items.append(dict(g))  # a copy: callers may annotate it
        more = len(items) > limit
        items = items[:limit]
        return Page(items, items[-1]["seq"] if more else None, total)

    def verdict_counts(
        self,
        *,
        site_id: str | None = None,
        name: str | None = None,
        since: float | None = None,
        until: float | None = None,
    ) -> dict[str, int]:
        """Dedupe groups per verdict under the same filters (verdict aside)."""
        counts: dict[str, int] = dict.fromkeys(platforms.VERDICTS, 0)
        with self._lock:
            for g in self._index.newest_first():
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
