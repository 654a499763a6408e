"""The durable queue between the tally and MQTT: an SQLite file in the service's state directory.

Every closed window is written here before it is published and removed only after the
broker acknowledged it (QoS 1 PUBACK), so a broker outage, a restart or a power cut loses
nothing: the backlog goes out oldest first on the next connection. ``seq`` comes from a
counter stored in the same file and is taken in the same transaction that stores the
window, so it rises by one per window across restarts, with no gap and no duplicate.

The queue is bounded by age: windows older than ``max_age_s`` are dropped by
``drop_expired()``, counted in a persisted total and logged, never silently.

A file that is not a database, or fails SQLite's quick check, is renamed to
``<name>.corrupt-<UTC time>`` for a person to inspect and a fresh outbox takes its
place; a location that cannot be written raises OutboxError naming the path and why.

A disk that refuses writes (full, read-only) makes append() raise OutboxError, whose ``reason``
says why, and leaves the file as it was; the caller keeps the window. What is stored still
opens and goes out: opening writes nothing to an outbox that is already current, and an
acknowledged window whose delete fails is remembered, never sent again, and deleted by the
next write that works.

Opened with ``read_only=True`` (``edge-agent check``) it never writes, so it can look at the
queue of a running agent, or of one whose disk has gone read-only. Which process may write it
is settled by the agent's lock (lock.py), not here.
"""

import logging
import os
import shutil
import sqlite3
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, Self, TypeVar

from ..common.contract import format_utc
from ..common.errors import EdgeAgentError

log = logging.getLogger(__name__)

T = TypeVar("T")

SCHEMA_VERSION = 1
DEFAULT_MAX_AGE_S = 168 * 3600

# SQLite's primary result codes (the low byte of an extended code).
_SQLITE_CORRUPT = 11
_SQLITE_NOTADB = 26
_CORRUPT_CODES = (_SQLITE_CORRUPT, _SQLITE_NOTADB)
# Less room than this (SQLite's -shm alone takes 32 KiB) is a full disk, whatever SQLite calls it.
_FULL_BYTES = 64 * 1024
# What a disk that refuses writes looks like to SQLite, and what to tell the person who reads it.
_STORAGE_HINTS = {
    13: "the disk holding it is full: free space on it",                       # SQLITE_FULL
    8: "the filesystem is read-only: an SD card that fails turns read-only",   # SQLITE_READONLY
    10: "the disk fails to write: an SD card that fails turns read-only",      # SQLITE_IOERR
    14: "the file cannot be opened for writing",                               # SQLITE_CANTOPEN
}

# A window is a few hundred bytes and the queue holds at most max_age_s of them, so one
# simple table with the seq index (for the order) and a window_start index (for expiry)
# is all it takes.
_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS windows (
        id INTEGER PRIMARY KEY,
        seq INTEGER UNIQUE NOT NULL,
        window_start INTEGER NOT NULL,
        topic TEXT NOT NULL,
        payload BLOB NOT NULL,
        stored_at REAL NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS windows_by_start ON windows (window_start)",
    # Counters live apart from the rows: removing or dropping every row must not
    # let a later start hand out a seq again.
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL)",
    "INSERT OR IGNORE INTO meta (key, value) VALUES ('next_seq', 0), ('dropped_total', 0), ('last_window_end', 0)",
)
_COLUMNS = {"id", "seq", "window_start", "topic", "payload", "stored_at"}
_COMPANIONS = ("-wal", "-shm")


class OutboxError(EdgeAgentError):
    """The outbox file cannot be opened or written; the message names it and says why.

    ``reason`` is the why alone (SQLite's words), short enough for a status line.
    """

    def __init__(self, message: str, reason: str | None = None):
        super().__init__(message)
        self.reason = reason or message


class _Corrupt(Exception):
    """Internal: the file is damaged or is not an outbox; carries the reason."""


@dataclass(frozen=True)
class Pending:
    """A stored window waiting for its PUBACK."""

    id: int            # row id, to remove() after the PUBACK
    topic: str
    payload: bytes
    seq: int
    window_start: int  # epoch seconds


