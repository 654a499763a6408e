"""``edge-agent bench soak``: the agent for a long time against a broker that keeps going away.

Under systemd ``MemoryMax=300M`` turns a slow leak into a restart loop nobody sees, so this runs
``edge-agent run`` (a looping video as the camera, short windows) next to a mosquitto that is
stopped every ``broker_every_s`` for ``broker_down_s``, and samples the agent's resident memory,
open file descriptors, threads, CPU and outbox size every ``sample_every_s``. The figures are the
slopes per hour, fitted after a warm-up (model load, first caches); the table and a chart show
every sample. A receiver with a persistent MQTT session stands in for the collector: at the end
every window the agent stored must have arrived, once per ``(device, window_start)``.

The agent runs with the environment the shipped unit gives it (``UNIT_ENVIRONMENT``: glibc's
arenas, which shape how its memory grows); the report says what the running agent had. The clock
is taken as it is (``clock.require_sync: false``): the soak measures the agent, not NTP.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from ..agent.outbox import Outbox, OutboxError
from ..common.contract import MessageError, parse_payload
from ..common.errors import EdgeAgentError
from .demo_broker import mosquitto_path
from .localnet import free_port, wait_listening

SAMPLES = Path(__file__).resolve().parents[1] / "samples"
DEFAULT_VIDEO = SAMPLES / "test.mp4"
DEVICE, SITE, ROOM = "pi-soak", "bench", "soak"
EMOTIONS_TOPIC = f"classroom/{SITE}/{ROOM}/{DEVICE}/emotions"
# What the figures must stay under: the bounds for months without a restart.
RSS_SLOPE_LIMIT_MB_PER_H = 1.0
DRAIN_TIMEOUT_S = 120.0
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
# The Environment= lines of systemd/edge-agent.service (a test holds the two together).
UNIT_ENVIRONMENT = {"MALLOC_ARENA_MAX": "2"}


class SoakError(EdgeAgentError):
    pass


@dataclass
class Sample:
    minute: float        # since the agent started
    rss_mb: float
    fds: int
    threads: int
    cpu_pct: float       # of one core, over the interval before the sample
    outbox_kb: float     # the outbox file and its -wal
    outbox_depth: int | None
    broker_up: bool
    received: int        # distinct windows the receiver has


def _read_proc(pid):
    """(rss MiB, threads, cpu seconds, open fds) of a live process, from /proc."""
    status = Path(f"/proc/{pid}/status").read_text()
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    rss_mb = int(fields["VmRSS"].split()[0]) / 1024
    threads = int(fields["Threads"])
    stat = Path(f"/proc/{pid}/stat").read_text()
    # Fields after the command name, which may hold spaces and parentheses: utime and stime are 14 and 15.
    after = stat.rsplit(")", 1)[1].split()
    cpu_s = (int(after[11]) + int(after[12])) / CLOCK_TICKS
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    return rss_mb, threads, cpu_s, fds


def _environment(pid, names, timeout=10.0):
    """The values of ``names`` in a live process's environment, as it started with them.

    Right after an exec the kernel may not have set the new image's environment yet, and the
    file reads empty: a process always has some environment, so empty means "not yet".
    """
    deadline = time.monotonic() + timeout
    while not (text := Path(f"/proc/{pid}/environ").read_text()) and time.monotonic() < deadline:
        time.sleep(0.05)
    fields = dict(entry.split("=", 1) for entry in text.split("\0") if "=" in entry)
    return {name: fields.get(name) for name in names}


def slope_per_hour(minutes, values):
    """Least-squares slope of ``values`` against ``minutes``, per hour; 0 for fewer than two points."""
    n = len(minutes)
    if n < 2:
        return 0.0
    mean_x, mean_y = sum(minutes) / n, sum(values) / n
    sxx = sum((x - mean_x) ** 2 for x in minutes)
    if not sxx:
        return 0.0
    return 60 * sum((x - mean_x) * (y - mean_y) for x, y in zip(minutes, values, strict=True)) / sxx


class Broker:
    """mosquitto with persistence, so the receiver's session and its queued windows outlive a restart."""

    def __init__(self, workdir):
        if mosquitto_path() is None:
            raise SoakError("the soak needs mosquitto: apt-get install mosquitto")
        self.port = free_port()
        self.workdir = workdir
        self.config_path = workdir / "mosquitto.conf"
        self.config_path.write_text(
            f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence true\n"
            f"persistence_location {workdir}/\nmax_queued_messages 100000\n"
            f"log_dest file {workdir / 'mosquitto.log'}\nlog_type error\nlog_type warning\n"
            # As root mosquitto would switch to its own user, which cannot write here: the sessions
            # would not outlive a restart, and a window sent before the receiver is back would be lost.
            + ("user root\n" if os.geteuid() == 0 else ""))
        self.process = None

    @property
    def up(self):
        return self.process is not None and self.process.poll() is None

    def start(self):
        self.process = subprocess.Popen([mosquitto_path(), "-c", str(self.config_path)],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_listening(self.port, lambda: self.process.poll() is None, "mosquitto")
        except RuntimeError as exc:
            raise SoakError(f"{exc}; see {self.workdir / 'mosquitto.log'}") from None

    def stop(self):
        if self.up:
            self.process.terminate()  # mosquitto saves its sessions on SIGTERM
            self.process.wait(10)


class Receiver:
    """The collector's stand-in: a persistent MQTT session that keeps every window it gets, by seq."""

    def __init__(self, port):
        import paho.mqtt.client as mqtt

        self.windows = {}        # seq -> payload bytes
        self.conflicts = []      # (seq or window_start, why): a window that came twice, different
        self.starts = {}         # window_start -> seq
        self._lock = threading.Lock()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="soak-receiver", clean_session=False)
        self.client.reconnect_delay_set(1, 2)
        self.client.on_connect = lambda client, *_: client.subscribe(EMOTIONS_TOPIC, qos=1)
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port, keepalive=10)
        self.client.loop_start()

    def _on_message(self, client, userdata, message):
        try:
            window = parse_payload("emotions", message.payload, (SITE, ROOM, DEVICE))
        except MessageError as exc:
            with self._lock:
                self.conflicts.append((None, f"refused: {exc}"))
            return
        with self._lock:
            earlier = self.windows.setdefault(window.seq, bytes(message.payload))
            if earlier != bytes(message.payload):
                self.conflicts.append((window.seq, "seq sent twice with different contents"))
            seq = self.starts.setdefault(window.window_start, window.seq)
            if seq != window.seq:
                self.conflicts.append((window.window_start, f"window_start used by seq {seq} and {window.seq}"))

    @property
    def count(self):
        with self._lock:
            return len(self.windows)

    def close(self):
        self.client.disconnect()
        self.client.loop_stop()


