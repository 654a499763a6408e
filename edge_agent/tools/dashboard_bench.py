"""``edge-collector bench dashboard``: the dashboard of a big school, against the previous way of drawing it.

A store (SQLite) holding a term of a school: ``--rooms`` rooms, one camera each, ``--weeks`` weeks
of ``--lessons-per-day`` 45-minute lessons every weekday (08:00, 09:00, ... with breaks of at
least 15 minutes, ``sessions.gap_min`` 10), ``--in-class`` rooms in a lesson now, and every
device's stats of the last month (a day of minutes, then hours; a few devices with problems).
Then, with the clock moving a minute per refresh:

- the first build (every page of the term, once after an upgrade);
- a refresh: one new window for each running lesson, one stats message for every device, the
  CPU seconds the refresh takes, and what the previous way (every running lesson's three
  matplotlib PNGs drawn again each refresh, in the collector's own process) takes for the same;
- the index and a running room's page fetched from ``edge-collector serve`` with their images:
  milliseconds and kilobytes;
- windows published at a steady rate through a real mosquitto into the same store: the time
  from publish to commit (p50, p95) with no drawing, with the dashboard worker process
  refreshing beside it, and with the previous way drawing in the collector's process.

Figures are printed as a table, or JSON with ``--json``. Not a test: nothing is asserted.
"""

import argparse
import datetime as dt
import json
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from contextlib import ExitStack
from html.parser import HTMLParser
from pathlib import Path

from sqlalchemy import insert

from ..collector.charts import default_title, draw_interest, draw_shares, pyplot
from ..collector.config import parse_collector_config
from ..collector.daemon import DashboardWorker
from ..collector.dashboard import Dashboard
from ..collector.sessions import Session
from ..collector.store import Store, devices_table, stats_table, windows_table
from ..common.charts import draw_interest_pie
from ..common.cli import positive_int
from ..common.contract import DEFAULT_INTERESTED
from .collector_bench import device_names, live, mosquitto

SITE = "school"
LESSON_MIN = 45
LESSON_HOURS = (8, 9, 10, 11, 13, 14, 15)
GAP_MIN = 10
RUNNING_FOR_MIN = 20
# Devices given a problem, in this order, from the first room on: the fleet table's top rows.
PROBLEMS = (("offline", 3), ("stalled", 2), ("hot", 2), ("slow", 2), ("outbox", 1), ("dropped", 1))
INSERT_CHUNK = 20_000


def _counts(rng, faces, interest):
    interested = round(faces * interest)
    rest = faces - interested
    happy, surprise = round(interested * 0.3), round(interested * 0.1)
    sad, angry, fear = round(rest * 0.5), round(rest * 0.3), round(rest * 0.15)
    return {"angry": angry, "disgust": rest - sad - angry - fear, "fear": fear, "happy": happy, "sad": sad,
            "surprise": surprise, "neutral": interested - happy - surprise}


def _window_row(rng, device, room, start, interest, received_at):
    faces = rng.randint(900, 1800)
    counts = _counts(rng, faces, max(0.05, min(0.95, interest + rng.uniform(-0.12, 0.12))))
    return {"device": device, "window_start": start, "site": SITE, "room": room, "window_s": 60, "seq": 0,
            "frames": 60, "faces": faces, "faces_per_frame_median": faces // 60, **counts, "suppressed": False,
            "model": "bench", "received_at": received_at}


