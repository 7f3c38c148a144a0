from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from layersync_middleware.hub import Store


def ev(eid: str, name: str = "purchase", **user_data: str) -> dict[str, object]:
    return {"event_id": eid, "event_name": name, "user_data": user_data}


def test_groups_sources_and_duplicates() -> None:
    store = Store()
    assert store.add("s", "browser", ev("pur_1"))
    assert store.add("s", "server", ev("pur_1", em="a" * 64, client_ip_address="1.2.3.4"))
    assert not store.add("s", "server", ev("pur_1"))
    assert store.add("s", "server", ev("pur_2"))
    groups = {g["event_id"]: g for g in store.groups()}
    assert groups["pur_1"]["paired"] and groups["pur_1"]["duplicates"] == 1
    assert groups["pur_2"]["sources"] == ["server"]
    assert store.events(limit=10)[0]["event"]["event_id"] == "pur_2"
    hashed = [e["hashed_fields"] for e in store.events() if e["event"]["user_data"]]
    assert hashed == [["em"]]
    store.clear()
    assert store.groups() == []


def test_sites_are_separate() -> None:
    store = Store()
    store.add("a", "server", ev("x_1"))
    store.add("b", "server", ev("x_1"))
    assert len(store.groups()) == 2 and len(store.groups(site_id="a")) == 1


def big(i: int) -> dict[str, object]:
    return {"event_id": f"pur_{i:016x}", "event_name": "purchase", "user_data": {}, "custom_data": {"pad": "x" * 900}}


def test_the_cap_evicts_the_oldest_and_bounds_the_file(tmp_path: Path) -> None:
    db = tmp_path / "hub.sqlite3"
    store = Store(str(db), max_bytes=100_000)
    for i in range(1000):  # ~1 MB of bodies into a 100 kB cap
        store.add("s", "server", big(i))
    status = store.status()
    assert status["bytes"] <= 100_000 and status["evicted"] > 850 and status["events"] + status["evicted"] == 1000
    ids = [e["event"]["event_id"] for e in store.events(limit=1000)]
    assert ids[0] == "pur_00000000000003e7" and "pur_0000000000000000" not in ids  # newest kept, oldest gone
    store.close()
    assert db.stat().st_size < 400_000  # without the cap: over 1 MB
    assert Store(str(db)).status()["evicted"] == status["evicted"]  # remembered across a restart


def test_pages_are_cut_with_a_cursor() -> None:
    store = Store()
    for i in range(25):
        store.add("s", "server", ev(f"pur_{i}"))
    first = store.events_page(limit=10)
    assert first.next is not None and first.as_dict("events")["truncated"] is True
    second = store.events_page(limit=10, before=first.next)
    third = store.events_page(limit=10, before=second.next)
    seqs = [e["seq"] for e in first.items + second.items + third.items]
    assert seqs == sorted(seqs, reverse=True) and len(set(seqs)) == 25 and third.next is None
    groups = store.groups_page(limit=20)
    assert groups.total == 25 and groups.next is not None
    rest = store.groups_page(limit=20, before=groups.next)
    assert len(groups.items) + len(rest.items) == 25 and rest.next is None


def test_filters_and_verdicts() -> None:
    store = Store()
    store.add("s", "browser", ev("pur_1"))
    store.add("s", "server", ev("pur_1"))
    store.add("s", "browser", ev("lead_1", "Lead"))
    store.add("s", "server", ev("lead_1", "lead"))
    with store.later(600):
        store.add("s", "browser", ev("vi_1", "view_item"))
    assert {g["event_id"]: g["verdict"] for g in store.groups()} == {
        "pur_1": "paired",
        "lead_1": "name_mismatch",
        "vi_1": "browser_only",
    }
    assert [g["event_id"] for g in store.groups_page(name="LEAD").items] == ["lead_1", "lead_1"]
    assert [g["event_id"] for g in store.groups_page(verdict="paired").items] == ["pur_1"]
    assert [g["event_id"] for g in store.groups_page(since=store.clock() + 300).items] == ["vi_1"]
    assert store.verdict_counts()["name_mismatch"] == 2


def test_an_older_file_is_migrated(tmp_path: Path) -> None:
    db = str(tmp_path / "old.sqlite3")
    old = sqlite3.connect(db)
    old.executescript(
        "CREATE TABLE events (seq INTEGER PRIMARY KEY AUTOINCREMENT, site_id TEXT NOT NULL, event_name TEXT NOT NULL,"
        " event_id TEXT NOT NULL, source TEXT NOT NULL, received_at REAL NOT NULL, body TEXT NOT NULL);"
    )
    old.execute(
        "INSERT INTO events (site_id, event_name, event_id, source, received_at, body) VALUES (?,?,?,?,?,?)",
        ("s", "purchase", "pur_1", "server", 1.0, json.dumps(ev("pur_1", em="a" * 64))),
    )
    old.commit()
    old.close()
    store = Store(db)
    assert store.groups()[0]["verdict"] == "server_only" and store.status()["bytes"] > 0
    assert store.dashboard()["key_coverage"]["em"]["server"] == 100.0


def test_the_dashboard_follows_changes_but_a_costly_one_is_rebuilt_at_most_so_often() -> None:
    store = Store()
    store.add("s", "server", ev("pur_1"))
    assert store.dashboard()["names"][0]["server_events"] == 1
    store.add("s", "server", ev("pur_2"))
    assert store.dashboard()["names"][0]["server_events"] == 2  # cheap to build: rebuilt at once
    version, value, built_at, _, tag = store._cache["dashboard"]
    store._cache["dashboard"] = (version, value, built_at, 3600.0, tag)  # as if it had taken an hour
    store.add("s", "server", ev("pur_3"))
    assert store.dashboard(lag=True)["names"][0]["server_events"] == 2  # the live page: as it was, for now
    assert store.dashboard()["names"][0]["server_events"] == 3  # anyone else: fresh
    assert len(store.groups()) == 3  # groups are always fresh: kept up to date on each add


def test_after_an_eviction_groups_are_what_a_fresh_look_at_the_file_finds(tmp_path: Path) -> None:
    db = str(tmp_path / "hub.sqlite3")
    store = Store(db, max_bytes=30_000)
    for i in range(120):  # a pair's two sides far apart: evictions split some pairs
        store.add("s", "browser", big(i))
        store.add("s", "server", big(max(i - 7, 0)))
    assert store.status()["evicted"] > 0
    live = store.groups(limit=1000)
    assert live == Store(db, max_bytes=30_000).groups(limit=1000)  # rebuilt from the file: the same
    assert {"paired", "server_only"} <= {g["verdict"] for g in live}  # a browser side evicted: server only
