"""Windows, device liveness and device stats in SQL: SQLite on one server, PostgreSQL when the school has one.

One code path serves both through SQLAlchemy Core. A window is identified by
``(device, window_start)`` and stored once however often MQTT delivers it (QoS 1 is
at-least-once), so every insert is ``ON CONFLICT DO NOTHING``.

Stats are stored as sent, one row per message keyed by ``(device, at)``, ``at`` being when the
collector received it (the agent's own stamp is kept as ``sent_at``: a Pi's clock may be wrong).
Rows older than ``stats_detail_days`` are summarised per device and hour (levels averaged,
counters and peaks kept at their highest, the camera state last seen; ``summary`` true,
``samples`` the messages it stands for), and every row older than ``stats_retention_days`` is
deleted, so a 500-device school keeps about a day of minutes and a month of hours.

A SQLite store's files (the database, its -wal and -shm) are its owner's alone (0600), whatever
the umask and whatever an earlier version left: they hold every room's counts, and the web
server that publishes the dashboard has no business reading them.
"""

import itertools
import os
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Double,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    and_,
    create_engine,
    event,
    func,
    inspect,
    select,
    text,
    tuple_,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError, SQLAlchemyError

from ..common.contract import EMOTIONS, SCHEMA_VERSION, EmotionsPayload, format_utc, parse_utc
from ..common.errors import EdgeAgentError
from .sessions import Minute

# Long enough to ride out another process's write (a retention run, a second collector).
SQLITE_BUSY_TIMEOUT_MS = 10_000
POSTGRES_CONNECT_TIMEOUT_S = 10

metadata = MetaData()

windows_table = Table(
    "windows", metadata,
    Column("device", String(64), primary_key=True),
    # Epoch seconds: an integer compares and indexes the same in both databases; 64 bits outlive 2038.
    Column("window_start", BigInteger, primary_key=True, autoincrement=False),
    Column("site", String(64), nullable=False),
    Column("room", String(64), nullable=False),
    Column("window_s", Integer, nullable=False),
    Column("seq", BigInteger, nullable=False),
    Column("frames", Integer, nullable=False),
    Column("faces", Integer, nullable=False),
    Column("faces_per_frame_median", Integer, nullable=False),
    *(Column(label, Integer, nullable=False) for label in EMOTIONS),
    Column("suppressed", Boolean, nullable=False),
    Column("model", String(80), nullable=False),
    Column("received_at", Double, nullable=False),
    Index("windows_by_room", "site", "room", "window_start"),
    # The dashboard asks which rooms got windows since its last look.
    Index("windows_by_arrival", "received_at"),
)

devices_table = Table(
    "devices", metadata,
    Column("device", String(64), primary_key=True),
    Column("site", String(64), nullable=False),
    Column("room", String(64), nullable=False),
    Column("state", String(16)),
    Column("camera", String(32)),
    Column("reason", String(500)),
    Column("version", String(32)),
    Column("status_at", Double),
    Column("last_seen", Double),
)

_STATUS_COLUMNS = ("site", "room", "state", "camera", "reason", "version", "status_at")

# How an hour of stats becomes one row: levels are averaged, counters and peaks keep their highest
# (a cumulative counter's highest is its last; an hour's hottest minute is what matters), the
# camera keeps its last state, a failing outbox or an unsynchronised clock anywhere marks the hour.
STATS_MEAN = ("fps", "detect_ms", "classify_ms", "faces_per_frame", "rss_mb", "load_1m")
STATS_MAX = ("sent_at", "uptime_s", "outbox_depth", "dropped_windows", "frames_dropped", "windows_held",
             "cpu_temp_c", "clock_ahead_s")
STATS_ANY = ("outbox_failing",)
STATS_ALL = ("clock_synced",)
STATS_LAST = ("camera",)
STATS_FIELDS = STATS_MEAN + STATS_MAX + STATS_ANY + STATS_ALL + STATS_LAST
SUMMARY_S = 3600

