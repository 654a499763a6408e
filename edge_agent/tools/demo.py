"""``edge-agent demo``: the whole product on one machine, with no camera and no broker of one's own.

A broker on a free loopback port, two agents (room 101 watches the bundled clip, room 102 a
lecture hall made from the bundled group photo), and the collector with SQLite, each as its own
process with the config and systemd-free command line a real deployment uses. After the run the
agents stop (closing their last window), the collector stores what is left and stops, and the
dashboard and a report are written. Everything lives in the output directory; every process the
demo starts, it stops.

A minute of cameras makes one lesson per room, and a history of one lesson shows nothing, so the
store starts with HISTORY_WEEKS of made-up earlier lessons for both rooms (model
``demo-history``) and a day of made-up stats for both cameras; the demo says so when it starts,
and the windows it counts as stored are the cameras' own.
"""

import datetime as dt
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from ..common.errors import EdgeAgentError
from .demo_broker import open_broker

SAMPLES = Path(__file__).resolve().parents[1] / "samples"
CLIP = SAMPLES / "test.mp4"
GROUP_PHOTO = SAMPLES / "solvay_conference.jpg"
SITE = "demo"
STOP_TIMEOUT_S = 30
# The collector has stored everything once the count stays the same this long after the agents stop.
SETTLE_S = 2.0
# The made-up earlier lessons: weekdays at these local hours (and the demo's own), 40 minutes each.
HISTORY_WEEKS = 3
HISTORY_HOURS = (8, 9, 10, 11, 13)
HISTORY_LESSON_MIN = 40
HISTORY_MODEL = "demo-history"


class DemoError(EdgeAgentError):
    pass


@dataclass
class Camera:
    room: str
    source: Path
    fps: float
    min_group: int


def lecture_hall_video(path, seconds=6, fps=5):
    """A short video of a crowded room: the group photo tiled (about 40 faces), mirrored every other second."""
    import cv2

    from .bench_pipeline import classroom_frame

    frame, _ = classroom_frame(GROUP_PHOTO)
    mirrored = cv2.flip(frame, 1)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (frame.shape[1], frame.shape[0]))
    if not writer.isOpened():
        raise DemoError(f"cannot write {path}: this OpenCV has no mp4v encoder")
    for second in range(seconds):
        for _ in range(fps):
            writer.write(mirrored if second % 2 else frame)
    writer.release()
    return path


def agent_config(camera, *, port, protocol, window_s, state_dir):
    # The clip shows one person: min_group 1 lets its windows through, which a classroom never should.
    return (f"device:\n  id: pi-{camera.room}\n  site: {SITE}\n  room: '{camera.room}'\n"
            f"camera:\n  source: {camera.source}\n  loop: true\n  fps: {camera.fps}\n"
            f"window:\n  length_s: {window_s}\n  min_group: {camera.min_group}\n"
            f"mqtt:\n  host: 127.0.0.1\n  port: {port}\n  protocol: '{protocol}'\n  keepalive_s: 10\n"
            f"  reconnect_max_s: 2\n  stats_interval_s: 10\n"
            f"outbox:\n  path: {state_dir / f'outbox-{camera.room}.sqlite3'}\n"
            # The demo runs wherever the product is tried, NTP or not: its clock is taken as it is.
            f"clock:\n  require_sync: false\n")


def collector_config(*, port, protocol, out, window_s, cameras):
    return (f"mqtt:\n  host: 127.0.0.1\n  port: {port}\n  protocol: '{protocol}'\n  client_id: demo-collector\n"
            f"  reconnect_max_s: 2\n"
            f"store:\n  url: sqlite:///{out / 'collector.sqlite3'}\n"
            # Short windows make short sessions: keep the whole run in one.
            f"sessions:\n  gap_min: {max(15, window_s * 3 / 60)}\n"
            f"dashboard:\n  output_dir: {out / 'dashboard'}\n  refresh_s: 5\n"
            f"fleet:\n  fps_by_device: {{{', '.join(f'pi-{c.room}: {c.fps}' for c in cameras)}}}\n")


class Children:
    """The demo's processes: started with their logs in files, stopped (SIGTERM, then SIGKILL) on exit."""

    def __init__(self, env):
        self.env = env
        self.processes = {}

    def start(self, name, args, log_path):
        log = open(log_path, "a")
        process = subprocess.Popen([sys.executable, *args], stdout=log, stderr=subprocess.STDOUT, env=self.env,
                                   stdin=subprocess.DEVNULL)
        self.processes[name] = (process, log, log_path)
        return process

    def check_alive(self):
        for name, (process, _, log_path) in self.processes.items():
            if process.poll() is not None:
                tail = "".join(Path(log_path).read_text(errors="replace").splitlines(True)[-15:])
                raise DemoError(f"the {name} exited ({process.returncode}); the end of {log_path}:\n{tail}")

    def stop(self, *names):
        for name in names or list(self.processes):
            process, log, _ = self.processes.pop(name)
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(STOP_TIMEOUT_S)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
            log.close()


