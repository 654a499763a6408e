"""``edge-agent run`` as a real process: real broker, a real video as the camera, short windows."""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import cv2
import pytest

from edge_agent.agent.faces import FaceDetector
from edge_agent.agent.outbox import Outbox
from edge_agent.agent.search import LearnedSearch
from edge_agent.common.contract import parse_payload
from support import CASCADE, DATA, REPO, free_port, run_cli
from support.broker import Mosquitto, Subscriber

VIDEO = DATA / "test.mp4"
EMOTIONS = "classroom/north/101/pi-test/emotions"
STATUS = "classroom/north/101/pi-test/status"


def write_config(path, port, *, outbox, window_s=2, loop=True, room="101", fps=4, stall_s=3, extra=""):
    path.write_text(
        f"device:\n  id: pi-test\n  site: north\n  room: '{room}'\n"
        f"camera:\n  source: {VIDEO}\n  loop: {str(loop).lower()}\n  fps: {fps}\n  stall_s: {stall_s}\n"
        f"  backoff_max_s: 2\n"
        f"window:\n  length_s: {window_s}\n  min_group: 1\n"
        f"mqtt:\n  host: 127.0.0.1\n  port: {port}\n  keepalive_s: 5\n  reconnect_max_s: 1\n"
        f"  stats_interval_s: 5\n"
        f"outbox:\n  path: {outbox}\n"
        # This machine's clock need not be NTP-synchronised; tests/agent/test_clock.py covers the wait.
        f"clock:\n  require_sync: false\n" + extra)
    return path


class AgentProcess:
    def __init__(self, config, env=None):
        self.process = subprocess.Popen(
            [sys.executable, "-m", "edge_agent.agent.cli", "run", "--config", str(config)], cwd=REPO,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})})

    def signal(self, number):
        self.process.send_signal(number)

    def wait(self, timeout=30):
        self.process.wait(timeout)
        return self.process.returncode, self.process.stdout.read()

    def kill(self):
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


@pytest.fixture
def agents():
    started = []

    def start(config, env=None):
        agent = AgentProcess(config, env)
        started.append(agent)
        return agent

    yield start
    for agent in started:
        agent.kill()


def windows(subscriber):
    """Windows received, deduplicated by (device, window_start) as the collector does, in arrival order."""
    seen, unique = set(), []
    for payload in subscriber.payloads("/emotions"):
        window = parse_payload("emotions", payload, ("north", "101", "pi-test"))
        if (window.device, window.window_start) not in seen:
            seen.add((window.device, window.window_start))
            unique.append(window)
    return unique


def count_windows(n):
    return lambda messages: sum(name.endswith("/emotions") for name, _, _ in messages) >= n


def test_no_window_is_lost_through_a_broker_outage_and_a_killed_agent(tmp_path, agents):
    broker = Mosquitto(persistence=True)
    broker.start()
    outbox_path = tmp_path / "state" / "outbox.sqlite3"
    config = write_config(tmp_path / "agent.yaml", broker.port, outbox=outbox_path)
    try:
        # A persistent session, as the collector keeps: windows sent while it is away are kept for it.
        with Subscriber(broker.port, [EMOTIONS], client_id="collector-test", clean_session=False) as collector:
            agent = agents(config)
            collector.wait_for(count_windows(2), timeout=30)
            broker.stop()
            time.sleep(5)  # windows close while the broker is away
            agent.signal(signal.SIGKILL)
            agent.wait()
            agent = agents(config)
            time.sleep(4)
            broker.restart()
            time.sleep(4)
            agent.signal(signal.SIGTERM)
            assert agent.wait()[0] == 0
            with Outbox(outbox_path) as outbox:
                computed, waiting = outbox.next_seq, outbox.depth
            assert waiting == 0
            received = collector.wait_for(count_windows(computed), timeout=20) and windows(collector)
    finally:
        broker.cleanup()
    seqs = [window.seq for window in received]
    assert sorted(seqs) == list(range(computed)), "every computed window arrives, no gap in seq"
    assert seqs == sorted(seqs), "oldest first"
    starts = [window.start_epoch for window in sorted(received, key=lambda w: w.seq)]
    assert starts == sorted(starts) and len(set(starts)) == len(starts)
    assert computed >= 6