stats_table = Table(
    "stats", metadata,
    Column("device", String(64), primary_key=True),
    Column("at", BigInteger, primary_key=True, autoincrement=False),
    Column("summary", Boolean, nullable=False),
    Column("samples", Integer, nullable=False),
    Column("sent_at", BigInteger),
    *(Column(name, Double) for name in ("uptime_s", "fps", "detect_ms", "classify_ms", "faces_per_frame",
                                        "cpu_temp_c", "rss_mb", "clock_ahead_s")),
    *(Column(name, BigInteger) for name in ("outbox_depth", "dropped_windows", "frames_dropped", "windows_held")),
    Column("camera", String(32)),
    Column("outbox_failing", Boolean),
    Column("clock_synced", Boolean),
    # Added after the first release: a store made before gets it at start (Store._add_new_columns).
    Column("load_1m", Double),
    # Retention and the hourly summaries select rows by time, across devices.
    Index("stats_by_time", "at"),
)


class StoreError(EdgeAgentError):
    """The database cannot be reached or written; the text names it (password masked) and says why."""


@dataclass(frozen=True)
class Stats:
    """One stats message as sent (``summary`` false), or an hour of them summarised.

    The fields are in the stats table's column order: a row read is ``Stats(*row)``.
    """

    device: str
    at: int
    summary: bool
    samples: int
    sent_at: int | None = None
    uptime_s: float | None = None
    fps: float | None = None
    detect_ms: float | None = None
    classify_ms: float | None = None
    faces_per_frame: float | None = None
    cpu_temp_c: float | None = None
    rss_mb: float | None = None
    clock_ahead_s: float | None = None
    outbox_depth: int | None = None
    dropped_windows: int | None = None
    frames_dropped: int | None = None
    windows_held: int | None = None
    camera: str | None = None
    outbox_failing: bool | None = None
    clock_synced: bool | None = None
    load_1m: float | None = None


@dataclass(frozen=True)
class FleetStats:
    """A device's latest stats, and two earlier figures to tell a trend from a level."""

    latest: Stats | None
    outbox_before: int | None
    dropped_before: int | None


@dataclass(frozen=True)
class Device:
    device: str
    site: str
    room: str
    state: str | None
    camera: str | None
    last_seen: float | None
    status_at: float | None
    reason: str | None = None
    version: str | None = None


def _reason(exc):
    if isinstance(exc, DBAPIError) and exc.orig is not None:
        exc = exc.orig
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


def _set_sqlite_pragmas(dbapi_connection, connection_record):
    cursor = dbapi_connection.cursor()
    # WAL lets the chart server read while the collector writes; NORMAL is durable across a
    # process crash and loses at most the last commits on power loss, which MQTT redelivers.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cursor.close()


