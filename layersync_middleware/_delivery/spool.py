"""The on-disk spool (``spool_path``): queued events outlive a crash, a deploy or a
worker recycle.

Memory first, disk soon after. ``track()`` only queues in memory; the sender notes what
changed in a journal (:class:`~._sender.SpoolingSender`), and a writer thread
(:class:`SpoolKeeper`) gathers it for :data:`PERSIST_INTERVAL` and writes it in one
SQLite transaction: an event is on disk within :data:`PERSIST_WINDOW` of being queued.
A hard kill (SIGKILL, the OOM killer, a power cut of the container) loses at most the
events of that window; anything else is either delivered, or in the file.

The file mirrors each process's queue: a row per queued event (its id, name, priority,
attempts and first-queued wall-clock time), deleted once the event is delivered or
dropped. Its size is bounded by the queues it mirrors (``max_queue_size`` each, the
lowest priority evicted first and counted as ``queue_full``), with :data:`MAX_BYTES`
as a backstop.

Several processes share one file. Each is an *owner* (a random token, with its pid and
host) holding a lease it renews every :data:`RENEW_EVERY` seconds while it runs; its
rows are its own to send. Rows whose owner let go (a clean exit with events left),
whose lease expired, or whose process is gone (same host, pid dead) are *adopted* in
one transaction by the next process that looks: at start, and every
:data:`RENEW_EVERY` seconds while the writer runs. So no two live processes send one
row, and a worker that exits for good strands nothing. A process paused for longer
than the lease (a debugger, SIGSTOP) may find its rows adopted: both may then send an
event, which the hub counts once (ids never change).

A lease is a heartbeat, not a time: renewing adds one to the owner's ``beat``, and an
owner is gone when another process saw its beat stand still for :data:`LEASE` seconds
of that process's own monotonic clock. Wall-clock time never decides (a clock stepped
by NTP or by hand would let a live owner's rows be adopted and sent twice).

Each row carries the site id and a fingerprint of the secret key it was queued with
(a truncated SHA-256, never the key): a client adopts only rows of its own site and
key, and leaves another site's to that site's clients (two apps sharing a path, or a
key rotated while events waited: those wait for a process with the old key).

A corrupt file is moved aside (``<path>.corrupt-<time>-<pid>``) and a new one started;
a locked one is retried on the next pass; an unwritable one is logged and retried every
:data:`RETRY_BROKEN` seconds. In all of these the events stay in memory: the spool
never breaks the app.

A full disk (SQLITE_FULL, or :data:`MAX_BYTES`) is logged once, at ERROR, with what to
do. Until the disk has room again the spool keeps nothing in memory for later (no
backlog of writes: memory stays what the queue holds) and writes nothing; every
:data:`RENEW_EVERY` seconds it tries to make the file match memory again: this
process's rows deleted (the ones sent meanwhile must never be adopted and sent again),
then the queue written. At exit, when the file still holds rows of this process that
it could not delete, the file is moved aside (``<path>.full-<time>-<pid>``) for the
same reason.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import secrets
import socket
import sqlite3
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import NamedTuple, TypeVar

from .._event import encode_event
from .._log import RateLimitedLog
from .core import ADD, Restored, SpoolingSender
from .queue import Queued

PERSIST_INTERVAL = 0.05  # the writer gathers the journal this long, then writes it at once
PERSIST_WINDOW = 0.1  # the promise: an event is on disk this long after it was queued
LEASE = 30.0  # an owner not heard from for this long is gone: its events are adopted
RENEW_EVERY = 5.0  # the lease is renewed, and orphans looked for, this often
BUSY_TIMEOUT = 0.5  # how long a write waits for another process's transaction
RETRY_BROKEN = 60.0  # an unwritable spool is tried again after this long
MAX_BYTES = 256 * 1024 * 1024  # a backstop: the queues the file mirrors bound it first

# ``lease_until`` (wall clock) is still written, for processes of older versions sharing
# the file; this version reads ``beat``.
_SCHEMA = """
CREATE TABLE IF NOT EXISTS owners (
    owner TEXT PRIMARY KEY,
    pid INTEGER NOT NULL,
    host TEXT NOT NULL,
    lease_until REAL NOT NULL,
    beat INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS events (
    event_id TEXT NOT NULL,
    event_name TEXT NOT NULL,
    owner TEXT NOT NULL,
    priority INTEGER NOT NULL,
    verified INTEGER NOT NULL,
    queued_at_ms INTEGER NOT NULL,
    attempts INTEGER NOT NULL,
    body BLOB NOT NULL,
    site TEXT NOT NULL DEFAULT '',
    key_fp TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (event_id, event_name)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS events_owner ON events (owner, queued_at_ms);
"""
# Columns a file made by an older version lacks (its rows then belong to any site: ''
# is adopted by all, as that version did).
_ADDED_COLUMNS = (
    ("owners", "beat", "INTEGER NOT NULL DEFAULT 0"),
    ("events", "site", "TEXT NOT NULL DEFAULT ''"),
    ("events", "key_fp", "TEXT NOT NULL DEFAULT ''"),
)

# A row another live owner holds is left alone: two processes that queued the same pair
# each send their own copy, and each deletes only its own row.
_UPSERT = """
INSERT INTO events (event_id, event_name, owner, priority, verified, queued_at_ms, attempts, body, site, key_fp)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (event_id, event_name) DO UPDATE SET attempts = excluded.attempts, body = excluded.body
WHERE events.owner = excluded.owner
"""

T = TypeVar("T")


class Row(NamedTuple):
    event_id: str
    event_name: str
    priority: int
    verified: int
    queued_at_ms: int
    attempts: int
    body: bytes


def key_fingerprint(site_id: str | int, secret_key: str) -> str:
    """What a row says about the key it was queued with: enough to tell two keys apart,
    nothing to recover one from (a 64-bit prefix of a salted SHA-256 of a random key)."""
    digest = hashlib.sha256(f"layersync-spool\0{site_id}\0{secret_key}".encode())
    return digest.hexdigest()[:16]


def _host_id() -> str:
    """Where a pid means something: the host name and, on Linux, the pid namespace (two
    containers sharing a volume have different ones)."""
    try:
        namespace = os.readlink("/proc/self/ns/pid")
    except OSError:
        namespace = ""
    return f"{socket.gethostname()}/{namespace}"


def _add_columns(db: sqlite3.Connection) -> None:
    """Bring a file made by an older version up to this schema (once, under the write lock)."""

    def missing() -> list[tuple[str, str, str]]:
        have = {(t, row[1]) for t in ("owners", "events") for row in db.execute(f"PRAGMA table_info({t})")}
        return [c for c in _ADDED_COLUMNS if (c[0], c[1]) not in have]

    if not missing():
        return
    db.execute("BEGIN IMMEDIATE")
    try:
        for table, column, kind in missing():  # again: another process may have just done it
            db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        return True
    except OSError:
        return True
    try:  # a zombie (killed, not yet reaped by its parent) is gone too
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[-1].split()[0] != b"Z"
    except (OSError, IndexError):
        return True


def _owner_only(file: int | str) -> None:
    """chmod 0600, unless it is another user's file (then its owner decides)."""
    try:
        if isinstance(file, int):
            os.fchmod(file, 0o600)
        else:
            os.chmod(file, 0o600)
    except PermissionError:
        pass


_OWNERS: set[str] = set()  # this process's owners: one per client with a spool


class Spool:
    """One process's handle on the file: SQL only, no threads (the caller serialises)."""

    def __init__(self, path: str, site: str | int = "", key_fp: str = "") -> None:
        self.path = path
        self.site = str(site)
        self.key_fp = key_fp  # see key_fingerprint()
        self._seen: dict[str, tuple[int, float]] = {}  # owner -> (its beat, when it last changed: monotonic)
        self.pid = os.getpid()
        self.owner = f"{self.pid}-{secrets.token_hex(8)}"
        _OWNERS.add(self.owner)
        self.host = _host_id()
        self.registered = False  # this owner has a row in ``owners``
        self._registering = False  # ... once the transaction that writes it commits
        self._db: sqlite3.Connection | None = None
        self._inode: int | None = None

    # -- the connection ---------------------------------------------------------------------
    def _connect(self) -> sqlite3.Connection:
        os.makedirs(os.path.dirname(os.path.abspath(self.path)), mode=0o700, exist_ok=True)
        # Owner-only, also a file that was there before (SQLite gives its -wal and -shm the
        # file's mode): the events carry IP addresses, user agents and hashed identities.
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            _owner_only(fd)
        finally:
            os.close(fd)
        for suffix in ("-wal", "-shm"):
            try:
                _owner_only(self.path + suffix)
            except FileNotFoundError:
                pass
        db = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT, isolation_level=None, check_same_thread=False)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")  # WAL: survives a process crash; fsync at checkpoints
            db.executescript(_SCHEMA)
            _add_columns(db)
            page_size = int(db.execute("PRAGMA page_size").fetchone()[0])
            db.execute(f"PRAGMA max_page_count={MAX_BYTES // page_size}")
        except BaseException:
            db.close()
            raise
        self._inode = os.stat(self.path).st_ino
        return db

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            self._db = self._connect()
        return self._db

    def _write(self, work: Callable[[sqlite3.Connection], T]) -> T:
        db = self._conn()
        db.execute("BEGIN IMMEDIATE")  # the write lock now: no upgrade deadlock between processes
        self._registering = False
        try:
            result = work(db)
            db.execute("COMMIT")
        except BaseException:
            try:
                db.execute("ROLLBACK")
            except sqlite3.Error:
                pass
            raise
        if self._registering:
            self.registered = True
        return result

    def moved_away(self) -> bool:
        """The file at the path is not the one open (another process set it aside)."""
        if self._db is None:
            return False
        try:
            return os.stat(self.path).st_ino != self._inode
        except OSError:
            return True

    def close(self) -> None:
        db, self._db = self._db, None
        self.registered = False
        if db is not None:
            try:
                db.close()
            except sqlite3.Error:
                pass

    # -- what the keeper asks ------------------------------------------------------------------
    def _register(self, db: sqlite3.Connection) -> None:
        db.execute(
            # A beat that went back (a REPLACE to 0) could look unchanged to an observer.
            "INSERT INTO owners (owner, pid, host, lease_until, beat) VALUES (?, ?, ?, ?, 0) ON CONFLICT (owner) "
            "DO UPDATE SET lease_until = excluded.lease_until, beat = beat + 1",
            (self.owner, self.pid, self.host, time.time() + LEASE),
        )
        self._registering = True

    def write(self, upserts: Sequence[Row], deletes: Sequence[tuple[str, str]]) -> bool:
        def work(db: sqlite3.Connection) -> bool:
            if upserts:
                self._register(db)
                mine = (self.site, self.key_fp)
                db.executemany(_UPSERT, [(r[0], r[1], self.owner, *r[2:], *mine) for r in upserts])
            if deletes:
                db.executemany(
                    "DELETE FROM events WHERE event_id = ? AND event_name = ? AND owner = ?",
                    [(eid, name, self.owner) for eid, name in deletes],
                )
            return True

        return self._write(work)

    def replace_mine(self, rows: Sequence[Row]) -> bool:
        """This owner's rows are exactly ``rows`` now (after writes were lost to a full disk)."""

        def work(db: sqlite3.Connection) -> bool:
            db.execute("DELETE FROM events WHERE owner = ?", (self.owner,))
            if rows:
                self._register(db)
                mine = (self.site, self.key_fp)
                db.executemany(_UPSERT, [(r[0], r[1], self.owner, *r[2:], *mine) for r in rows])
            return True

        return self._write(work)

    def renew(self) -> bool:
        """Extend the lease; False when another process adopted this one's rows (it was
        paused for longer than the lease)."""
        if not self.registered:
            return True

        def work(db: sqlite3.Connection) -> bool:
            cursor = db.execute(
                "UPDATE owners SET beat = beat + 1, lease_until = ? WHERE owner = ?", (time.time() + LEASE, self.owner)
            )
            if cursor.rowcount:
                return True
            self._register(db)
            return False

        return self._write(work)

    def _gone(self, owner: str, pid: int, host: str, beat: int, now: float) -> bool:
        """Whether another owner is gone: its process is (same host), or its beat stood
        still for LEASE seconds of our monotonic clock (a lease token, no wall clock)."""
        if host == self.host and (owner not in _OWNERS if pid == self.pid else not _pid_alive(pid)):
            return True  # same host, and the process is gone (or its pid is ours now)
        seen = self._seen.get(owner)
        if seen is None or seen[0] != beat:
            self._seen[owner] = (beat, now)
            return False
        return now - seen[1] >= LEASE

    def adopt(self) -> list[Row]:
        """Take the rows of this site and key whose owners are gone; oldest first."""

        def work(db: sqlite3.Connection) -> list[Row]:
            now = time.monotonic()
            live = [self.owner]
            owners = db.execute("SELECT owner, pid, host, beat FROM owners").fetchall()
            for owner, pid, host, beat in owners:
                if owner != self.owner and not self._gone(owner, pid, host, beat, now):
                    live.append(owner)
            self._seen = {o: seen for o, seen in self._seen.items() if o in live}
            marks = ",".join("?" * len(live))
            # Rows of another site or key stay for that site's clients (and '' is a row
            # written by an older version, which did not say).
            which = f"owner NOT IN ({marks}) AND ((site = ? AND key_fp = ?) OR site = '')"
            args = (*live, self.site, self.key_fp)
            rows = [
                Row(*r)
                for r in db.execute(
                    "SELECT event_id, event_name, priority, verified, queued_at_ms, attempts, body FROM events "
                    f"WHERE {which} ORDER BY queued_at_ms",
                    args,
                )
            ]
            if rows:
                self._register(db)
                db.execute(
                    f"UPDATE events SET owner = ?, site = ?, key_fp = ? WHERE {which}",
                    (self.owner, self.site, self.key_fp, *args),
                )
            # Owners that are gone go; their rows of other sites wait, ownerless, for their site.
            db.execute(f"DELETE FROM owners WHERE owner NOT IN ({marks})", live)
            return rows

        return self._write(work)

    def release(self) -> bool:
        """Let go: the rows left (if any) are anyone's to adopt at once."""
        if not self.registered:
            return True

        def work(db: sqlite3.Connection) -> bool:
            db.execute("DELETE FROM owners WHERE owner = ?", (self.owner,))
            return True

        result = self._write(work)
        self.registered = False
        return result


def _failure(exc: BaseException) -> str:
    """ "busy" (another process holds the lock: retry), "full", "corrupt" or "broken"."""
    if isinstance(exc, sqlite3.OperationalError):
        text = str(exc).lower()
        if "locked" in text or "busy" in text:
            return "busy"
        if "full" in text:
            return "full"
        return "broken"  # unable to open, read-only, disk I/O error
    if isinstance(exc, sqlite3.DatabaseError):  # "file is not a database", "malformed"
        return "corrupt"
    return "broken"  # OSError: a directory that cannot be made, a path that is a directory


_FAILED = object()
_INHERITED: list[Spool] = []  # a forked child never closes its parent's connection


class SpoolKeeper:
    """The writer: takes the sender's journal and writes it, renews the lease, adopts
    orphans. One per worker; a daemon thread started with the worker's first event (or
    at start, when the spool holds orphans to send)."""

    def __init__(self, sender: SpoolingSender, path: str, wake: Callable[[], None]) -> None:
        self.sender = sender
        self.path = path
        self._wake = wake
        self.log = sender.log  # the client's: with console_log, these lines reach stderr too
        self._log = RateLimitedLog(sender.log)
        self._start_lock = threading.Lock()
        self._reset()

    def _reset(self) -> None:
        settings = self.sender.settings
        self.spool = Spool(self.path, settings.site_id, key_fingerprint(settings.site_id, settings.secret_key.reveal()))
        self._io = threading.Lock()  # one writer at a time, in journal order
        self._pending: dict[tuple[str, str], Queued | None] = {}  # key -> to write (None: to delete)
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._broken_until = 0.0
        self._next_housekeeping = 0.0
        self._full = False  # the disk had no room: memory only until a resync succeeds
        self._stale = False  # rows of ours on disk may be of events sent or dropped since

    def after_fork(self) -> None:
        # The child is a new owner; the parent's connection and rows stay the parent's.
        _INHERITED.append(self.spool)
        self._start_lock = threading.Lock()
        self._reset()

    def running(self) -> bool:
        thread = self._thread
        return thread is not None and thread.is_alive()

    def _stopped(self) -> bool:
        return self._stopping or self._thread is not threading.current_thread()

    # -- lifecycle ------------------------------------------------------------------------------
    def start(self) -> None:
        """At start: adopt what processes gone for good left, and send it."""
        if self.adopt():
            self.ensure_running()
            self._wake()

    def ensure_running(self) -> None:
        if self.running() or sys.is_finalizing():
            return
        with self._start_lock:
            if self.running():
                return
            self._stopping = False
            thread = self._thread = threading.Thread(target=self._run, name="layersync-spool", daemon=True)
            try:
                thread.start()
            except RuntimeError:  # interpreter shutdown
                self._thread = None

    def _run(self) -> None:
        self._next_housekeeping = 0.0
        while not self._stopped():
            try:
                wakeup = self.sender.journal_wakeup
                wakeup.wait(max(self._next_housekeeping - time.monotonic(), 0.0))
                if self._stopped():
                    return
                if wakeup.is_set():
                    time.sleep(PERSIST_INTERVAL)  # gather: what comes meanwhile goes in the same write
                    wakeup.clear()  # before taking the journal: an entry added after it wakes us again
                    self.persist()
                if time.monotonic() >= self._next_housekeeping:
                    self._housekeeping()
            except Exception:  # never let the writer die on a bug; say so and go on
                self.log.exception("layersync spool error")
                time.sleep(1.0)

    def _stop_thread(self, timeout: float) -> None:
        thread = self._thread
        self._stopping = True
        self.sender.journal_wakeup.set()
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
        self._thread = None

    def close(self, timeout: float) -> int:
        """Stop the writer, write every event still queued (attempts included) and let
        go of them: they are the spool's now, for another process or the next start.
        Returns how many the spool keeps (0 when it could not write: they stay in memory)."""
        deadline = time.monotonic() + timeout
        self._stop_thread(timeout)
        if not self._io.acquire(timeout=max(deadline - time.monotonic(), 0.05)):
            return 0
        try:
            journal, items = self.sender.take_everything()
            self._merge(journal)
            for item in items:
                self._pending[item.key] = item
            if (self._full or self._flush_pending() is _FAILED) and not self._resync(items):
                if self._stale:
                    self._set_aside_stale()
                return 0
            kept = self.sender.handover(items)
            self._attempt(self.spool.release)
            self.spool.close()
            return kept
        finally:
            self._io.release()

    # -- writing -------------------------------------------------------------------------------
    def _merge(self, journal: list[tuple[int, Queued]]) -> None:
        pending = self._pending
        for op, item in journal:
            pending[item.key] = item if op == ADD else None

    def persist(self) -> bool:
        """Write what the journal says; True when everything is on disk."""
        with self._io:
            journal = self.sender.take_journal()
            if self._full:  # nothing kept for later: the next resync writes what is queued then
                return False
            self._merge(journal)
            return self._flush_pending() is not _FAILED

    def _resync(self, items: Sequence[Queued] | None = None) -> bool:
        """Must hold ``_io``. After a full disk: this process's rows are deleted and
        ``items`` (the queue) written, in one transaction; if there is no room for them,
        the rows are at least deleted. True when the file matches memory again."""
        if items is None:
            items = self.sender.queued_events()
        self._pending.clear()
        rows = [row for row in map(self._row, items) if row is not None]
        if self._attempt(lambda: self.spool.replace_mine(rows)) is not _FAILED:
            if self._full:
                self.log.warning("the spool at %s has room again: queued events are written to it", self.path)
            self._full = self._stale = False
            return True
        if self._stale and rows and self._attempt(lambda: self.spool.replace_mine(())) is not _FAILED:
            self._stale = False  # nothing of ours on disk: nothing there to send twice
        return False

    def _flush_pending(self) -> object:
        """Must hold ``_io``."""
        pending = self._pending
        if not pending:
            return True
        upserts: list[Row] = []
        deletes: list[tuple[str, str]] = []
        for key, item in pending.items():
            if item is None:
                deletes.append(key)
            else:
                row = self._row(item)
                if row is not None:
                    upserts.append(row)
        done = self._attempt(lambda: self.spool.write(upserts, deletes))
        if done is not _FAILED:
            pending.clear()
        return done

    def _row(self, item: Queued) -> Row | None:
        try:
            if not self.sender.materialize(item):  # a paired event refused when it was built
                return None
            body = encode_event(item.event)
        except Exception:  # never sendable: the sender drops it as invalid
            return None
        meta = item.event.get("client_meta")
        queued_ms = meta.get("queued_at_ms") if isinstance(meta, dict) else None
        if not isinstance(queued_ms, int) or isinstance(queued_ms, bool):
            queued_ms = int((time.time() - (self.sender._clock() - item.born)) * 1000)
        return Row(item.key[0], item.key[1], item.priority, int(item.verified), queued_ms, item.attempts, body)

    def _attempt(self, work: Callable[[], T]) -> T | object:
        """Run ``work`` on the file; a failure is logged, handled, and returns _FAILED."""
        if time.monotonic() < self._broken_until:
            return _FAILED
        try:
            return work()
        except Exception as exc:
            self._failed(exc)
            return _FAILED

    def _failed(self, exc: Exception) -> None:
        kind = _failure(exc)
        if kind == "busy":
            self._log.warn("spool-busy", "the spool at %s is locked by another process: retrying", self.path)
            return
        if kind == "full":
            self._pending.clear()  # no backlog: a resync writes the queue when there is room
            if not self._full:
                self._full = self._stale = True
                self._log.warn(
                    "spool-full",
                    "the disk under the spool at %s is full (%s): events are kept in memory only (at most "
                    "max_queue_size), and not across a restart, until it has room; free space there or point "
                    "spool_path (LAYERSYNC_SPOOL_PATH) at a larger disk",
                    self.path,
                    exc,
                    level=logging.ERROR,
                )
            return
        self.spool.close()
        if kind == "corrupt":
            self._set_aside(exc)
            return
        self._broken_until = time.monotonic() + RETRY_BROKEN
        self._log.warn(
            "spool-broken",
            "cannot use the spool at %s (%s: %s): events are kept in memory only; trying again in %d s",
            self.path,
            type(exc).__name__,
            exc,
            int(RETRY_BROKEN),
            level=logging.ERROR,
        )

    def _move_aside(self, kind: str) -> str:
        """Rename the file (and its -wal, -shm) to ``<path>.<kind>-<time>-<pid>``; raises OSError."""
        aside = f"{self.path}.{kind}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
        for suffix in ("", "-wal", "-shm"):
            try:
                os.replace(self.path + suffix, aside + suffix)
            except FileNotFoundError:
                pass
        return aside

    def _set_aside(self, exc: Exception) -> None:
        try:
            aside = self._move_aside("corrupt")
        except OSError as move_error:
            self._failed(move_error)
            return
        self.log.error("the spool at %s was corrupt (%s): moved it to %s and started a new one", self.path, exc, aside)
        self._requeue_all()

    def _set_aside_stale(self) -> None:
        """At exit, the full disk left rows of ours that could not be deleted: events sent
        or dropped since. No later process may adopt and send them again."""
        self.spool.close()
        self._stale = False  # once: a new file in its place holds nothing of ours
        try:
            aside = self._move_aside("full")
        except OSError as exc:
            self.log.error("could not move the full spool at %s aside (%s): it may send events again", self.path, exc)
            return
        self.log.error(
            "the disk under the spool at %s stayed full: moved it to %s, whose rows are out of date (sending "
            "them would send events twice); delete it once the disk has room",
            self.path,
            aside,
        )

    def _requeue_all(self) -> None:
        """Everything in memory goes to the (new) file on the next write."""
        for item in self.sender.queued_events():
            self._pending[item.key] = item
        self.sender.journal_wakeup.set()

    # -- owners -----------------------------------------------------------------------------------
    def adopt(self) -> int:
        """Queue the rows of owners that are gone; returns how many were taken over."""
        with self._io:
            rows = self._attempt(self.spool.adopt)
        if not isinstance(rows, list) or not rows:
            return 0
        entries: list[Restored] = []
        now = time.time()
        for row in rows:
            try:
                event = json.loads(row.body)
                if not isinstance(event, dict):
                    raise ValueError("not an event")
            except ValueError:
                self.sender.refuse("invalid")
                with self._io:
                    self._pending[(row.event_id, row.event_name)] = None
                continue
            entries.append(Restored(event, row.attempts, now - row.queued_at_ms / 1000, bool(row.verified)))
        queued = self.sender.restore(entries)
        self.log.info(
            "took over %d event(s) from the spool at %s: %d queued, %d expired or over their attempts",
            len(rows),
            self.path,
            queued,
            len(rows) - queued,
        )
        self.sender.journal_wakeup.set()  # the drops found delete their rows
        self._wake()  # the driver sends them and reports the drops
        return len(rows)

    def _housekeeping(self) -> None:
        self._next_housekeeping = time.monotonic() + RENEW_EVERY
        if self._full:
            with self._io:
                self._resync()
        if self.spool.moved_away():
            self.log.warning("the spool at %s was replaced: writing this process's events to the new file", self.path)
            with self._io:
                self.spool.close()
                self._requeue_all()
        with self._io:
            renewed = self._attempt(self.spool.renew)
        if renewed is False:
            self._log.warn(
                "spool-lease",
                "this process's spool lease expired (paused for over %d s?): another process took its events; "
                "an event both send is counted once by the hub",
                int(LEASE),
            )
        self.adopt()