def test_sigterm_saves_the_open_window_and_says_stopped(tmp_path, agents):
    with Mosquitto() as broker, Subscriber(broker.port, [EMOTIONS, STATUS]) as subscriber:
        config = write_config(tmp_path / "agent.yaml", broker.port, outbox=tmp_path / "outbox.sqlite3",
                              window_s=3600, extra="detector:\n  search:\n    learn_frames: 2\n")
        agent = agents(config)
        subscriber.wait_for(lambda messages: any(json.loads(p).get("camera") == "running"
                                                 for n, p, _ in messages if n == STATUS), timeout=30)
        time.sleep(2)
        agent.signal(signal.SIGTERM)
        status, output = agent.wait()
        assert status == 0, output
        (window,) = windows(subscriber)
        assert window.frames >= 4 and window.window_s == 3600
        assert json.loads(subscriber.payloads("/status")[-1])["state"] == "stopped"
    # What the face search learned is kept beside the outbox for the next start.
    learned = json.loads((tmp_path / "face_search.json").read_text())
    assert learned["frame"] and learned["observations"] and learned["bands"]


def test_broker_unreachable_at_start_queues_windows(tmp_path, agents):
    port = free_port()
    outbox_path = tmp_path / "outbox.sqlite3"
    agent = agents(write_config(tmp_path / "agent.yaml", port, outbox=outbox_path))
    time.sleep(7)
    agent.signal(signal.SIGTERM)
    status, output = agent.wait()
    assert status == 0, output
    assert f"127.0.0.1:{port}" in output
    with Outbox(outbox_path) as outbox:
        assert outbox.depth >= 2 and outbox.depth == outbox.next_seq


def test_sighup_rereads_the_config(tmp_path, agents):
    with Mosquitto() as broker, Subscriber(broker.port, ["classroom/north/+/pi-test/emotions"]) as subscriber:
        config = tmp_path / "agent.yaml"
        outbox = tmp_path / "outbox.sqlite3"
        agent = agents(write_config(config, broker.port, outbox=outbox))
        subscriber.wait_for(count_windows(1), timeout=30)
        write_config(config, broker.port, outbox=outbox, room="102")
        agent.signal(signal.SIGHUP)
        subscriber.wait_for(lambda messages: any(n.startswith("classroom/north/102/") for n, _, _ in messages),
                            timeout=30)
        # A broken config on the next SIGHUP is refused and the agent keeps going.
        config.write_text("window:\n  lenght_s: 60\n")
        agent.signal(signal.SIGHUP)
        time.sleep(1)
        assert agent.process.poll() is None
        agent.signal(signal.SIGTERM)
        status, output = agent.wait()
        assert status == 0
        assert "unknown key window.lenght_s" in output


def test_corrupt_outbox_is_moved_aside_and_the_agent_runs(tmp_path, agents):
    outbox_path = tmp_path / "outbox.sqlite3"
    outbox_path.write_bytes(b"this is not a database" * 100)
    with Mosquitto() as broker, Subscriber(broker.port, [EMOTIONS]) as subscriber:
        agent = agents(write_config(tmp_path / "agent.yaml", broker.port, outbox=outbox_path))
        subscriber.wait_for(count_windows(1), timeout=30)
        agent.signal(signal.SIGTERM)
        status, output = agent.wait()
    assert status == 0
    (aside,) = tmp_path.glob("outbox.sqlite3.corrupt-*[0-9]Z")
    assert aside.read_bytes() == b"this is not a database" * 100
    assert str(aside) in output


def test_config_error_stops_before_anything_starts(tmp_path):
    config = tmp_path / "agent.yaml"
    config.write_text(f"camera:\n  source: {VIDEO}\n  fsp: 2\noutbox:\n  path: {tmp_path / 'o.sqlite3'}\n")
    result = run_cli("run", "--config", config)
    assert result.returncode == 2
    assert result.stderr.strip() == f"edge-agent: error: {config} line 3: unknown key camera.fsp"
    assert not (tmp_path / "o.sqlite3").exists()