class Store:
    """Windows and devices in the database at ``url`` (``sqlite:///path`` or ``postgresql+psycopg://...``)."""

    def __init__(self, url: str, *, retention_days: float | None = None, stats_retention_days: float = 30.0,
                 stats_detail_days: float = 1.0):
        self.retention_days = retention_days
        self.stats_retention_days = stats_retention_days
        self.stats_detail_days = stats_detail_days
        try:
            parsed = make_url(url)
        except ArgumentError as exc:
            raise StoreError(f"store URL {url!r} is not a database URL: {exc}") from None
        if parsed.drivername == "postgresql":
            # The bare name means psycopg2 to SQLAlchemy; psycopg 3 is the driver we install.
            parsed = parsed.set(drivername="postgresql+psycopg")
        self.url = parsed.render_as_string(hide_password=True)
        self._password = parsed.password
        self.dialect = parsed.get_backend_name()
        self._sqlite_path = None
        # Both dialects' inserts have on_conflict_do_nothing/_update, which the shared ``insert`` lacks.
        self._insert: Callable[[Table], sqlite.Insert | postgresql.Insert]
        if self.dialect == "sqlite":
            self._insert = sqlite.insert
            self._prepare_sqlite_file(parsed.database)
            kwargs = {}
        elif self.dialect == "postgresql":
            self._insert = postgresql.insert
            # A server restarted under us leaves dead pooled connections; test each before use.
            kwargs = {"pool_pre_ping": True, "connect_args": {"connect_timeout": POSTGRES_CONNECT_TIMEOUT_S}}
        else:
            raise StoreError(f"store {self.url}: only sqlite:/// and postgresql+psycopg:// URLs are supported")
        try:
            self.engine = create_engine(parsed, **kwargs)
        except (NoSuchModuleError, ModuleNotFoundError) as exc:
            raise StoreError(f"store {self.url}: the database driver is not installed ({_reason(exc)}); "
                             "PostgreSQL needs the psycopg package") from None
        if self.dialect == "sqlite":
            event.listen(self.engine, "connect", _set_sqlite_pragmas)
        with self._guard("cannot open the store"), self.engine.begin() as connection:
            metadata.create_all(connection)
            # create_all adds no column or index to a table that exists: a store made by an earlier version.
            self._add_new_columns(connection)
            for table in metadata.sorted_tables:
                for index in table.indexes:
                    index.create(connection, checkfirst=True)

    @staticmethod
    def _add_new_columns(connection):
        """Columns added since a store was made, appended empty (all are nullable): its rows are kept."""
        found = inspect(connection)
        for table in metadata.sorted_tables:
            have = {column["name"] for column in found.get_columns(table.name)}
            for column in table.columns:
                if column.name not in have:
                    kind = column.type.compile(dialect=connection.dialect)
                    connection.execute(text(f"ALTER TABLE {table.name} ADD COLUMN {column.name} {kind}"))

    @classmethod
    def from_config(cls, config, url: str | None = None) -> "Store":
        """The store a ``StoreConfig`` section describes (``url`` instead of its own, when given)."""
        return cls(url or config.resolved_url(), retention_days=config.retention_days,
                   stats_retention_days=config.stats_retention_days, stats_detail_days=config.stats_detail_days)

    def _prepare_sqlite_file(self, database):
        if not database or database == ":memory:":
            return
        path = Path(database).resolve()
        self._sqlite_path = path
        if not path.parent.is_dir():
            raise StoreError(f"cannot open the store {self.url}: directory {path.parent} does not exist")
        # SQLite gives -wal and -shm the database file's mode, so a private database keeps them so.
        try:
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
        except OSError:
            return  # read-only or someone else's: opening it says why, in the store's words
        for each in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
            try:
                status = each.stat()
                if status.st_mode & 0o077 and status.st_uid == os.geteuid():
                    os.chmod(each, 0o600)
            except FileNotFoundError:
                pass

    @contextmanager
    def _guard(self, action):
        try:
            yield
        except SQLAlchemyError as exc:
            reason = _reason(exc)
            if self._password:
                reason = reason.replace(self._password, "***")
            raise StoreError(f"{action} {self.url}: {reason}") from None

    # -- windows ---------------------------------------------------------------------------

    def add_windows(self, payloads, *, received_at=None):
        """Store many windows in one transaction; returns how many were not stored before."""
        received_at = time.time() if received_at is None else received_at
        rows = {}
        for payload in payloads:
            row = _window_row(payload, received_at)
            rows.setdefault((row["device"], row["window_start"]), row)
        if not rows:
            return 0
        # RETURNING counts the rows really inserted: psycopg reports no rowcount for a batch.
        statement = (self._insert(windows_table)
                     .on_conflict_do_nothing(index_elements=["device", "window_start"])
                     .returning(windows_table.c.device))
        with self._guard("cannot write windows to"), self.engine.begin() as connection:
            return len(connection.execute(statement, list(rows.values())).all())

    def windows(self, site, room, start=None, end=None):
        """One room's windows as payloads, by start then device; ``start`` inclusive, ``end`` exclusive."""
        query = select(windows_table).where(windows_table.c.site == site, windows_table.c.room == room)
        if start is not None:
            query = query.where(windows_table.c.window_start >= start)
        if end is not None:
            query = query.where(windows_table.c.window_start < end)
        query = query.order_by(windows_table.c.window_start, windows_table.c.device)
        with self._guard("cannot read windows from"), self.engine.connect() as connection:
            return [_window_payload(row) for row in connection.execute(query).mappings()]

    def room_minutes(self, site: str, room: str, start: float | None = None, end: float | None = None) -> list[Minute]:
        """The room's minutes with faces counted, summed over its devices, by start; ``end`` exclusive.

        A window suppressed or without faces adds nothing; a slot where no device counted any
        face is left out, so gaps stay gaps.
        """
        table = windows_table
        counted = and_(~table.c.suppressed, table.c.faces > 0)
        query = (select(table.c.window_start, func.max(table.c.window_s).label("window_s"),
                        *(func.sum(table.c[label]).label(label) for label in EMOTIONS))
                 .where(table.c.site == site, table.c.room == room, counted)
                 .group_by(table.c.window_start).order_by(table.c.window_start))
        if start is not None:
            query = query.where(table.c.window_start >= start)
        if end is not None:
            query = query.where(table.c.window_start < end)
        with self._guard("cannot read windows from"), self.engine.connect() as connection:
            return [Minute(row[0], row[1], dict(zip(EMOTIONS, map(int, row[2:]), strict=True)))
                    for row in connection.execute(query)]

    def rooms_changed(self, since: float) -> dict[tuple[str, str], int]:
        """``{(site, room): earliest window_start}`` of the windows received at or after ``since``."""
        table = windows_table
        # Grouped here, not in SQL: SQLite would group along windows_by_room, reading every window.
        query = select(table.c.site, table.c.room, table.c.window_start).where(table.c.received_at >= since)
        changed: dict[tuple[str, str], int] = {}
        with self._guard("cannot read windows from"), self.engine.connect() as connection:
            for site, room, start in connection.execute(query):
                changed[site, room] = min(start, changed.get((site, room), start))
        return changed

    def rooms(self):
        """``(site, room)`` of every room that has windows, sorted."""
        query = (select(windows_table.c.site, windows_table.c.room).distinct()
                 .order_by(windows_table.c.site, windows_table.c.room))
        with self._guard("cannot read rooms from"), self.engine.connect() as connection:
            return [(row.site, row.room) for row in connection.execute(query)]

    def last_window_start(self, site, room):
        """Epoch start of the room's newest window, or None when it has none."""
        query = select(func.max(windows_table.c.window_start)).where(windows_table.c.site == site,
                                                                      windows_table.c.room == room)
        with self._guard("cannot read windows from"), self.engine.connect() as connection:
            return connection.execute(query).scalar_one()

    def count_windows(self):
        with self._guard("cannot count windows in"), self.engine.connect() as connection:
            return connection.execute(select(func.count()).select_from(windows_table)).scalar_one()

    def apply_retention(self, now=None):
        """Delete windows that started more than ``retention_days`` before ``now``; returns how many."""
        if self.retention_days is None:
            return 0
        now = time.time() if now is None else now
        cutoff = now - self.retention_days * 86400
        statement = windows_table.delete().where(windows_table.c.window_start < cutoff)
        with self._guard("cannot delete old windows from"), self.engine.begin() as connection:
            return connection.execute(statement).rowcount

    # -- devices ---------------------------------------------------------------------------

    def set_status(self, payload, *, site, room, received_at):
        values = {"device": payload.device, "site": site, "room": room, "state": payload.state,
                  "camera": payload.camera, "reason": payload.reason, "version": payload.version,
                  "status_at": received_at}
        self._upsert_devices([values], _STATUS_COLUMNS)

    def touch(self, device, *, site, room, seen_at):
        self.touch_many({device: (site, room)}, seen_at=seen_at)

    def touch_many(self, devices, *, seen_at):
        """Mark ``{device: (site, room)}`` seen, all in one transaction: a backlog batch names hundreds."""
        rows = [{"device": device, "site": site, "room": room, "last_seen": seen_at}
                for device, (site, room) in devices.items()]
        if rows:
            self._upsert_devices(rows, ("site", "room", "last_seen"))

    def _upsert_devices(self, rows, columns):
        statement = self._insert(devices_table)
        statement = statement.on_conflict_do_update(
            index_elements=["device"], set_={name: statement.excluded[name] for name in columns})
        with self._guard("cannot write device state to"), self.engine.begin() as connection:
            connection.execute(statement, rows)

    def devices(self):
        query = select(devices_table).order_by(devices_table.c.device)
        with self._guard("cannot read devices from"), self.engine.connect() as connection:
            return [Device(**row) for row in connection.execute(query).mappings()]

    # -- stats -----------------------------------------------------------------------------

    def add_stats(self, items, *, received_at: float) -> int:
        """Store ``(device, StatsPayload)`` pairs as received at ``received_at``; returns how many were new.

        Two messages of one device in the same second keep the first: the agent sends one a minute.
        """
        rows: dict[str, dict[str, object]] = {}
        for device, payload in items:
            row = {"device": device, "at": int(received_at), "summary": False, "samples": 1,
                   "sent_at": parse_utc(payload.t)}
            row.update({name: getattr(payload, name) for name in STATS_FIELDS if name != "sent_at"})
            rows.setdefault(device, row)
        if not rows:
            return 0
        statement = (self._insert(stats_table).on_conflict_do_nothing(index_elements=["device", "at"])
                     .returning(stats_table.c.device))
        with self._guard("cannot write stats to"), self.engine.begin() as connection:
            return len(connection.execute(statement, list(rows.values())).all())

    def stats(self, device: str | None = None, start: float | None = None, end: float | None = None) -> list[Stats]:
        """Stats rows by device then time, of one device or all; ``start`` inclusive, ``end`` exclusive."""
        query = select(stats_table)
        if device is not None:
            query = query.where(stats_table.c.device == device)
        if start is not None:
            query = query.where(stats_table.c.at >= start)
        if end is not None:
            query = query.where(stats_table.c.at < end)
        query = query.order_by(stats_table.c.device, stats_table.c.at)
        with self._guard("cannot read stats from"), self.engine.connect() as connection:
            return [Stats(*row) for row in connection.execute(query)]

    def stats_series(self, device: str, start: int, end: int, bucket_s: int, fields) -> dict[str, list]:
        """``{field: [(bucket's middle, value or None)]}`` of a device's stats in ``[start, end)``, summarised in
        the database per ``bucket_s`` seconds by the STATS_* rules; levels and peaks only (STATS_MEAN, STATS_MAX)."""
        table = stats_table
        bucket = ((table.c.at - start) // bucket_s).label("bucket")
        columns = [(func.avg if name in STATS_MEAN else func.max)(table.c[name]) for name in fields]
        query = (select(bucket, *columns).where(table.c.device == device, table.c.at >= start, table.c.at < end)
                 .group_by(bucket))
        with self._guard("cannot read stats from"), self.engine.connect() as connection:
            found = {row[0]: row[1:] for row in connection.execute(query)}
        count = max(1, -(-(end - start) // bucket_s))
        middles = [start + (index + 0.5) * bucket_s for index in range(count)]
        return {name: [(middle, found[index][position] if index in found else None)
                       for index, middle in enumerate(middles)]
                for position, name in enumerate(fields)}

    def fleet_stats(self, now: float, outbox_since_s: float = 600, dropped_since_s: float = 86400) -> dict:
        """``{device: FleetStats}`` for every device with stats: its newest row, its outbox depth in its first
        row of the last ``outbox_since_s`` and its dropped-window count in its first of the last
        ``dropped_since_s``, all in one statement of index look-ups."""
        latest, earlier = stats_table, stats_table.alias("earlier")

        def first_since(column, seconds):
            return (select(column).where(earlier.c.device == latest.c.device, earlier.c.at >= now - seconds)
                    .order_by(earlier.c.at).limit(1).scalar_subquery())

        # Two statements, each of index look-ups: as one, SQLite reads every stats row to join them.
        newest = select(devices_table.c.device, select(func.max(earlier.c.at))
                        .where(earlier.c.device == devices_table.c.device).scalar_subquery())
        with self._guard("cannot read stats from"), self.engine.connect() as connection:
            keys = [(device, at) for device, at in connection.execute(newest) if at is not None]
            if not keys:
                return {}
            query = select(latest, first_since(earlier.c.outbox_depth, outbox_since_s),
                           first_since(earlier.c.dropped_windows, dropped_since_s)
                           ).where(tuple_(latest.c.device, latest.c.at).in_(keys))
            rows = connection.execute(query).all()
        return {row[0]: FleetStats(Stats(*row[:-2]), row[-2], row[-1]) for row in rows}

    def prune_stats(self, now: float | None = None) -> tuple[int, int]:
        """Delete stats past retention, then summarise per hour those past the detail period.

        Returns ``(rows summarised, rows deleted)``. Each hour is its own transaction, so a
        writer waiting for the database waits for one hour of rows at most.
        """
        now = time.time() if now is None else now
        table = stats_table
        with self._guard("cannot delete old stats from"), self.engine.begin() as connection:
            deleted = connection.execute(
                table.delete().where(table.c.at < now - self.stats_retention_days * 86400)).rowcount
        cutoff = int(now - self.stats_detail_days * 86400) // SUMMARY_S * SUMMARY_S
        summarised = 0
        while True:
            with self._guard("cannot summarise stats in"), self.engine.begin() as connection:
                first = connection.execute(select(func.min(table.c.at)).where(
                    ~table.c.summary, table.c.at < cutoff)).scalar_one()
                if first is None:
                    return summarised, deleted
                hour = first // SUMMARY_S * SUMMARY_S
                in_hour = (~table.c.summary, table.c.at >= hour, table.c.at < hour + SUMMARY_S)
                rows = [Stats(*row) for row in connection.execute(
                    select(table).where(*in_hour).order_by(table.c.device, table.c.at))]
                connection.execute(table.delete().where(*in_hour))
                # A summary already there (the clock stepped back over an hour done before) is kept.
                connection.execute(self._insert(table).on_conflict_do_nothing(index_elements=["device", "at"]),
                                   [summarise_stats(device, hour, list(group))
                                    for device, group in itertools.groupby(rows, key=lambda row: row.device)])
                summarised += len(rows)

    def device_models(self) -> dict[str, str]:
        """``{device: model}`` of each device's newest window, one index look-up per device."""
        newest = (select(windows_table.c.model).where(windows_table.c.device == devices_table.c.device)
                  .order_by(windows_table.c.window_start.desc()).limit(1).scalar_subquery())
        with self._guard("cannot read windows from"), self.engine.connect() as connection:
            return {device: model for device, model in connection.execute(select(devices_table.c.device, newest))
                    if model is not None}

    def size_bytes(self) -> int | None:
        """What the store takes on disk: a SQLite file with its write-ahead log, or PostgreSQL's database."""
        if self.dialect == "postgresql":
            with self._guard("cannot read the size of"), self.engine.connect() as connection:
                return connection.execute(select(func.pg_database_size(func.current_database()))).scalar_one()
        if self._sqlite_path is None:
            return None
        total = 0
        for path in (self._sqlite_path, self._sqlite_path.with_name(self._sqlite_path.name + "-wal")):
            try:
                total += path.stat().st_size
            except FileNotFoundError:
                pass  # no write-ahead log between checkpoints
        return total

    def close(self):
        self.engine.dispose()


def summarise_stats(device: str, at: int, rows: list[Stats]) -> dict:
    """One row standing for a device's ``rows`` (in time order, from ``at`` on), by the STATS_* rules."""
    summary = {"device": device, "at": at, "summary": True, "samples": sum(row.samples for row in rows)}
    for name in STATS_FIELDS:
        values = [value for row in rows if (value := getattr(row, name)) is not None]
        if not values:
            summary[name] = None
        elif name in STATS_MEAN:
            summary[name] = sum(values) / len(values)
        elif name in STATS_MAX:
            summary[name] = max(values)
        elif name in STATS_ANY:
            summary[name] = any(values)
        elif name in STATS_ALL:
            summary[name] = all(values)
        else:
            summary[name] = values[-1]
    return summary


def _window_row(payload, received_at):
    row = {
        "device": payload.device, "site": payload.site, "room": payload.room,
        "window_start": payload.start_epoch, "window_s": payload.window_s, "seq": payload.seq,
        "frames": payload.frames, "faces": payload.faces,
        "faces_per_frame_median": payload.faces_per_frame_median,
        "suppressed": payload.suppressed, "model": payload.model, "received_at": received_at,
    }
    row.update(payload.counts.as_dict())
    return row


def _window_payload(row):
    return EmotionsPayload.model_validate({
        "schema": SCHEMA_VERSION, "device": row["device"], "site": row["site"], "room": row["room"],
        "window_start": format_utc(row["window_start"]), "window_s": row["window_s"], "seq": row["seq"],
        "frames": row["frames"], "faces": row["faces"],
        "faces_per_frame_median": row["faces_per_frame_median"],
        "counts": {label: row[label] for label in EMOTIONS},
        "suppressed": row["suppressed"], "model": row["model"],
    })