def _stats_row(rng, device, at, problem, summary=False):
    row = {"device": device, "at": at, "summary": summary, "samples": 60 if summary else 1, "sent_at": at,
           "uptime_s": 86400.0, "fps": 1.0 - rng.uniform(0, 0.04), "detect_ms": rng.uniform(280, 340),
           "classify_ms": rng.uniform(2, 4), "faces_per_frame": rng.uniform(10, 30), "cpu_temp_c": rng.uniform(48, 62),
           "rss_mb": rng.uniform(170, 190), "clock_ahead_s": 0.0, "outbox_depth": 0, "dropped_windows": 0,
           "frames_dropped": 0, "windows_held": 0, "camera": "running", "outbox_failing": False,
           "clock_synced": True}
    if problem == "stalled":
        row["camera"] = "stalled"
    elif problem == "hot":
        row["cpu_temp_c"] = rng.uniform(82, 88)
    elif problem == "slow":
        row["fps"] = rng.uniform(0.4, 0.6)
    elif problem == "outbox":
        row["outbox_depth"] = int((at % 86400) // 60)
    elif problem == "dropped":
        row["dropped_windows"] = int((at % 86400) // 3600)
    return row


class School:
    """The bench's store: built once, then a minute at a time."""

    def __init__(self, url, *, rooms, in_class, weeks, lessons_per_day, seed=1):
        self.store = Store(url)
        self.rooms = [f"r{number:03d}" for number in range(rooms)]
        self.in_class = self.rooms[:in_class]
        self.weeks = weeks
        self.hours = LESSON_HOURS[:lessons_per_day]
        self.rng = random.Random(seed)
        self.level = {room: self.rng.uniform(0.45, 0.85) for room in self.rooms}
        problems = [problem for problem, count in PROBLEMS for _ in range(count)]
        self.problem = {f"pi-{room}": problem for room, problem in zip(self.rooms, problems, strict=False)}
        self.now = int(time.time()) // 60 * 60
        self.windows = 0

    def _insert(self, table, rows):
        with self.store.engine.begin() as connection:
            for first in range(0, len(rows), INSERT_CHUNK):
                connection.execute(insert(table), rows[first:first + INSERT_CHUNK])

    def build(self, progress):
        today = self.now // 86400 * 86400
        days = [today - day * 86400 for day in range(self.weeks * 7, 0, -1)
                if dt.datetime.fromtimestamp(today - day * 86400, dt.UTC).weekday() < 5]
        # Room by room: each room's rows land together in the indexes, which stay fast to fill.
        for number, room in enumerate(self.rooms, 1):
            rows = []
            for midnight in days:
                for hour in self.hours:
                    start = midnight + hour * 3600
                    interest = self.level[room] + self.rng.uniform(-0.15, 0.15)
                    rows += [_window_row(self.rng, f"pi-{room}", room, start + 60 * m, interest, start + 60 * m + 60)
                             for m in range(LESSON_MIN)]
            self._insert(windows_table, rows)
            self.windows += len(rows)
            if number % 25 == 0 or number == len(self.rooms):
                progress(f"{self.windows:,} windows, {number} of {len(self.rooms)} rooms")
        self.lesson_started = self.now - RUNNING_FOR_MIN * 60
        running = [_window_row(self.rng, f"pi-{room}", room, self.lesson_started + 60 * m, self.level[room],
                               self.lesson_started + 60 * m + 60)
                   for room in self.in_class for m in range(RUNNING_FOR_MIN)]
        self._insert(windows_table, running)
        self.windows += len(running)
        stats = []
        for room in self.rooms:
            device = f"pi-{room}"
            problem = self.problem.get(device)
            if problem == "offline":
                continue
            for hour in range(self.now - 30 * 86400, self.now - 86400, 3600):
                stats.append(_stats_row(self.rng, device, hour // 3600 * 3600, problem, summary=True))
            stats += [_stats_row(self.rng, device, at, problem) for at in range(self.now - 86400, self.now, 60)]
        self._insert(stats_table, stats)
        self.stats = len(stats)
        self._insert(devices_table, [
            {"device": f"pi-{room}", "site": SITE, "room": room,
             "state": "offline" if self.problem.get(f"pi-{room}") == "offline" else "online", "camera": "running",
             "version": "0.1.0", "status_at": self.now - 86400,
             "last_seen": self.now - (7200 if self.problem.get(f"pi-{room}") == "offline" else 30)}
            for room in self.rooms])

    def minute(self):
        """A minute on: a window from every running lesson (received now) and stats from every device."""
        minute_start = self.now
        self.now += 60
        self._insert(windows_table, [_window_row(self.rng, f"pi-{room}", room, minute_start, self.level[room],
                                                 time.time()) for room in self.in_class])
        self._insert(stats_table, [_stats_row(self.rng, f"pi-{room}", self.now, self.problem.get(f"pi-{room}"))
                                   for room in self.rooms if self.problem.get(f"pi-{room}") != "offline"])
        self.store.touch_many({f"pi-{room}": (SITE, room) for room in self.rooms
                               if self.problem.get(f"pi-{room}") != "offline"}, seen_at=self.now)

    def running_sessions(self):
        return [Session(SITE, room, self.lesson_started, self.now,
                        self.store.room_minutes(SITE, room, start=self.lesson_started)) for room in self.in_class]


def previous_refresh(sessions, folder, interested=DEFAULT_INTERESTED, tz=dt.UTC):
    """The previous way's drawing per refresh: each running lesson's interest, shares and pie as PNGs (matplotlib)."""
    plt = pyplot()
    for index, session in enumerate(sessions):
        charts = (((11, 4), lambda ax, s=session: draw_interest(ax, s, interested, tz)),
                  ((11, 4), lambda ax, s=session: draw_shares(ax, s, tz)),
                  ((5.5, 5), lambda ax, s=session: draw_interest_pie(ax, s.totals(), interested)))
        for kind, (size, draw) in enumerate(charts):
            fig, ax = plt.subplots(figsize=size)
            try:
                draw(ax)
                fig.suptitle(default_title(session, tz))
                fig.tight_layout()
                fig.savefig(folder / f"{index}-{kind}.png", dpi=120)
            finally:
                plt.close(fig)


def _cpu(action):
    began = time.process_time()
    action()
    return time.process_time() - began


class _Sources(HTMLParser):
    def __init__(self):
        super().__init__()
        self.sources = []

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.sources.append(dict(attrs)["src"])


def fetch_page(base, page, repeats=10):
    """``(median ms, largest ms, bytes)`` to fetch ``page`` and every image it shows, one after another."""
    times, size = [], 0
    for _ in range(repeats):
        began = time.perf_counter()
        html = urllib.request.urlopen(base + page, timeout=30).read()
        parser = _Sources()
        parser.feed(html.decode())
        folder = page.rsplit("/", 1)[0] + "/" if "/" in page else ""
        size = len(html) + sum(len(urllib.request.urlopen(base + folder + source, timeout=30).read())
                               for source in parser.sources)
        times.append((time.perf_counter() - began) * 1000)
    return statistics.median(times), max(times), size


def _serve(folder):
    server = subprocess.Popen([sys.executable, "-m", "edge_agent.collector.cli", "serve", "--dir", str(folder),
                               "--port", "0"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    return server, server.stdout.readline().split(" at ")[1].split()[0]


def _wait_for_refreshes(index, count, timeout=1800):
    """Wait until ``index`` has been written ``count`` more times (each refresh writes it once)."""
    seen, deadline = index.stat().st_mtime_ns if index.exists() else 0, time.monotonic() + timeout
    while count and time.monotonic() < deadline:
        time.sleep(0.5)
        now = index.stat().st_mtime_ns if index.exists() else 0
        if now != seen:
            seen, count = now, count - 1


def ingest_latency(url, out, config_text, sessions, args, log):
    """p50/p95 publish to commit: with no drawing, beside the dashboard worker, beside the previous way."""
    figures = {}
    with mosquitto() as port:
        def measure(name):
            names = device_names(f"i{uuid.uuid4().hex[:5]}", args.ingest_devices)
            store = Store(url)
            try:
                result = live("ours", store, port, names, args.ingest_windows, args.rate, timeout=600)
            finally:
                store.close()
            figures[name] = {"p50_ms": result["p50_ms"], "p95_ms": result["p95_ms"], "windows": result["stored"]}
            log(f"ingest {name}: p50 {result['p50_ms']} ms, p95 {result['p95_ms']} ms")

        measure("alone")
        config = parse_collector_config(config_text)
        worker = DashboardWorker(config)
        worker.start()
        try:
            log("dashboard worker: waiting for its first pass over the term")
            _wait_for_refreshes(out / "index.html", 1)
            measure("beside the dashboard worker")
        finally:
            worker.stop()
        stop = threading.Event()

        def draw_continuously():
            with tempfile.TemporaryDirectory(prefix="bench-previous-") as charts:
                while not stop.is_set():
                    previous_refresh(sessions, Path(charts))

        drawer = threading.Thread(target=draw_continuously, name="previous way", daemon=True)
        drawer.start()
        try:
            measure("beside the previous way")
        finally:
            stop.set()
            drawer.join()
    return figures


def bench(args, log):
    results = {"rooms": args.rooms, "in_class": args.in_class, "weeks": args.weeks,
               "lessons_per_day": args.lessons_per_day}
    with ExitStack() as stack:
        folder = Path(args.keep) if args.keep else Path(stack.enter_context(
            tempfile.TemporaryDirectory(prefix="bench-dashboard-")))
        folder.mkdir(parents=True, exist_ok=True)
        url = f"sqlite:///{folder / 'collector.sqlite3'}"
        out = folder / "www"
        school = School(url, rooms=args.rooms, in_class=args.in_class, weeks=args.weeks,
                        lessons_per_day=args.lessons_per_day)
        began = time.monotonic()
        school.build(lambda text: log(f"store: {text}"))
        results["store"] = {"windows": school.windows, "stats_rows": school.stats,
                            "seconds": round(time.monotonic() - began, 1)}
        config_text = (f"store:\n  url: {url}\nsessions:\n  gap_min: {GAP_MIN}\n"
                       f"dashboard:\n  output_dir: {out}\n  refresh_s: 5\n  history_weeks: {args.weeks}\n"
                       "  timezone: UTC\nlogging:\n  level: WARNING\n")
        dashboard = Dashboard.from_config(parse_collector_config(config_text))
        log("first build: every page of the term")
        first = dashboard.build(school.store, now=school.now)
        results["first_build"] = {"seconds": round(first.seconds, 1), "cpu_s": round(first.cpu_seconds, 1),
                                  "lessons": first.lessons, "pages": first.pages, "charts": first.charts_drawn}
        log(f"first build: {first}")
        refreshes = []
        for _ in range(args.minutes):
            school.minute()
            refreshes.append(dashboard.build(school.store, now=school.now))
            log(f"refresh: {refreshes[-1]}")
        cpu = [r.cpu_seconds for r in refreshes]
        results["refresh"] = {"cpu_s_mean": round(statistics.mean(cpu), 2), "cpu_s_max": round(max(cpu), 2),
                              "pages": refreshes[-1].pages, "charts": refreshes[-1].charts_drawn}
        sessions = school.running_sessions()
        with tempfile.TemporaryDirectory(prefix="bench-previous-") as charts:
            previous = _cpu(lambda: previous_refresh(sessions, Path(charts)))
        results["previous_refresh"] = {"cpu_s": round(previous, 1), "charts": 3 * len(sessions)}
        log(f"previous way: {previous:.1f} s CPU for {3 * len(sessions)} PNGs")
        server, base = _serve(out)
        try:
            room = f"rooms/{SITE}/{school.in_class[0]}.html"
            for name, page in (("index", "index.html"), ("room", room)):
                median, largest, size = fetch_page(base, page)
                results[name] = {"ms_median": round(median, 1), "ms_max": round(largest, 1), "kb": round(size / 1000)}
                log(f"{name}: {results[name]}")
        finally:
            server.terminate()
            server.wait(10)
        school.store.close()
        if args.rate:
            results["ingest"] = ingest_latency(url, out, config_text, sessions, args, log)
    return results


def format_results(r):
    lines = [
        f"school: {r['rooms']} rooms, {r['in_class']} in a lesson, {r['weeks']} weeks of {r['lessons_per_day']} "
        f"lessons a day: {r['store']['windows']:,} windows, {r['store']['stats_rows']:,} stats rows "
        f"(made in {r['store']['seconds']} s)",
        f"first build: {r['first_build']['lessons']:,} lessons, {r['first_build']['pages']:,} pages and "
        f"{r['first_build']['charts']:,} charts in {r['first_build']['seconds']} s ({r['first_build']['cpu_s']} s CPU)",
        f"refresh, a minute on: {r['refresh']['cpu_s_mean']} s CPU (at most {r['refresh']['cpu_s_max']}), "
        f"{r['refresh']['pages']} pages and {r['refresh']['charts']} charts written",
        f"previous way, per refresh: {r['previous_refresh']['cpu_s']} s CPU for {r['previous_refresh']['charts']} "
        "PNGs of the running lessons alone",
        f"index: {r['index']['kb']} KB, served in {r['index']['ms_median']} ms (at most {r['index']['ms_max']})",
        f"room page with its images: {r['room']['kb']} KB, served in {r['room']['ms_median']} ms "
        f"(at most {r['room']['ms_max']})",
    ]
    for name, figures in r.get("ingest", {}).items():
        lines.append(f"ingest, publish to commit, {name}: p50 {figures['p50_ms']} ms, p95 {figures['p95_ms']} ms "
                     f"({figures['windows']} windows)")
    return "\n".join(lines)


def parser():
    parser = argparse.ArgumentParser(
        prog="edge-collector bench dashboard",
        description="The dashboard of a big school: first build, a refresh's CPU against the previous way, the "
                    "index and a room page served, and ingest latency while the dashboard draws.")
    parser.add_argument("--rooms", type=positive_int, default=500, help="rooms, one camera each (default: %(default)s)")
    parser.add_argument("--in-class", type=positive_int, default=100,
                        help="rooms in a lesson now (default: %(default)s)")
    parser.add_argument("--weeks", type=positive_int, default=12, help="weeks of history (default: %(default)s)")
    parser.add_argument("--lessons-per-day", type=positive_int, default=5, choices=range(1, len(LESSON_HOURS) + 1),
                        metavar="N", help="lessons every weekday (default: %(default)s)")
    parser.add_argument("--minutes", type=positive_int, default=3, help="refreshes measured (default: %(default)s)")
    parser.add_argument("--rate", type=int, default=100,
                        help="windows/s published for the ingest figures; 0 skips them (default: %(default)s)")
    parser.add_argument("--ingest-devices", type=positive_int, default=100,
                        help="devices publishing (default: %(default)s)")
    parser.add_argument("--ingest-windows", type=positive_int, default=30,
                        help="windows each publishes per measurement (default: %(default)s)")
    parser.add_argument("--keep", metavar="DIR", help="build the school in DIR and leave it there")
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")
    return parser


def main(argv=None):
    args = parser().parse_args(argv)
    if args.in_class > args.rooms:
        raise SystemExit("edge-collector bench dashboard: --in-class is more than --rooms")
    results = bench(args, lambda text: print(text, file=sys.stderr, flush=True))
    print(json.dumps(results, indent=2) if args.json else format_results(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
