"""Windows stored per second by the collector: simulated devices, a real mosquitto, a real database.

Two scenarios, each on a fresh broker and fresh rows:

- backlog: the devices publish while the collector is away (its persistent session queues the
  windows in the broker); the collector then starts and drains the queue.
- live: the devices publish flat out while the collector runs: sustained windows per second.
- paced: the devices publish at a fixed rate the collector can keep up with, so the time from a
  window's publish to the commit of its row (p50/p95) is the collector's own delay, not a queue's.

Beside our collector the same run measures a naive one, the straightforward first version: PUBACK
on receipt (paho's default) and one INSERT and one commit per window. The devices run in a child
process so that publishing does not compete with the collector for the interpreter.
"""

import argparse
import json
import multiprocessing
import os
import selectors
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from contextlib import ExitStack, contextmanager
from pathlib import Path

import paho.mqtt.client as paho
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from sqlalchemy import delete
from tqdm import tqdm

from ..collector.ingest import SESSION_EXPIRY_S, Ingest
from ..collector.store import Store, devices_table, windows_table
from ..common.cli import positive_int
from ..common.config import BrokerConfig
from ..common.contract import EmotionsPayload, MessageError, format_utc, parse_payload, parse_topic, topic
from .localnet import free_port, wait_listening

MOSQUITTO = os.environ.get("MOSQUITTO", "/usr/sbin/mosquitto")
PREFIX = "classroom"
SITE = "bench"
# Windows each simulated device may have unacknowledged at once, as the agent allows (mqtt.Publisher).
DEVICE_INFLIGHT = 20
# The first window starts on a minute boundary, as every window does.
T0 = 1_795_000_000 - 1_795_000_000 % 60
# The broker settings a deployment needs for backlogs: a persistent store, and a per-client queue
# far above mosquitto's default of 1000 (beyond which it drops QoS 1 messages without a word).
# A million windows is more than a day of a 500-room school.
BROKER_SETTINGS = """\
persistence true
max_queued_messages 1000000
set_tcp_nodelay true
"""


@contextmanager
def mosquitto():
    """A fresh mosquitto on a free loopback port with BROKER_SETTINGS; yields the port."""
    if shutil.which(MOSQUITTO) is None:
        raise SystemExit(f"edge-collector bench: {MOSQUITTO} is not installed (apt-get install mosquitto)")
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="bench-mosquitto-") as directory:
        lines = [f"listener {port} 127.0.0.1", "allow_anonymous true", BROKER_SETTINGS,
                 f"persistence_location {directory}/", "log_dest none"]
        if os.geteuid() == 0:
            # As root mosquitto would switch to its own user, which cannot write the temp dir.
            lines.append("user root")
        conf = Path(directory) / "mosquitto.conf"
        conf.write_text("\n".join(lines) + "\n")
        proc = subprocess.Popen([MOSQUITTO, "-c", str(conf)], stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_listening(port, lambda: proc.poll() is None, "mosquitto", timeout=30)
            yield port
        finally:
            proc.terminate()
            proc.wait(10)


def _postgres_bin_dir():
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda path: int(path.parts[4]))
    return found[-1].parent if found else None