class Storable(Protocol):
    """What append()'s ``build`` returns: an EmotionsPayload, or a test's stand-in."""

    @property
    def start_epoch(self) -> int: ...

    def to_json(self) -> bytes: ...


def _primary_code(exc: BaseException | None) -> int | None:
    code: int | None = getattr(exc, "sqlite_errorcode", None)
    return None if code is None else code & 0xFF


def _fsync_dir(directory: Path) -> None:
    # A new or renamed file survives a power cut only once its directory entry is on disk.
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class Outbox:
    """Windows stored until the broker acknowledges them; safe to share between two threads.

    ``clock`` returns epoch seconds; it is injectable so expiry can be tested.
    """

    def __init__(self, path: str | Path, *, max_age_s: float = DEFAULT_MAX_AGE_S,
                 clock: Callable[[], float] = time.time, read_only: bool = False):
        if not max_age_s > 0:
            raise ValueError(f"max_age_s must be positive, not {max_age_s!r}")
        self.path = Path(path)
        self.max_age_s = max_age_s
        self._clock = clock
        self.read_only = read_only
        # The MQTT thread removes rows while the main loop appends: one connection,
        # used by one thread at a time.
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None
        # Acknowledged rows the disk would not let us delete: never sent again, deleted later.
        self._unremoved: set[int] = set()
        if read_only:
            self._db = self._open_read_only()
            return
        self._prepare_file()
        try:
            self._db = self._open()
        except _Corrupt as corrupt:
            self._move_aside(str(corrupt))
            try:
                self._db = self._open()
            except _Corrupt as again:
                raise OutboxError(f"outbox {self.path} is still unreadable after moving the old file aside: "
                                  f"{again}") from None

    # -- opening --------------------------------------------------------------------------

    def _unwritable(self, reason: str, exc: BaseException | None = None) -> OutboxError:
        code = _primary_code(exc)
        hint = None if code is None else _STORAGE_HINTS.get(code)
        try:
            free = shutil.disk_usage(self.path.parent).free
        except OSError:
            free = None
        # SQLite calls a full disk "disk I/O error" when it is the -shm file that finds no room.
        if free is not None and free < _FULL_BYTES:
            hint = f"the disk holding it is full ({free // 1024} KiB free): free space on it"
        return OutboxError(f"outbox {self.path} cannot be written: {reason}" + (f" ({hint})" if hint else ""), reason)

    def _prepare_file(self) -> None:
        """Create the directory and the file, so an unwritable place fails with the OS's own reason."""
        parent = self.path.parent
        try:
            parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            blocker = next((p for p in [parent, *parent.parents] if p.exists() and not p.is_dir()), None)
            reason = f"{blocker} is not a directory" if blocker else exc.strerror or str(exc)
            raise self._unwritable(reason) from None
        existed = self.path.exists()
        try:
            # 0600: only the service reads its queue.
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise self._unwritable(exc.strerror or str(exc)) from None
        os.close(fd)
        if not existed:
            _fsync_dir(parent)
        # SQLite creates -wal and -shm beside the file, so the directory must be writable too.
        # (root passes access(2) on permission bits, and then SQLite itself will say why.)
        if not os.access(parent, os.W_OK | os.X_OK):
            raise self._unwritable(f"its directory {parent} is not writable (SQLite needs it for the -wal file)")

    def _open(self) -> sqlite3.Connection:
        self._check()
        try:
            db = sqlite3.connect(self.path, timeout=10, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as exc:
            raise self._unwritable(str(exc), exc) from None
        try:
            # WAL: appends do not block the reader, and a commit is one sequential write.
            mode = db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if mode.lower() != "wal":
                raise self._unwritable(f"SQLite cannot use write-ahead logging here (journal_mode is {mode})")
            # FULL: a commit is fsynced before append() returns, so a window the caller was
            # told is stored survives a power cut.
            db.execute("PRAGMA synchronous=FULL")
            self._migrate(db)
        except sqlite3.DatabaseError as exc:
            db.close()
            if _primary_code(exc) in _CORRUPT_CODES:
                raise _Corrupt(str(exc)) from None
            raise self._unwritable(str(exc), exc) from None
        except BaseException:
            db.close()
            raise
        return db

    def _open_read_only(self) -> sqlite3.Connection:
        """A connection that never writes, for looking at the queue beside a running agent."""
        if not self.path.is_file():
            raise OutboxError(f"outbox {self.path} does not exist (the agent has not stored a window yet)")
        self._check()
        try:
            db = sqlite3.connect(self._uri("ro"), uri=True, timeout=10, isolation_level=None,
                                 check_same_thread=False)
            db.execute("SELECT value FROM meta WHERE key = 'next_seq'").fetchone()
        except sqlite3.Error as exc:
            raise OutboxError(f"outbox {self.path} cannot be read: {exc}") from None
        return db

    def _uri(self, mode: str) -> str:
        uri = "file:" + urllib.parse.quote(str(self.path)) + f"?mode={mode}"
        # A WAL database closed cleanly has no -shm, and SQLite cannot make one on a read-only
        # filesystem; nothing can change the file there either, so it may be read as immutable.
        try:
            read_only_fs = bool(os.statvfs(self.path).f_flag & os.ST_RDONLY)
        except OSError:
            read_only_fs = False
        return uri + "&immutable=1" if read_only_fs else uri

    def _check(self) -> None:
        """Raise _Corrupt unless the file is a sound outbox (or empty, for a new one)."""
        # Read-only: the last read-write connection to close checkpoints the -wal into the
        # file and deletes it, which would alter a damaged file before it is moved aside.
        try:
            db = sqlite3.connect(self._uri("ro"), uri=True, timeout=10, isolation_level=None)
        except sqlite3.Error as exc:
            raise self._unwritable(str(exc), exc) from None
        try:
            rows = [row[0] for row in db.execute("PRAGMA quick_check").fetchall()]
            if rows != ["ok"]:
                raise _Corrupt("quick_check: " + "; ".join(rows[:3]))
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                # Not damage: a newer agent wrote it. Keep it in place for that agent.
                raise OutboxError(f"outbox {self.path} has schema version {version}, newer than this "
                                  f"edge-agent understands ({SCHEMA_VERSION}); upgrade edge-agent or move the "
                                  "file away")
            tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            if version == 0 and tables:
                raise _Corrupt(f"not an edge-agent outbox (it holds tables {', '.join(sorted(tables))})")
            if version and "windows" in tables:
                columns = {row[1] for row in db.execute("PRAGMA table_info(windows)")}
                if not _COLUMNS <= columns:
                    raise _Corrupt(f"table windows lacks {', '.join(sorted(_COLUMNS - columns))}")
        except sqlite3.DatabaseError as exc:
            if _primary_code(exc) in _CORRUPT_CODES:
                raise _Corrupt(str(exc)) from None
            raise self._unwritable(str(exc), exc) from None
        finally:
            db.close()

    def _migrate(self, db: sqlite3.Connection) -> None:
        if self._is_current(db):
            # Nothing to write, so an outbox on a disk that has since filled still opens,
            # and the windows it holds still go out.
            return
        # IMMEDIATE takes the write lock now, so a read-only file fails here, at start,
        # and not at the first window.
        db.execute("BEGIN IMMEDIATE")
        try:
            for statement in _SCHEMA:
                db.execute(statement)
            # A counter behind the stored rows could only come from a hand-edited file;
            # never hand out a seq that is still queued.
            db.execute("""UPDATE meta SET value = (SELECT MAX(seq) + 1 FROM windows)
                          WHERE key = 'next_seq' AND value <= (SELECT MAX(seq) FROM windows)""")
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise

    @staticmethod
    def _is_current(db: sqlite3.Connection) -> bool:
        if db.execute("PRAGMA user_version").fetchone()[0] != SCHEMA_VERSION:
            return False
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if not {"windows", "meta"} <= tables:
            return False
        keys = {row[0] for row in db.execute("SELECT key FROM meta")}
        if not {"next_seq", "dropped_total", "last_window_end"} <= keys:
            return False
        behind = db.execute("""SELECT COUNT(*) FROM meta WHERE key = 'next_seq'
                               AND value <= (SELECT MAX(seq) FROM windows)""").fetchone()[0]
        return not behind

    def _move_aside(self, reason: str) -> None:
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(self._clock()))
        target = self.path.with_name(f"{self.path.name}.corrupt-{stamp}")
        n = 1
        while target.exists():
            target = self.path.with_name(f"{self.path.name}.corrupt-{stamp}.{n}")
            n += 1
        try:
            # The file first: if the directory refuses, nothing has moved yet.
            os.replace(self.path, target)
            # The old -wal goes with its file: replayed onto a fresh database it would
            # bring back pages of the damaged one. Companions keep their suffix, so the
            # moved copy still opens with its own log.
            for suffix in _COMPANIONS:
                companion = Path(f"{self.path}{suffix}")
                if companion.exists():
                    os.replace(companion, f"{target}{suffix}")
        except OSError as exc:
            raise OutboxError(f"outbox {self.path} is corrupt ({reason}) and cannot be moved aside: "
                              f"{exc.strerror or exc}") from None
        _fsync_dir(self.path.parent)
        log.error("outbox %s is corrupt (%s); moved it to %s for inspection and started an empty outbox",
                  self.path, reason, target)
        self._prepare_file()

    # -- use --------------------------------------------------------------------------------

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            raise OutboxError(f"outbox {self.path} is closed")
        return self._db

    def _write(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``work(db)`` in one IMMEDIATE transaction; SQLite failures become OutboxError.

        Rows whose delete failed earlier are deleted in the same transaction.
        """
        if self.read_only:
            raise OutboxError(f"outbox {self.path} is open read-only")
        with self._lock:
            db = self._conn()
            try:
                db.execute("BEGIN IMMEDIATE")
                try:
                    result = work(db)
                    if self._unremoved:
                        db.executemany("DELETE FROM windows WHERE id = ?", [(i,) for i in self._unremoved])
                    db.execute("COMMIT")
                except BaseException:
                    if db.in_transaction:
                        db.execute("ROLLBACK")
                    raise
            except sqlite3.Error as exc:
                raise self._unwritable(str(exc), exc) from None
            self._unremoved.clear()
            return result

    def _read(self, sql: str, params: tuple[object, ...] = ()) -> list[Any]:
        with self._lock:
            try:
                return self._conn().execute(sql, params).fetchall()
            except sqlite3.Error as exc:
                raise OutboxError(f"outbox {self.path} cannot be read: {exc}") from None

    def append(self, topic: str, build: Callable[[int], Storable]) -> Pending:
        """Store one window; ``build(seq)`` returns its payload (``.to_json()``, ``.start_epoch``).

        The seq is taken, the payload built and stored, and the counter bumped in one
        transaction, so a crash at any point leaves neither a gap nor a duplicate. If
        ``build`` raises, nothing is stored and the seq is not used.
        """
        def work(db: sqlite3.Connection) -> Pending:
            seq: int = db.execute("SELECT value FROM meta WHERE key = 'next_seq'").fetchone()[0]
            payload = build(seq)
            if (built_seq := getattr(payload, "seq", seq)) != seq:
                raise ValueError(f"build({seq}) returned a payload with seq {built_seq}")
            body = payload.to_json()
            window_start = int(payload.start_epoch)
            row_id = db.execute(
                "INSERT INTO windows (seq, window_start, topic, payload, stored_at) VALUES (?, ?, ?, ?, ?)",
                (seq, window_start, topic, body, self._clock())).lastrowid
            assert row_id is not None, "sqlite3 sets lastrowid after every INSERT"
            db.execute("UPDATE meta SET value = ? WHERE key = 'next_seq'", (seq + 1,))
            window_end = window_start + int(getattr(payload, "window_s", 0))
            db.execute("UPDATE meta SET value = MAX(value, ?) WHERE key = 'last_window_end'", (window_end,))
            return Pending(row_id, topic, bytes(body), seq, window_start)

        return self._write(work)

    def pending(self, limit: int = 100, exclude: Iterable[int] = ()) -> list[Pending]:
        """Up to ``limit`` stored windows, oldest first, leaving out the ids in ``exclude`` (in flight)."""
        with self._lock:
            exclude = set(exclude) | self._unremoved
        # Filtering in Python keeps the SQL free of a variable-length IN list; the
        # in-flight set is small, so reading that many more rows costs nothing.
        rows = self._read("SELECT id, topic, payload, seq, window_start FROM windows ORDER BY seq LIMIT ?",
                          (limit + len(exclude),))
        found = [Pending(row[0], row[1], bytes(row[2]), row[3], row[4]) for row in rows if row[0] not in exclude]
        return found[:limit]

    def remove(self, row_id: int) -> None:
        """Forget a window the broker acknowledged; an unknown id (already removed or dropped) is a no-op.

        Where the disk refuses the delete (full, read-only) the id is kept in memory instead:
        ``pending()`` leaves it out, so the window is not sent again, and the next write that
        works deletes it; the next append() reports the failure.
        """
        with self._lock:
            self._unremoved.add(row_id)
        try:
            self._write(lambda db: None)
        except OutboxError:
            if self._db is None:
                raise

    def count_dropped(self, count: int) -> None:
        """Add windows lost elsewhere (held in memory past its bound) to the persisted dropped total."""
        if count:
            self._write(lambda db: db.execute(
                "UPDATE meta SET value = value + ? WHERE key = 'dropped_total'", (count,)))

    def drop_expired(self) -> int:
        """Delete windows that started more than ``max_age_s`` before now; count and log them."""
        cutoff = self._clock() - self.max_age_s

        def work(db: sqlite3.Connection) -> tuple[int, int, int, int] | None:
            """``(count, oldest start, newest start, dropped in all)``, or None when none expired."""
            count, oldest, newest = db.execute(
                "SELECT COUNT(*), MIN(window_start), MAX(window_start) FROM windows WHERE window_start < ?",
                (cutoff,)).fetchone()
            if not count:
                return None
            db.execute("DELETE FROM windows WHERE window_start < ?", (cutoff,))
            db.execute("UPDATE meta SET value = value + ? WHERE key = 'dropped_total'", (count,))
            total = db.execute("SELECT value FROM meta WHERE key = 'dropped_total'").fetchone()[0]
            return count, oldest, newest, total

        dropped = self._write(work)
        if dropped is None:
            return 0
        count, oldest, newest, total = dropped
        log.warning("outbox %s: dropped %d unsent window(s) older than %g h (window_start %s to %s); "
                    "%d dropped in all", self.path, count, self.max_age_s / 3600,
                    format_utc(oldest), format_utc(newest), total)
        return count

    @property
    def depth(self) -> int:
        """Windows waiting for the broker."""
        stored: int = self._read("SELECT COUNT(*) FROM windows")[0][0]
        return stored - len(self._unremoved)

    @property
    def dropped_total(self) -> int:
        """Windows dropped for age since this outbox file was created."""
        total: int = self._read("SELECT value FROM meta WHERE key = 'dropped_total'")[0][0]
        return total

    @property
    def last_window_end(self) -> int | None:
        """End (epoch seconds) of the latest window ever stored, or None: no window may start before it."""
        end: int = self._read("SELECT value FROM meta WHERE key = 'last_window_end'")[0][0]
        return end or None

    @property
    def next_seq(self) -> int:
        """The seq the next append() will use."""
        seq: int = self._read("SELECT value FROM meta WHERE key = 'next_seq'")[0][0]
        return seq

    def close(self) -> None:
        """Close the file; calling it again does nothing."""
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
