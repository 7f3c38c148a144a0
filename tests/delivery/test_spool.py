"""The on-disk spool, in-process, against a hub of the test's own that goes down and
comes back (the process-level tests, with kills and real servers: test_durable.py)."""

from __future__ import annotations

import collections
import logging
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest
from durable_apps.hubctl import SwitchableHub, spool_rows
from helpers import SITE, queued, settings, wait_for

from layersync_middleware import LayerSync
from layersync_middleware._delivery import spool as _spool
from layersync_middleware._delivery.core import Sender, SpoolingSender
from layersync_middleware._delivery.spool import key_fingerprint
from layersync_middleware._event import Event
from layersync_middleware._pairing import PendingEvent
from layersync_middleware.hub import HubServer, HubSite, create_hub


def client(hub: SwitchableHub, spool: Path, **options: Any) -> LayerSync:
    return LayerSync(settings(api_url=hub.url, spool_path=spool, timeout_ms=1000, **options))


def test_hub_down_for_part_of_a_burst_every_event_arrives_once(switchable_hub: SwitchableHub, tmp_path: Path) -> None:
    spool = tmp_path / "spool.db"
    ls = client(switchable_hub, spool)
    switchable_hub.down()
    ids = [queued(ls.track("add_to_cart", {"n": i})) for i in range(500)]
    wait_for(lambda: len(spool_rows(spool)) == 500, "500 events in the spool", 5)  # on disk while the hub is down
    switchable_hub.up()
    ids += [queued(ls.track("add_to_cart", {"n": i})) for i in range(500, 1000)]
    assert ls.flush(15) == 0
    counts = switchable_hub.counts()
    assert sorted(counts) == sorted(ids) and set(counts.values()) == {1}  # all 1,000, each once
    assert spool_rows(spool) == []  # delivered events leave the spool
    ls.shutdown(1)


def test_without_a_spool_path_nothing_changes() -> None:
    plain = LayerSync(settings())
    assert type(plain._worker.sender) is Sender and plain._worker._keeper is None
    assert type(LayerSync(settings(spool_path="/nonexistent/x.db"))._worker.sender) is SpoolingSender


def test_a_clean_shutdown_hands_the_rest_to_the_next_start_with_ids_and_attempts(
    switchable_hub: SwitchableHub, tmp_path: Path
) -> None:
    spool = tmp_path / "spool.db"
    switchable_hub.down()
    first = client(switchable_hub, spool, max_retries=0)
    ids = {first.track("purchase", {"n": i}) for i in range(3)}
    wait_for(lambda: first.stats().retried == 3, "3 failed attempts")  # one failed attempt each
    assert first.shutdown(0.5) == 3  # and the flush in it tried each once more
    assert first.stats().queued == 0  # handed over, not dropped
    assert first.stats().dropped == {}
    assert {(r[0], r[3]) for r in spool_rows(spool)} == {(i, 2) for i in ids}
    switchable_hub.up()
    second = client(switchable_hub, spool)  # adopts at start: the first let go of them
    assert second.flush(5) == 0
    stored = {e["event"]["event_id"]: e["event"] for e in switchable_hub.app.hub.store.events()}
    assert set(stored) == ids
    assert all(e["client_meta"]["attempts"] == 2 for e in stored.values())  # the count went on
    assert spool_rows(spool) == []
    second.shutdown(1)


def test_expired_and_exhausted_events_in_the_spool_are_dropped_and_counted_not_sent(
    switchable_hub: SwitchableHub, tmp_path: Path
) -> None:
    spool = tmp_path / "spool.db"
    switchable_hub.down()
    first = client(switchable_hub, spool)
    old_purchase, old_view, tired, fresh = (
        first.track("purchase", event_id="pur_old_8_days"),
        first.track("page_view", event_id="pv_old_7_hours"),
        first.track("purchase", event_id="pur_twenty_tries"),
        first.track("lead", event_id="lead_fresh_one"),
    )
    assert first.shutdown(0.3) == 4
    now_ms = int(time.time() * 1000)
    db = sqlite3.connect(spool)
    with db:  # what the rows look like after a long outage
        db.execute("UPDATE events SET queued_at_ms = ? WHERE event_id = ?", (now_ms - 8 * 86400_000, old_purchase))
        db.execute("UPDATE events SET queued_at_ms = ? WHERE event_id = ?", (now_ms - 7 * 3600_000, old_view))
        db.execute("UPDATE events SET attempts = 20 WHERE event_id = ?", (tired,))
    db.close()
    switchable_hub.up()
    dropped: list[tuple[str, str]] = []

    def on_drop(event: Event, reason: str) -> None:
        dropped.append((str(event["event_id"]), reason))

    second = LayerSync(settings(api_url=switchable_hub.url, spool_path=spool), on_drop=on_drop)
    assert second.flush(5) == 0
    assert switchable_hub.ids() == [fresh]  # only the one still in its time
    assert second.stats().dropped == {"expired": 2, "retries_exhausted": 1}
    assert sorted(dropped) == sorted([(old_purchase, "expired"), (old_view, "expired"), (tired, "retries_exhausted")])
    assert spool_rows(spool) == []
    second.shutdown(1)