def agent_config(path, *, port, video, fps, window_s, outbox):
    path.write_text(
        f"device:\n  id: {DEVICE}\n  site: {SITE}\n  room: {ROOM}\n"
        f"camera:\n  source: {video}\n  loop: true\n  fps: {fps}\n"
        f"window:\n  length_s: {window_s}\n  min_group: 1\n"
        f"mqtt:\n  host: 127.0.0.1\n  port: {port}\n  keepalive_s: 10\n  reconnect_max_s: 5\n"
        f"outbox:\n  path: {outbox}\n"
        f"clock:\n  require_sync: false\n")
    return path


def _outbox_figures(path):
    size = sum(p.stat().st_size for p in (path, Path(f"{path}-wal")) if p.exists())
    try:
        with Outbox(path, read_only=True) as outbox:
            return size / 1024, outbox.depth, outbox.next_seq
    except OutboxError:
        return size / 1024, None, None


def run_soak(out, *, duration_s=3600.0, fps=10.0, window_s=5, video=DEFAULT_VIDEO, broker_every_s=600.0,
             broker_down_s=60.0, sample_every_s=60.0, warmup_s=120.0, progress=None) -> dict:
    """Run the soak; returns the samples, the slopes per hour, delivery and a verdict for each bound."""
    out = Path(out).resolve()
    if not Path(video).is_file():
        raise SoakError(f"{video} does not exist: pass --video")
    shutil.rmtree(out / "state", ignore_errors=True)
    for sub in ("state", "broker"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    outbox = out / "state" / "outbox.sqlite3"
    broker = Broker(out / "broker")
    broker.start()
    receiver = Receiver(broker.port)
    config = agent_config(out / "agent.yaml", port=broker.port, video=video, fps=fps, window_s=window_s,
                          outbox=outbox)
    log = open(out / "agent.log", "w")  # noqa: SIM115 (closed below, after the agent)
    agent = subprocess.Popen([sys.executable, "-m", "edge_agent.agent.cli", "run", "--config", str(config)],
                             stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                             env={**os.environ, **UNIT_ENVIRONMENT})
    environment = _environment(agent.pid, UNIT_ENVIRONMENT)
    samples, outages = [], []
    started = time.monotonic()
    try:
        last_cpu, last_t = 0.0, started
        next_sample, next_down, back_at = started + sample_every_s, started + broker_every_s, None
        while (now := time.monotonic()) - started < duration_s:
            if agent.poll() is not None:
                raise SoakError(f"the agent exited ({agent.returncode}) after {(now - started) / 60:.1f} min; "
                                f"see {out / 'agent.log'}")
            if back_at is None and now >= next_down:
                broker.stop()
                outages.append([(now - started) / 60, None])
                back_at, next_down = now + broker_down_s, next_down + broker_every_s
            elif back_at is not None and now >= back_at:
                broker.start()
                outages[-1][1] = (time.monotonic() - started) / 60
                back_at = None
            if now >= next_sample:
                next_sample += sample_every_s
                rss_mb, threads, cpu_s, fds = _read_proc(agent.pid)
                outbox_kb, depth, _ = _outbox_figures(outbox)
                sample = Sample(round((now - started) / 60, 2), round(rss_mb, 2), fds, threads,
                                round(100 * (cpu_s - last_cpu) / (now - last_t), 1), round(outbox_kb, 1), depth,
                                broker.up, receiver.count)
                last_cpu, last_t = cpu_s, now
                samples.append(sample)
                if progress:
                    progress(format_row(sample))
            time.sleep(0.5)
        if not broker.up:
            broker.start()
            outages[-1][1] = (time.monotonic() - started) / 60
        _wait_sent(outbox)
        agent.send_signal(signal.SIGTERM)
        status = agent.wait(60)
    finally:
        if agent.poll() is None:
            agent.kill()
            agent.wait()
        log.close()
    try:
        delivered = _delivery(receiver, outbox)
    finally:
        receiver.close()
        broker.stop()
    result = summarise(samples, warmup_s / 60, delivered, receiver.conflicts)
    result.update(exit_status=status, outages=outages, duration_s=duration_s, fps=fps, window_s=window_s,
                  video=str(video), broker_every_s=broker_every_s, broker_down_s=broker_down_s,
                  environment=environment)
    (out / "soak.json").write_text(json.dumps(result, indent=1))
    return result


def _wait_sent(outbox):
    """Let the agent send its backlog from the last outage before it is stopped."""
    deadline = time.monotonic() + DRAIN_TIMEOUT_S
    while _outbox_figures(outbox)[1] and time.monotonic() < deadline:
        time.sleep(1)


def _delivery(receiver, outbox):
    """Every window the broker acknowledged must reach the receiver; the one closed at SIGTERM may stay
    in the outbox, for the next start (the product's design)."""
    deadline = time.monotonic() + DRAIN_TIMEOUT_S
    while True:
        _, depth, stored = _outbox_figures(outbox)
        with Outbox(outbox, read_only=True) as box:
            waiting = {pending.seq for pending in box.pending(limit=10_000)}
        missing = sorted(set(range(stored or 0)) - set(receiver.windows) - waiting)
        if not missing or time.monotonic() > deadline:
            frames = sorted(json.loads(payload)["frames"] for payload in receiver.windows.values())
            return {"stored": stored, "received": receiver.count, "missing": missing[:20],
                    "missing_count": len(missing), "left_in_outbox": depth,
                    "median_frames_per_window": frames[len(frames) // 2] if frames else None}
        time.sleep(1)


def summarise(samples, warmup_min, delivered, conflicts):
    steady = [s for s in samples if s.minute >= warmup_min] or samples
    minutes = [s.minute for s in steady]
    slopes = {name: round(slope_per_hour(minutes, [getattr(s, name) for s in steady]), 3)
              for name in ("rss_mb", "fds", "threads", "outbox_kb", "cpu_pct")}
    hours = (minutes[-1] - minutes[0]) / 60 if len(minutes) > 1 else 0.0

    def growth(name):
        # Counted in whole units: sampled while the broker is up or down, fds differ by its socket.
        up = [getattr(s, name) for s in steady if s.broker_up] or [getattr(s, name) for s in steady]
        return max(up[len(up) // 2:], default=0) - max(up[:max(1, len(up) // 2)], default=0)

    verdicts = {
        f"RSS slope under {RSS_SLOPE_LIMIT_MB_PER_H:g} MB/h": slopes["rss_mb"] < RSS_SLOPE_LIMIT_MB_PER_H,
        "no fd growth": growth("fds") <= 0,
        "no thread growth": growth("threads") <= 0,
        "every window delivered, once": not delivered["missing_count"] and not conflicts
        and (delivered["left_in_outbox"] or 0) <= 1,
    }
    return {"samples": [asdict(s) for s in samples], "warmup_min": warmup_min, "steady_hours": round(hours, 3),
            "slopes_per_hour": slopes, "fd_growth": growth("fds"), "thread_growth": growth("threads"),
            "delivered": delivered, "conflicts": conflicts[:20], "verdicts": verdicts}


HEADER = f"{'min':>6} {'RSS MB':>8} {'fds':>4} {'thr':>4} {'CPU %':>6} {'outbox KB':>9} {'depth':>5} " \
         f"{'broker':>6} {'recv':>5}"


def format_row(s):
    depth = "?" if s.outbox_depth is None else s.outbox_depth
    return (f"{s.minute:6.1f} {s.rss_mb:8.1f} {s.fds:4d} {s.threads:4d} {s.cpu_pct:6.1f} {s.outbox_kb:9.1f} "
            f"{depth!s:>5} {'up' if s.broker_up else 'down':>6} {s.received:5d}")


def format_report(result) -> str:
    samples = [Sample(**s) for s in result["samples"]]
    slopes = result["slopes_per_hour"]
    delivered = result["delivered"]
    lines = [HEADER, *map(format_row, samples), "",
             f"slopes per hour after a {result['warmup_min']:g} min warm-up ({result['steady_hours']:.2f} h fitted): "
             f"RSS {slopes['rss_mb']:+.2f} MB, fds {slopes['fds']:+.2f}, threads {slopes['threads']:+.2f}, "
             f"outbox {slopes['outbox_kb']:+.1f} KB, CPU {slopes['cpu_pct']:+.2f} points",
             f"fd growth {result['fd_growth']:+d}, thread growth {result['thread_growth']:+d} "
             "(second half's peak against the first's, broker up)",
             f"windows: {delivered['stored']} stored, {delivered['received']} received, "
             f"{delivered['missing_count']} missing, {delivered['left_in_outbox']} left in the outbox, "
             f"{len(result['conflicts'])} conflicts, median {delivered['median_frames_per_window']} frames per "
             f"{result['window_s']} s window; agent exit status {result['exit_status']}",
             f"broker outages (min): {', '.join(f'{a:.1f}-{b:.1f}' for a, b in result['outages']) or 'none'}",
             "the agent's environment, as the unit's: "
             + ", ".join(f"{name}={value}" for name, value in result["environment"].items())]
    lines += [f"{'ok  ' if passed else 'FAIL'} {name}" for name, passed in result["verdicts"].items()]
    return "\n".join(lines)


def draw_chart(result, path):
    """RSS, fds, threads, CPU and outbox size against minutes, broker outages shaded."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise EdgeAgentError("drawing the soak chart needs matplotlib: pip install matplotlib") from None
    samples = result["samples"]
    minutes = [s["minute"] for s in samples]
    panels = [("rss_mb", "RSS (MB)"), ("fds", "open fds"), ("threads", "threads"), ("cpu_pct", "CPU (% of a core)"),
              ("outbox_kb", "outbox (KB)")]
    figure, axes = plt.subplots(len(panels), 1, sharex=True, figsize=(9, 10))
    for ax, (key, label) in zip(axes, panels, strict=True):
        ax.plot(minutes, [s[key] for s in samples], marker=".", linewidth=1)
        ax.set_ylabel(label)
        for start, end in result["outages"]:
            ax.axvspan(start, end if end is not None else minutes[-1], color="#d62728", alpha=0.12, linewidth=0)
        ax.grid(alpha=0.3)
    slopes = result["slopes_per_hour"]
    axes[0].set_title(f"edge-agent soak, {result['fps']:g} fps, {result['window_s']} s windows; broker down shaded; "
                      f"RSS {slopes['rss_mb']:+.2f} MB/h")
    axes[-1].set_xlabel("minutes since start")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path