@contextmanager
def throwaway_postgres():
    """A PostgreSQL cluster in a temp dir on a free loopback port; yields its URL, or None if not installed."""
    bin_dir = _postgres_bin_dir()
    if bin_dir is None:
        yield None
        return
    port = free_port()
    directory = Path(tempfile.mkdtemp(prefix="bench-postgres-"))
    data = directory / "data"
    # The server refuses to run as root.
    as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    if as_user:
        shutil.chown(directory, "postgres", "postgres")

    def run(*args):
        subprocess.run([*as_user, str(bin_dir / args[0]), *args[1:]], check=True, capture_output=True, timeout=120)

    # Server defaults otherwise (fsync on): the figures are those of a real installation.
    options = f"-p {port} -k {directory} -c listen_addresses=127.0.0.1"
    try:
        run("initdb", "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync")
        run("pg_ctl", "-D", str(data), "-l", str(directory / "server.log"), "-w", "-o", options, "start")
        run("createdb", "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "bench")
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/bench"
    finally:
        if (data / "postmaster.pid").exists():
            run("pg_ctl", "-D", str(data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(directory, ignore_errors=True)


# -- the devices (a child process) ---------------------------------------------------------------


def _window_json(device, room, seq):
    counts = {"angry": 3, "disgust": 0, "fear": 2, "happy": 40, "sad": 5, "surprise": 10, "neutral": 120}
    return EmotionsPayload(
        schema_version=1, device=device, site=SITE, room=room, window_start=format_utc(T0 + 60 * seq),
        window_s=60, seq=seq, frames=60, faces=sum(counts.values()), faces_per_frame_median=3, counts=counts,
        suppressed=False, model="mini-xception-int8:bench").to_json()


def device_names(tag, devices):
    return [(f"{tag}-{number:03d}", f"r{number:03d}") for number in range(devices)]


def run_devices(port, names, windows, rate, ready, go, published, results):
    """Publish ``windows`` windows from each device at QoS 1, ``rate`` windows/s in all (0: flat out).

    Many paho clients share this one thread through a selector. Puts ``{(device, seq): publish time}``
    on ``results`` once the broker has acknowledged every window.
    """
    clients, outstanding, acked = [], [0] * len(names), [0]
    connected = set()
    for index, (device, _room) in enumerate(names):
        client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=device, protocol=paho.MQTTv5,
                             userdata=index)
        client.on_connect = lambda c, index, *args: connected.add(index)

        def on_publish(client, index, mid, reason_code, properties):
            outstanding[index] -= 1
            acked[0] += 1

        client.on_publish = on_publish
        client.connect("127.0.0.1", port, keepalive=60)
        clients.append(client)
    selector = selectors.DefaultSelector()
    for client in clients:
        selector.register(client.socket(), selectors.EVENT_READ, client)
    last_misc = time.monotonic()

    def pump(timeout):
        nonlocal last_misc
        for key, _ in selector.select(timeout):
            key.data.loop_read()
        for client in clients:
            if client.want_write():
                client.loop_write()
        if time.monotonic() - last_misc > 1:
            last_misc = time.monotonic()
            for client in clients:
                client.loop_misc()

    while len(connected) < len(clients):
        pump(0.05)
    ready.set()
    go.wait()
    bodies = [[_window_json(device, room, seq) for seq in range(windows)] for device, room in names]
    topics = [topic(PREFIX, SITE, room, device, "emotions") for device, room in names]
    total = len(names) * windows
    sent_at, next_seq, started, turn = {}, [0] * len(names), time.time(), 0
    while acked[0] < total:
        # Round robin over the devices, each at most DEVICE_INFLIGHT windows ahead of its acks.
        due = total if not rate else min(total, int((time.time() - started) * rate) + 1)
        for _ in range(len(clients)):
            if len(sent_at) >= due:
                break
            index, turn = turn, (turn + 1) % len(clients)
            seq = next_seq[index]
            if seq < windows and outstanding[index] < DEVICE_INFLIGHT:
                sent_at[(names[index][0], seq)] = time.time()
                outstanding[index] += 1
                next_seq[index] += 1
                clients[index].publish(topics[index], bodies[index][seq], qos=1)
        published.value = acked[0]
        pump(0.001)
    published.value = acked[0]
    results.put(sent_at)
    for client in clients:
        client.disconnect()


class Devices:
    """The simulated devices in a child process: connect on enter, publish on ``start()``."""

    def __init__(self, port, names, windows, rate=0.0):
        context = multiprocessing.get_context("spawn")
        self.total = len(names) * windows
        self._ready, self._go = context.Event(), context.Event()
        self.published = context.Value("q", 0, lock=False)
        self._results = context.Queue()
        self._process = context.Process(
            target=run_devices, name="bench devices", daemon=True,
            args=(port, names, windows, rate, self._ready, self._go, self.published, self._results))

    def __enter__(self):
        self._process.start()
        if not self._ready.wait(120):
            raise RuntimeError("the simulated devices did not connect within 120 s")
        return self

    def start(self):
        self._go.set()

    def sent_at(self, timeout):
        """``{(device, seq): publish time}`` once the broker has acknowledged every window."""
        return self._results.get(timeout=timeout)

    def __exit__(self, *exc_info):
        self._process.join(10)
        if self._process.is_alive():
            self._process.kill()


# -- the collectors ------------------------------------------------------------------------------


class TimedStore:
    """The store, noting when each window's transaction committed."""

    def __init__(self, store):
        self.store = store
        self.committed = {}

    def add_windows(self, payloads, **kwargs):
        new = self.store.add_windows(payloads, **kwargs)
        now = time.time()
        for payload in payloads:
            self.committed.setdefault((payload.device, payload.seq), now)
        return new

    def __getattr__(self, name):
        return getattr(self.store, name)


class NaiveCollector:
    """The straightforward first version: PUBACK on receipt, one INSERT and one commit per window."""

    def __init__(self, store, mqtt_config, *, client_id):
        self.store = store
        self.config = mqtt_config
        self.client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=paho.MQTTv5)
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message

    def start(self):
        properties = Properties(PacketTypes.CONNECT)
        properties.SessionExpiryInterval = SESSION_EXPIRY_S
        self.client.connect_async(self.config.host, self.config.port, clean_start=False, properties=properties)
        self.client.loop_start()

    def stop(self):
        self.client.disconnect()
        self.client.loop_stop()

    def _on_connect(self, client, userdata, flags, reason_code, properties):
        client.subscribe(f"{self.config.prefix}/+/+/+/emotions", qos=1)

    def _on_message(self, client, userdata, message):
        try:
            site, room, device, kind = parse_topic(message.topic, self.config.prefix)
            payload = parse_payload(kind, message.payload, (site, room, device))
        except MessageError:
            return
        self.store.add_windows([payload])


COLLECTORS = {"ours": Ingest, "naive": NaiveCollector}


@contextmanager
def running(collector_name, store, port):
    """A started collector of that name, subscribed (so nothing published from now on is missed)."""
    config = BrokerConfig(host="127.0.0.1", port=port, prefix=PREFIX, reconnect_max_s=1)
    collector = COLLECTORS[collector_name](store, config, client_id=f"bench-collector-{collector_name}")
    subscribed = threading.Event()
    collector.client.on_subscribe = lambda *args: subscribed.set()
    collector.start()
    try:
        if not subscribed.wait(30):
            raise RuntimeError(f"the {collector_name} collector did not subscribe within 30 s")
        yield collector
    finally:
        collector.stop()


def _wait_committed(timed, total, description, timeout):
    deadline = time.monotonic() + timeout
    with tqdm(total=total, desc=description, unit="win", leave=False, file=sys.stderr) as bar:
        while len(timed.committed) < total and time.monotonic() < deadline:
            time.sleep(0.1)
            bar.update(len(timed.committed) - bar.n)


def _wait_published(devices, description):
    with tqdm(total=devices.total, desc=description, unit="win", leave=False, file=sys.stderr) as bar:
        while devices.published.value < devices.total:
            time.sleep(0.1)
            bar.update(devices.published.value - bar.n)


def _percentile_ms(values, fraction):
    return round(statistics.quantiles(values, n=100)[int(fraction * 100) - 1] * 1000, 1) if len(values) > 1 else None


def backlog(collector_name, store, port, names, windows, timeout):
    timed = TimedStore(store)
    with running(collector_name, timed, port):
        pass  # Only the session and its subscription: the broker queues what follows for it.
    with Devices(port, names, windows) as devices:
        devices.start()
        _wait_published(devices, f"{collector_name}: devices publish while the collector is away")
        devices.sent_at(timeout)
    started = time.time()
    with running(collector_name, timed, port):
        _wait_committed(timed, devices.total, f"{collector_name}: backlog drain", timeout)
    return _figures(timed, devices.total, started)


def live(collector_name, store, port, names, windows, rate, timeout):
    timed = TimedStore(store)
    with running(collector_name, timed, port), Devices(port, names, windows, rate) as devices:
        devices.start()
        _wait_committed(timed, devices.total, f"{collector_name}: {'paced' if rate else 'live'}", timeout)
        sent_at = devices.sent_at(timeout)
    started = min(sent_at.values())
    figures = _figures(timed, devices.total, started)
    latencies = [timed.committed[key] - sent for key, sent in sent_at.items() if key in timed.committed]
    figures["published_per_s"] = round(len(sent_at) / max(1e-9, max(sent_at.values()) - started))
    figures["p50_ms"] = _percentile_ms(latencies, 0.50)
    figures["p95_ms"] = _percentile_ms(latencies, 0.95)
    return figures


def _figures(timed, total, started):
    stored = len(timed.committed)
    seconds = (max(timed.committed.values()) - started) if stored else float("nan")
    return {"windows": total, "stored": stored, "seconds": round(seconds, 2),
            "stored_per_s": round(stored / seconds) if stored else 0}


# -- the run -------------------------------------------------------------------------------------


def _scrub(store, tag):
    """Remove this run's rows: a database named by --postgres-url is someone's, not ours."""
    with store.engine.begin() as connection:
        connection.execute(delete(windows_table).where(windows_table.c.device.like(f"{tag}-%")))
        connection.execute(delete(devices_table).where(devices_table.c.device.like(f"{tag}-%")))


def bench(store_urls, *, devices, windows, rate, collectors=("naive", "ours"), timeout=600):
    """Rows of figures: one per store, scenario and collector, each on a fresh broker and fresh rows."""
    rows = []
    for store_name, url in store_urls.items():
        for scenario in ("backlog", "live", "paced"):
            for collector_name in collectors:
                tag = f"b{uuid.uuid4().hex[:6]}"
                names = device_names(tag, devices)
                store = Store(url)
                try:
                    with mosquitto() as port:
                        if scenario == "backlog":
                            figures = backlog(collector_name, store, port, names, windows, timeout)
                        else:
                            figures = live(collector_name, store, port, names, windows,
                                           rate if scenario == "paced" else 0, timeout)
                    _scrub(store, tag)
                finally:
                    store.close()
                rows.append({"store": store_name, "scenario": scenario, "collector": collector_name,
                             "devices": devices, **figures})
                print(format_row(rows[-1]), file=sys.stderr)
    return rows


HEADER = (f"{'store':<11} {'scenario':<8} {'collector':<9} {'windows':>8} {'stored':>8} {'seconds':>8} "
          f"{'stored/s':>9} {'sent/s':>7} {'p50 ms':>8} {'p95 ms':>8}")


def format_row(row):
    def cell(name, width):
        value = row.get(name)
        return f"{'-' if value is None else value:>{width}}"

    return (f"{row['store']:<11} {row['scenario']:<8} {row['collector']:<9} {row['windows']:>8} "
            f"{row['stored']:>8} {row['seconds']:>8} {row['stored_per_s']:>9} {cell('published_per_s', 7)} "
            f"{cell('p50_ms', 8)} {cell('p95_ms', 8)}")


def format_rows(rows):
    return "\n".join([HEADER, *map(format_row, rows)])


def parser():
    parser = argparse.ArgumentParser(
        prog="edge-collector bench",
        description="Windows stored per second from simulated devices through a real mosquitto, "
                    "ours beside a naive collector (PUBACK on receipt, one commit per window).")
    parser.add_argument("--devices", type=positive_int, default=200, help="simulated devices (default: %(default)s)")
    parser.add_argument("--windows-per-device", type=positive_int, default=50,
                        help="windows each device publishes per scenario (default: %(default)s)")
    parser.add_argument("--rate", type=positive_int, default=1000,
                        help="paced scenario: windows/s published by all devices together (default: %(default)s)")
    parser.add_argument("--store", choices=("sqlite", "postgresql", "both"), default="both",
                        help="database(s) to measure (default: %(default)s)")
    parser.add_argument("--postgres-url",
                        help="PostgreSQL to write to (its rows are removed afterwards); "
                             "default: a throwaway cluster started from /usr/lib/postgresql")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    return parser


def main(argv=None):
    args = parser().parse_args(argv)
    # A stuck run is stopped by Ctrl-C; SIGTERM too (e.g. from a CI timeout) tears the servers down.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    with ExitStack() as stack:
        urls = {}
        if args.store in ("sqlite", "both"):
            directory = stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-sqlite-"))
            urls["sqlite"] = f"sqlite:///{directory}/collector.sqlite3"
        if args.store in ("postgresql", "both"):
            url = args.postgres_url or stack.enter_context(throwaway_postgres())
            if url:
                urls["postgresql"] = url
            else:
                print("edge-collector bench: PostgreSQL skipped: no /usr/lib/postgresql/*/bin/initdb "
                      "(apt-get install postgresql, or give --postgres-url)", file=sys.stderr)
        rows = bench(urls, devices=args.devices, windows=args.windows_per_device, rate=args.rate)
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        print(format_rows(rows))
        print(f"\n{args.devices} devices x {args.windows_per_device} windows per scenario; "
              "naive: PUBACK on receipt, one INSERT and one commit per window. "
              f"sent/s: windows the devices published per second (paced: {args.rate}); "
              "p50/p95: publish to commit.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