def test_a_live_process_keeps_its_events_until_it_lets_go(switchable_hub: SwitchableHub, tmp_path: Path) -> None:
    spool = tmp_path / "spool.db"
    switchable_hub.down()
    a = client(switchable_hub, spool)
    ids = {a.track("purchase", {"n": i}) for i in range(20)}
    wait_for(lambda: len(spool_rows(spool)) == 20, "20 events in the spool")
    b = client(switchable_hub, spool)  # another owner of the same file, alive
    keeper = b._worker._keeper
    assert keeper is not None
    assert keeper.adopt() == 0 and b.stats().queued == 0  # never two senders for one row
    a.shutdown(0.3)  # a exits for good: its events are anyone's now
    switchable_hub.up()
    assert keeper.adopt() == 20  # what b's writer does every few seconds
    assert b.flush(5) == 0
    counts = switchable_hub.counts()
    assert set(counts) == ids and set(counts.values()) == {1}
    b.shutdown(1)


def test_the_spool_mirrors_the_bounded_queue(switchable_hub: SwitchableHub, tmp_path: Path) -> None:
    spool = tmp_path / "spool.db"
    switchable_hub.down()
    ls = client(switchable_hub, spool, max_queue_size=5)
    views = [ls.track("page_view") for _ in range(5)]
    purchases = [ls.track("purchase") for _ in range(3)]
    kept = set(views[3:] + purchases)  # the oldest page views went, from disk too
    wait_for(lambda: {r[0] for r in spool_rows(spool)} == kept, "the spool to hold what the queue holds")
    assert ls.stats().dropped == {"queue_full": 3}
    ls.shutdown(0.2)


