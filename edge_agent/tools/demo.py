"""``edge-agent demo``: the whole product on one machine, with no camera and no broker of one's own.

A broker on a free loopback port, two agents (room 101 watches the bundled clip, room 102 a
lecture hall made from the bundled group photo), and the collector with SQLite, each as its own
process with the config and systemd-free command line a real deployment uses. After the run the
agents stop (closing their last window), the collector stores what is left and stops, and the
dashboard and a report are written. Everything lives in the output directory; every process the
demo starts, it stops.
"""

import os
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


def collector_config(*, port, protocol, out, window_s):
    return (f"mqtt:\n  host: 127.0.0.1\n  port: {port}\n  protocol: '{protocol}'\n  client_id: demo-collector\n"
            f"  reconnect_max_s: 2\n"
            f"store:\n  url: sqlite:///{out / 'collector.sqlite3'}\n"
            # Short windows make short sessions: keep the whole run in one.
            f"sessions:\n  gap_min: {max(15, window_s * 3 / 60)}\n"
            f"dashboard:\n  output_dir: {out / 'dashboard'}\n  refresh_s: 5\n")


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
                                                window_s=window_s))
        children.start("collector", ["-m", "edge_agent.collector.cli", "run", "--config", str(config_path)],
                       out / "logs" / "collector.log")
        for camera in cameras:
            path = out / "config" / f"agent-{camera.room}.yaml"
            path.write_text(agent_config(camera, port=broker.port, protocol=broker.protocol, window_s=window_s,
                                         state_dir=out / "state"))
            children.start(f"agent {camera.room}", ["-m", "edge_agent.agent.cli", "run", "--config", str(path)],
                           out / "logs" / f"agent-{camera.room}.log")
        config = load_collector_config(config_path)
        store = Store(config.store.resolved_url())
        with tqdm(total=int(duration_s), unit="s", disable=not progress, desc="demo running",
                  bar_format="{desc}: {bar} {n_fmt}/{total_fmt} s{postfix}") as bar:
            started = time.monotonic()
            while (elapsed := time.monotonic() - started) < duration_s:
                children.check_alive()
                bar.update(int(elapsed) - bar.n)
                bar.set_postfix_str(f"{store.count_windows()} windows stored")
                time.sleep(0.5)
            bar.update(bar.total - bar.n)
        # Agents first: on SIGTERM each closes and publishes its window in progress.
        children.stop(*(f"agent {camera.room}" for camera in cameras))
        windows = _wait_settled(store, timeout=STOP_TIMEOUT_S)
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
    """The index and room 101's page in headless Chromium, and room 101's interest chart, into ``target``."""
    chromium = next(filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None)
    if chromium is None:
        raise DemoError("--screenshots needs Chromium (apt install chromium)")
    target = Path(target)
    target.mkdir(parents=True, exist_ok=True)
    pages = {"dashboard-index.png": (site_dir / "index.html", 1100),
             "dashboard-room.png": (site_dir / "rooms" / SITE / "101.html", 1500)}
    written = []
    for name, (page, height) in pages.items():
        result = subprocess.run([chromium, "--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                                 f"--user-data-dir={Path(out).resolve() / 'state' / 'chromium'}",
                                 f"--window-size=1280,{height}", f"--screenshot={target / name}", page.as_uri()],
                                capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
        if result.returncode or not (target / name).is_file():
            raise DemoError(f"Chromium could not take {name}: {result.stderr.strip()[-500:]}")
        written.append(target / name)
    chart = max((site_dir / "charts" / SITE / "101").glob("*-interest.png"), key=lambda p: p.stat().st_mtime)
    shutil.copyfile(chart, target / "interest-chart.png")
    return [*written, target / "interest-chart.png"]


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