def seed_history(store, cameras, tz, now):
    """Made-up earlier lessons of the demo's rooms and a day of their cameras' stats; returns the windows written."""
    from ..common.contract import EMOTIONS, EmotionsPayload, StatsPayload, format_utc

    today = dt.datetime.fromtimestamp(now, tz).replace(hour=0, minute=0, second=0, microsecond=0)
    # The hour the demo runs in joins the timetable: the room page then has a slot to compare its lesson with.
    hours = sorted({*HISTORY_HOURS, dt.datetime.fromtimestamp(now, tz).hour})
    windows = []
    for camera in cameras:
        rng = random.Random(camera.room)
        device, faces_per_frame = f"pi-{camera.room}", 1 if camera.min_group == 1 else 40
        for days in range(HISTORY_WEEKS * 7, 0, -1):
            day = today - dt.timedelta(days=days)
            if day.weekday() >= 5:
                continue
            for hour in hours:
                start = int(day.replace(hour=hour).timestamp()) // 60 * 60
                level, dip = rng.uniform(0.55, 0.85), rng.randrange(10, 30)
                for minute in range(HISTORY_LESSON_MIN):
                    faces = faces_per_frame * 60
                    interest = level - (0.25 if dip <= minute < dip + 6 else 0) + rng.uniform(-0.1, 0.1)
                    interested = round(faces * max(0.0, min(1.0, interest)))
                    counts = dict.fromkeys(EMOTIONS, 0) | {
                        "happy": interested // 3, "surprise": interested // 10,
                        "neutral": interested - interested // 3 - interested // 10,
                        "sad": (faces - interested) // 2, "angry": faces - interested - (faces - interested) // 2}
                    windows.append(EmotionsPayload(
                        schema_version=1, device=device, site=SITE, room=camera.room,
                        window_start=format_utc(start + 60 * minute), window_s=60, seq=0, frames=60, faces=faces,
                        faces_per_frame_median=faces_per_frame, counts=counts, suppressed=False,
                        model=HISTORY_MODEL))
        for minutes_ago in range(24 * 60, 1, -1):
            at = now - 60 * minutes_ago
            store.add_stats([(device, StatsPayload(
                device=device, t=format_utc(at), uptime_s=86400.0 - 60 * minutes_ago, fps=camera.fps,
                detect_ms=rng.uniform(90, 140) * (3 if faces_per_frame > 1 else 1), classify_ms=rng.uniform(1, 3),
                faces_per_frame=float(faces_per_frame), outbox_depth=0, dropped_windows=0, camera="running",
                cpu_temp_c=rng.uniform(48, 58), rss_mb=rng.uniform(150, 170)))], received_at=at)
    return store.add_windows(windows)


def _wait_settled(store, timeout):
    count, since, deadline = store.count_windows(), time.monotonic(), time.monotonic() + timeout
    while time.monotonic() < deadline and time.monotonic() - since < SETTLE_S:
        time.sleep(0.25)
        now = store.count_windows()
        if now != count:
            count, since = now, time.monotonic()
    return count


@dataclass
class DemoResult:
    broker: str
    windows: int
    rooms: int
    dashboard: Path
    reports: list


def run_demo(out, *, duration_s=60.0, window_s=5, broker_kind="auto", progress=True):
    """Run everything for ``duration_s``, then stop it all; returns where the results are."""
    out = Path(out).resolve()
    for sub in ("config", "logs", "state", "media"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    # Keep matplotlib's config and font cache (the children's too) inside the output directory;
    # matplotlib reads this when first imported, so it is set before the imports below.
    os.environ["MPLCONFIGDIR"] = str(out / "state" / "matplotlib")
    env = dict(os.environ)
    from ..collector.config import load_collector_config
    from ..collector.dashboard import Dashboard
    from ..collector.report import report_session, write_report
    from ..collector.store import Store

    cameras = [Camera("101", CLIP, 4.0, 1),
               Camera("102", lecture_hall_video(out / "media" / "lecture-hall.mp4"), 1.0, 3)]
    broker = open_broker(broker_kind, out / "config", out / "logs" / "broker.log")
    children = Children(env)
    store = None
    try:
        broker.start()
        config_path = out / "config" / "collector.yaml"
        config_path.write_text(collector_config(port=broker.port, protocol=broker.protocol, out=out,
                                                window_s=window_s, cameras=cameras))
        config = load_collector_config(config_path)
        store = Store(config.store.resolved_url())
        seeded = seed_history(store, cameras, config.dashboard.resolved_timezone(), time.time())
        if progress:
            print(f"demo: the rooms' earlier lessons ({HISTORY_WEEKS} weeks) and a day of their cameras' stats are "
                  "made up, so the history pages have something to show", flush=True)
        children.start("collector", ["-m", "edge_agent.collector.cli", "run", "--config", str(config_path)],
                       out / "logs" / "collector.log")
        for camera in cameras:
            path = out / "config" / f"agent-{camera.room}.yaml"
            path.write_text(agent_config(camera, port=broker.port, protocol=broker.protocol, window_s=window_s,
                                         state_dir=out / "state"))
            children.start(f"agent {camera.room}", ["-m", "edge_agent.agent.cli", "run", "--config", str(path)],
                           out / "logs" / f"agent-{camera.room}.log")
        with tqdm(total=int(duration_s), unit="s", disable=not progress, desc="demo running",
                  bar_format="{desc}: {bar} {n_fmt}/{total_fmt} s{postfix}") as bar:
            started = time.monotonic()
            while (elapsed := time.monotonic() - started) < duration_s:
                children.check_alive()
                bar.update(int(elapsed) - bar.n)
                bar.set_postfix_str(f"{store.count_windows() - seeded} windows stored")
                time.sleep(0.5)
            bar.update(bar.total - bar.n)
        # Agents first: on SIGTERM each closes and publishes its window in progress.
        children.stop(*(f"agent {camera.room}" for camera in cameras))
        windows = _wait_settled(store, timeout=STOP_TIMEOUT_S) - seeded
        children.stop("collector")
        dashboard = Dashboard.from_config(config)
        built = dashboard.build(store)
        reports = []
        for camera in cameras:
            session = report_session(store, SITE, camera.room, gap_s=config.sessions.gap_min * 60)
            path = out / f"report-{SITE}-{camera.room}.png"
            write_report(session, path, config.sessions.interested, config.dashboard.resolved_timezone())
            reports.append(path)
        return DemoResult(broker.name, windows, built.rooms, dashboard.output_dir / "index.html", reports)
    finally:
        children.stop()
        broker.stop()
        if store is not None:
            store.close()


def take_screenshots(site_dir, target, out):
    """Each kind of page in headless Chromium, room 101's and its camera's, into ``target``."""
    chromium = next(filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None)
    if chromium is None:
        raise DemoError("--screenshots needs Chromium (apt install chromium)")
    target = Path(target)
    target.mkdir(parents=True, exist_ok=True)
    room = site_dir / "rooms" / SITE / "101"
    pages = {"dashboard-index.png": (site_dir / "index.html", 800),
             "dashboard-room.png": (room.with_suffix(".html"), 1900),
             "dashboard-lesson.png": (max(room.glob("2*T*.html")), 1250),
             "dashboard-week.png": (max(room.glob("*-W*.html")), 720),
             "dashboard-device.png": (site_dir / "devices" / "pi-101.html", 1900)}
    written = []
    for name, (page, height) in pages.items():
        result = subprocess.run([chromium, "--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                                 f"--user-data-dir={Path(out).resolve() / 'state' / 'chromium'}",
                                 f"--window-size=1280,{height}", f"--screenshot={target / name}", page.as_uri()],
                                capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
        if result.returncode or not (target / name).is_file():
            raise DemoError(f"Chromium could not take {name}: {result.stderr.strip()[-500:]}")
        written.append(target / name)
    return written


def main(args) -> None:
    """``edge-agent demo``: run it, say where everything is, and serve the dashboard when asked."""
    from ..collector.web import serve_directory

    print(f"demo: everything goes to {args.out.resolve()}; {args.duration:g} s of {args.window_s} s windows")
    result = run_demo(args.out, duration_s=args.duration, window_s=args.window_s, broker_kind=args.broker)
    print(f"broker: {result.broker}; {result.windows} windows stored from {result.rooms} rooms; "
          "every process the demo started is stopped")
    print(f"dashboard: {result.dashboard}")
    for report in result.reports:
        print(f"report:    {report}")
    if args.screenshots:
        for path in take_screenshots(result.dashboard.parent, args.screenshots, args.out):
            print(f"picture:   {path}")
    if args.serve:
        serve_directory(result.dashboard.parent, "127.0.0.1", args.port)