class NotifySocket:
    """A datagram socket standing in for systemd's NOTIFY_SOCKET."""

    def __init__(self, path):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.2)
        self.path = path
        self.messages = []

    def collect(self, seconds):
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                self.messages.append((time.monotonic(), self.sock.recv(4096).decode()))
            except TimeoutError:
                pass
        return self.messages

    def lines(self, prefix):
        return [(t, line) for t, message in self.messages for line in message.splitlines() if line.startswith(prefix)]


def test_systemd_ready_watchdog_status_and_stopping(tmp_path, agents):
    notify = NotifySocket(tmp_path / "notify")
    with Mosquitto() as broker:
        # No loop: the file ends after 4.7 s, like a camera that stops delivering.
        config = write_config(tmp_path / "agent.yaml", broker.port, outbox=tmp_path / "o.sqlite3", loop=False,
                              stall_s=2)
        agent = agents(config, env={"NOTIFY_SOCKET": str(tmp_path / "notify"), "WATCHDOG_USEC": "1000000",
                                    "WATCHDOG_PID": ""})
        notify.collect(12)
        agent.signal(signal.SIGTERM)
        status, output = agent.wait()
        notify.collect(1)
    assert status == 0, output
    ready = notify.lines("READY=1")
    assert ready, notify.messages
    pings = [t for t, _ in notify.lines("WATCHDOG=1")]
    assert len(pings) >= 3
    assert all(t >= ready[0][0] for t in pings)
    # The video ended: pings stop within stall_s (2 s) plus one ping interval, long before SIGTERM.
    last_ping = pings[-1]
    stopping = notify.lines("STOPPING=1")
    assert stopping and stopping[0][0] - last_ping > 3
    statuses = [line for _, line in notify.lines("STATUS=")]
    assert any("camera running" in line for line in statuses)
    assert any("camera ended" in line or "camera stalled" in line for line in statuses)


def test_check_reports_each_part(tmp_path):
    with Mosquitto() as broker:
        config = write_config(tmp_path / "agent.yaml", broker.port, outbox=tmp_path / "o.sqlite3")
        result = run_cli("check", "--config", config)
        assert result.returncode == 0, result.stdout + result.stderr
        lines = result.stdout.splitlines()
        assert [line.split()[:2] for line in lines[:6]] == [["config", "ok"], ["model", "ok"], ["camera", "ok"],
                                                            ["search", "ok"], ["outbox", "ok"], ["broker", "ok"]]
        assert "596x336 frames" in result.stdout and lines[-1] == "all good"
        assert "nothing learned yet" in lines[3]

        search = LearnedSearch(FaceDetector(CASCADE), learn_frames=1, state_path=tmp_path / "face_search.json")
        search.detect(cv2.imread(str(DATA / "justin.jpg"), cv2.IMREAD_GRAYSCALE))
        learned = run_cli("check", "--config", config).stdout.splitlines()[3]
    assert learned.split()[:2] == ["search", "ok"]
    assert "learned from 1 faces at" in learned and "rows" in learned


def test_check_names_what_is_wrong(tmp_path):
    config = write_config(tmp_path / "agent.yaml", free_port(), outbox=tmp_path / "o.sqlite3")
    config.write_text(config.read_text().replace(str(VIDEO), str(tmp_path / "gone.mp4")))
    result = run_cli("check", "--config", config)
    assert result.returncode == 1
    verdicts = {line.split()[0]: line for line in result.stdout.splitlines()[:6]}
    assert verdicts["camera"].split()[1] == "FAIL" and "gone.mp4 does not exist" in verdicts["camera"]
    assert verdicts["broker"].split()[1] == "FAIL"
    assert verdicts["model"].split()[1] == "ok"
    assert result.stdout.splitlines()[-1] == "2 problem(s) found"