def test_a_corrupt_spool_is_moved_aside_and_the_app_goes_on(
    switchable_hub: SwitchableHub, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    spool = tmp_path / "spool.db"
    spool.write_bytes(b"this is not an SQLite database, it is what a full disk left behind" * 100)
    ls = client(switchable_hub, spool)
    assert "was corrupt" in caplog.text
    [aside] = tmp_path.glob("spool.db.corrupt-*")
    assert aside.read_bytes().startswith(b"this is not")
    eid = ls.track("purchase")
    assert ls.flush(5) == 0 and switchable_hub.ids() == [eid]
    switchable_hub.down()
    ls.track("purchase")
    wait_for(lambda: len(spool_rows(spool)) == 1, "1 event in the new spool")  # a new spool in its place
    ls.shutdown(0.2)


def test_an_unwritable_spool_keeps_events_in_memory(
    switchable_hub: SwitchableHub, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    ls = client(switchable_hub, blocker / "spool.db")  # its directory cannot be made: the path is a file
    assert "cannot use the spool" in caplog.text
    eid = ls.track("purchase")
    assert eid is not None
    assert ls.flush(5) == 0 and switchable_hub.ids() == [eid]
    ls.shutdown(0.2)


def test_a_locked_spool_never_holds_up_track(
    switchable_hub: SwitchableHub, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    spool = tmp_path / "spool.db"
    ls = client(switchable_hub, spool)
    switchable_hub.down()
    other = sqlite3.connect(spool, isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")  # another process in the middle of a long write
    started = time.monotonic()
    ids = [queued(ls.track("purchase")) for _ in range(50)]
    assert time.monotonic() - started < 0.5  # the writer waits for the lock, track() does not
    wait_for(lambda: "locked by another process" in caplog.text, "the writer to meet the lock", 5)
    other.execute("ROLLBACK")
    other.close()
    wait_for(lambda: len(spool_rows(spool)) == 50, "50 events in the spool", 5)
    switchable_hub.up()
    assert ls.flush(5) == 0 and sorted(switchable_hub.ids()) == sorted(ids)
    ls.shutdown(0.5)


def test_spool_logs_never_hold_event_data(
    switchable_hub: SwitchableHub, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="layersync")
    spool = tmp_path / "spool.db"
    switchable_hub.down()
    ls = client(switchable_hub, spool)
    ls.track_with_identity("purchase", {"email": "ada@example.com"}, {"order_id": "ORD-SECRET-1"})
    ls.shutdown(0.3)
    switchable_hub.up()
    client(switchable_hub, spool).shutdown(2)
    assert "took over 1 event" in caplog.text
    assert "ORD-SECRET-1" not in caplog.text and "ada@example.com" not in caplog.text
    assert "sk_test" not in caplog.text


def test_the_spool_holds_no_query_secrets_and_is_owner_only_whatever_was_there(
    switchable_hub: SwitchableHub, tmp_path: Path
) -> None:
    spool = tmp_path / "spool.db"
    sqlite3.connect(spool).execute("PRAGMA journal_mode=WAL").fetchall()  # left by an older version...
    for path in tmp_path.iterdir():
        path.chmod(0o644)  # ...readable by everyone
    switchable_hub.down()
    ls = client(switchable_hub, spool)
    page = b"https://shop.example/account?email=ada%40example.com&token=s3cr3t&utm_source=news&fbclid=IwAR1"
    request = {
        "type": "http",
        "path": "/api/orders",
        "query_string": b"session=abc123",
        "headers": [(b"host", b"shop.example"), (b"referer", page)],
    }
    ls._track_paired(PendingEvent("pur_0123456789abcdef", "purchase"), request)
    ls.track("purchase", {"note": "ada@example.com"}, request=request)
    wait_for(lambda: len(spool_rows(spool)) == 2, "2 events in the spool")
    on_disk = b"".join(p.read_bytes() for p in tmp_path.iterdir())
    assert b"utm_source=news&fbclid=IwAR1" in on_disk  # attribution is kept...
    for secret in (b"ada", b"s3cr3t", b"abc123"):  # ...nothing else of the URLs, nor a PII prop
        assert secret not in on_disk
    assert {p.name: oct(p.stat().st_mode & 0o777) for p in tmp_path.iterdir()} == {
        "spool.db": "0o600",
        "spool.db-wal": "0o600",
        "spool.db-shm": "0o600",
    }
    ls.shutdown(0.2)


def test_an_event_over_the_wire_limit_is_never_spooled(switchable_hub: SwitchableHub, tmp_path: Path) -> None:
    spool = tmp_path / "spool.db"
    switchable_hub.down()
    ls = client(switchable_hub, spool)
    # The review's repro: 20 events of 8 MB props took 151 MiB of spool, then were dropped at send.
    assert [ls.track("purchase", {"blob": "x" * 8_000_000}) for _ in range(20)] == [None] * 20
    kept = queued(ls.track("purchase", {"blob": "x" * 50_000}))
    wait_for(lambda: len(spool_rows(spool)) == 1, "1 event in the spool")
    assert [r[0] for r in spool_rows(spool)] == [kept] and spool.stat().st_size < 1_000_000
    assert ls.stats().dropped == {"too_large": 20}
    ls.shutdown(0.2)


# -- issue 22.3: one file, two sites -----------------------------------------------------------------
OTHER_SITE = HubSite("site_other", "pk_other_publishable", "sk_other_secret_key")


def test_a_client_adopts_only_rows_of_its_own_site_and_key(tmp_path: Path) -> None:
    spool = tmp_path / "spool.db"
    app = create_hub([SITE, OTHER_SITE])
    server = HubServer(app).start()
    try:
        down = LayerSync(settings(spool_path=spool, timeout_ms=300))  # site A, its hub unreachable
        ids = {queued(down.track("purchase", {"n": i})) for i in range(10)}
        assert down.shutdown(0.3) == 10  # let go: the rows are for the next process of site A
        other = LayerSync(
            settings(api_url=server.url, spool_path=spool, site_id=OTHER_SITE.site_id, secret_key=OTHER_SITE.secret_key)
        )
        keeper = other._worker._keeper
        assert keeper is not None and keeper.adopt() == 0  # not its site: left for site A
        mine = queued(other.track("lead"))
        assert other.flush(5) == 0 and other.stats().dropped == {}
        rotated = LayerSync(settings(api_url=server.url, spool_path=spool, secret_key="sk_test_rotated_key"))
        assert rotated._worker._keeper is not None and rotated._worker._keeper.adopt() == 0  # another key: no
        rotated.shutdown(0.2)
        again = LayerSync(settings(api_url=server.url, spool_path=spool))  # site A, its own key: takes them
        assert again.flush(5) == 0 and again.stats().dropped == {}
        stored = collections.Counter((e["event"]["site_id"], e["event"]["event_id"]) for e in app.hub.store.events())
        assert stored == collections.Counter({**{(SITE.site_id, i): 1 for i in ids}, (OTHER_SITE.site_id, mine): 1})
        assert spool_rows(spool) == []
        other.shutdown(0.2)
        again.shutdown(0.2)
    finally:
        server.stop()
        app.hub.store.close()


def test_rows_say_their_site_and_a_key_fingerprint_never_the_key(switchable_hub: SwitchableHub, tmp_path: Path) -> None:
    spool = tmp_path / "spool.db"
    switchable_hub.down()
    ls = client(switchable_hub, spool)
    ls.track("purchase")
    wait_for(lambda: len(spool_rows(spool)) == 1, "1 event in the spool")
    db = sqlite3.connect(spool)
    [(site, fingerprint)] = db.execute("SELECT site, key_fp FROM events").fetchall()
    db.close()
    assert site == SITE.site_id and fingerprint == key_fingerprint(SITE.site_id, SITE.secret_key)
    assert SITE.secret_key.encode() not in b"".join(p.read_bytes() for p in tmp_path.iterdir())
    ls.shutdown(0.2)


# -- issue 22.8: a wall-clock step never makes rows send twice ----------------------------------------
def test_a_clock_step_never_makes_a_live_processs_rows_send_twice(
    switchable_hub: SwitchableHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spool = tmp_path / "spool.db"
    switchable_hub.down()
    a = client(switchable_hub, spool)
    ids = [queued(a.track("add_to_cart", {"n": i})) for i in range(200)]
    wait_for(lambda: len(spool_rows(spool)) == 200, "200 events in the spool")
    wall = time.time
    monkeypatch.setattr(time, "time", lambda: wall() + 60)  # NTP, or an operator, steps the clock
    b = client(switchable_hub, spool)  # a second worker starts: it looks for orphans at once
    keeper = b._worker._keeper
    assert keeper is not None and keeper.adopt() == 0
    switchable_hub.up()
    assert a.flush(5) == 0 and b.flush(5) == 0
    counts = switchable_hub.counts()
    assert sorted(counts) == sorted(ids) and set(counts.values()) == {1}  # 200, each once
    a.shutdown(0.2)
    b.shutdown(0.2)


def test_an_owner_whose_heartbeat_stops_is_taken_over_after_the_lease(
    switchable_hub: SwitchableHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_spool, "LEASE", 0.3)  # a's writer renews every 5 s: its beat stands still meanwhile
    spool = tmp_path / "spool.db"
    switchable_hub.down()
    a = client(switchable_hub, spool)
    ids = {queued(a.track("purchase", {"n": i})) for i in range(5)}
    wait_for(lambda: len(spool_rows(spool)) == 5, "5 events in the spool")
    b = client(switchable_hub, spool)
    keeper = b._worker._keeper
    assert keeper is not None and keeper.adopt() == 0  # first sight of a's beat
    # Unchanged for the lease: a is stuck (SIGSTOP, a debugger).
    wait_for(lambda: keeper.adopt() == 5, "the keeper to adopt 5 events")
    a._worker.sender.discard()  # a stays stuck
    switchable_hub.up()
    assert b.flush(5) == 0 and set(switchable_hub.ids()) == ids
    a.shutdown(0)
    b.shutdown(0.2)


def test_a_spool_an_older_version_made_gains_its_new_columns_and_is_used(
    switchable_hub: SwitchableHub, tmp_path: Path
) -> None:
    spool = tmp_path / "spool.db"
    old = sqlite3.connect(spool)  # the schema before the owners' beat and the rows' site and key
    old.executescript("""
        CREATE TABLE owners (owner TEXT PRIMARY KEY, pid INTEGER NOT NULL, host TEXT NOT NULL,
                             lease_until REAL NOT NULL);
        CREATE TABLE events (event_id TEXT NOT NULL, event_name TEXT NOT NULL, owner TEXT NOT NULL,
                             priority INTEGER NOT NULL, verified INTEGER NOT NULL, queued_at_ms INTEGER NOT NULL,
                             attempts INTEGER NOT NULL, body BLOB NOT NULL, PRIMARY KEY (event_id, event_name))
                             WITHOUT ROWID;
    """)
    old.close()
    switchable_hub.down()
    ls = client(switchable_hub, spool)
    eid = queued(ls.track("purchase", {"value": 1}))
    wait_for(lambda: [r[0] for r in spool_rows(spool)] == [eid], "the event in the old file")
    db = sqlite3.connect(spool)
    columns = {(t, row[1]) for t in ("owners", "events") for row in db.execute(f"PRAGMA table_info({t})")}
    db.close()
    assert {("owners", "beat"), ("events", "site"), ("events", "key_fp")} <= columns
    switchable_hub.up()
    assert ls.flush(5) == 0 and switchable_hub.ids() == [eid] and spool_rows(spool) == []
    ls.shutdown(0.5)
