"""systemd integration: sd_notify against a socket the test owns, logging, the units."""

import itertools
import logging
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from edge_agent.common import service
from edge_agent.common.service import Notifier, configure_logging
from support import REPO

UNIT = REPO / "systemd" / "edge-agent.service"
COLLECTOR_UNIT = REPO / "systemd" / "edge-collector.service"
both_units = pytest.mark.parametrize("unit", [UNIT, COLLECTOR_UNIT], ids=["agent", "collector"])
SYSTEMD_ANALYZE = shutil.which("systemd-analyze")
needs_systemd_analyze = pytest.mark.skipif(SYSTEMD_ANALYZE is None, reason="systemd-analyze is not installed")


# --- sd_notify ---------------------------------------------------------------------------------

class NotifySocket:
    """The receiving end of NOTIFY_SOCKET: an AF_UNIX datagram socket, as systemd opens it."""

    def __init__(self, address):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(address)
        self.sock.setblocking(False)

    def messages(self):
        """Every datagram sent since the last call, each as a list of its lines."""
        received = []
        while True:
            try:
                received.append(self.sock.recv(4096).decode().split("\n"))
            except BlockingIOError:
                return received

    def close(self):
        self.sock.close()


@pytest.fixture
def clean_env(monkeypatch):
    for name in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


@pytest.fixture
def notify_socket(tmp_path, clean_env):
    path = tmp_path / "notify.sock"
    if len(str(path)) >= 100:  # sun_path holds 108 bytes
        pytest.skip(f"{path} is too long for an AF_UNIX address")
    receiver = NotifySocket(str(path))
    clean_env.setenv("NOTIFY_SOCKET", str(path))
    yield receiver
    receiver.close()


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_ready_sends_ready_and_status(notify_socket):
    notifier = Notifier()
    assert notifier.enabled
    notifier.ready("camera running, 0 windows sent")
    notifier.ready()
    assert notify_socket.messages() == [["READY=1", "STATUS=camera running, 0 windows sent"], ["READY=1"]]


def test_status_is_sent_only_when_it_changes(notify_socket):
    notifier = Notifier()
    notifier.status("connecting")
    notifier.status("connecting")
    notifier.status("camera running")
    notifier.status("camera running")
    notifier.status("connecting")
    assert notify_socket.messages() == [["STATUS=connecting"], ["STATUS=camera running"], ["STATUS=connecting"]]


def test_status_after_ready_with_the_same_text_is_not_repeated(notify_socket):
    notifier = Notifier()
    notifier.ready("camera running")
    notifier.status("camera running")
    assert notify_socket.messages() == [["READY=1", "STATUS=camera running"]]


def test_watchdog_pings_at_most_once_per_half_period(notify_socket, clean_env):
    clean_env.setenv("WATCHDOG_USEC", "200000")
    clock = FakeClock()
    notifier = Notifier(clock=clock)
    assert notifier.watchdog_interval_s == pytest.approx(0.1)
    sent = []
    for now in (0.0, 0.0, 0.05, 0.099, 0.1, 0.1, 0.15, 0.25, 0.3, 0.34):
        clock.now = now
        notifier.watchdog()
        sent.append(len(notify_socket.messages()))
    assert sent == [1, 0, 0, 0, 1, 0, 0, 1, 0, 0]


def test_watchdog_called_every_loop_iteration_keeps_the_pace(notify_socket, clean_env):
    clean_env.setenv("WATCHDOG_USEC", "200000")
    clock = FakeClock()
    notifier = Notifier(clock=clock)
    ping_times = []
    for step in range(1000):  # a 1 ms loop for one second
        clock.now = 5000 + step / 1000
        notifier.watchdog()
        ping_times += [clock.now] * len(notify_socket.messages())
    gaps = [b - a for a, b in itertools.pairwise(ping_times)]
    assert len(ping_times) == 10
    assert all(0.1 - 1e-9 <= gap <= 0.1 + 0.001 + 1e-9 for gap in gaps), gaps


def test_watchdog_sends_watchdog_1(notify_socket, clean_env):
    clean_env.setenv("WATCHDOG_USEC", "60000000")
    notifier = Notifier(clock=FakeClock())
    assert notifier.watchdog_interval_s == 30
    notifier.watchdog()
    assert notify_socket.messages() == [["WATCHDOG=1"]]


def test_watchdog_for_another_pid_is_disabled(notify_socket, clean_env):
    clean_env.setenv("WATCHDOG_USEC", "200000")
    clean_env.setenv("WATCHDOG_PID", str(os.getpid() + 1))
    notifier = Notifier(clock=FakeClock())
    assert notifier.watchdog_interval_s is None
    notifier.watchdog()
    assert notify_socket.messages() == []


def test_watchdog_pid_naming_this_process_pings(notify_socket, clean_env):
    clean_env.setenv("WATCHDOG_USEC", "200000")
    clean_env.setenv("WATCHDOG_PID", str(os.getpid()))
    notifier = Notifier(clock=FakeClock())
    notifier.watchdog()
    assert notify_socket.messages() == [["WATCHDOG=1"]]


def test_no_watchdog_without_watchdog_usec(notify_socket):
    notifier = Notifier(clock=FakeClock())
    assert notifier.watchdog_interval_s is None
    notifier.watchdog()
    assert notify_socket.messages() == []


def test_stopping_sends_stopping(notify_socket):
    notifier = Notifier()
    notifier.stopping()
    notifier.stopping("stopping: window in progress saved")
    assert notify_socket.messages() == [["STOPPING=1"], ["STOPPING=1", "STATUS=stopping: window in progress saved"]]


def test_reloading_sends_reloading_and_the_monotonic_time(notify_socket):
    notifier = Notifier()
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    notifier.reloading()
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    notifier.ready("reloaded")
    reloading, ready = notify_socket.messages()
    assert reloading[0] == "RELOADING=1"
    assert re.fullmatch(r"MONOTONIC_USEC=\d+", reloading[1])
    assert before <= int(reloading[1].split("=")[1]) <= after
    assert ready == ["READY=1", "STATUS=reloaded"]


def test_abstract_namespace_socket(clean_env):
    name = f"edge-agent-test-{uuid.uuid4().hex}"
    receiver = NotifySocket("\0" + name)
    try:
        clean_env.setenv("NOTIFY_SOCKET", "@" + name)
        Notifier().ready("abstract")
        assert receiver.messages() == [["READY=1", "STATUS=abstract"]]
    finally:
        receiver.close()


def test_everything_is_a_no_op_without_notify_socket(clean_env):
    clean_env.setenv("WATCHDOG_USEC", "200000")
    notifier = Notifier(clock=FakeClock())
    assert not notifier.enabled
    assert notifier.watchdog_interval_s is None
    notifier.ready("x")
    notifier.status("y")
    notifier.watchdog()
    notifier.stopping("z")
    notifier.reloading()


def test_a_vanished_socket_is_logged_once_and_not_raised(tmp_path, clean_env, caplog):
    clean_env.setenv("NOTIFY_SOCKET", str(tmp_path / "gone.sock"))
    notifier = Notifier()
    with caplog.at_level(logging.WARNING, logger="edge_agent.common.service"):
        notifier.ready()
        notifier.status("a")
        notifier.stopping()
    assert len([r for r in caplog.records if "sd_notify" in r.getMessage()]) == 1


# --- logging -----------------------------------------------------------------------------------

def run_python(code, env_extra=None):
    env = {k: v for k, v in os.environ.items() if k not in ("JOURNAL_STREAM", "INVOCATION_ID")}
    env.update(env_extra or {})
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                          cwd=REPO, timeout=60)


def test_logging_goes_to_stderr_outside_systemd_and_is_idempotent():
    result = run_python(
        "import logging\n"
        "from edge_agent.common.service import configure_logging\n"
        "configure_logging('DEBUG')\n"
        "configure_logging('info')\n"
        "logging.getLogger('edge_agent.test').debug('hidden')\n"
        "logging.getLogger('edge_agent.test').info('hello %s', 'there')\n"
        "print(len(logging.getLogger().handlers))\n"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "1"
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} INFO edge_agent\.test: hello there", lines[0])


def test_logging_falls_back_to_stderr_when_the_journal_socket_is_missing():
    result = run_python(
        "import logging\n"
        "from edge_agent.common import service\n"
        "service.JOURNAL_SOCKET = '/nonexistent/journal/socket'\n"
        "service.configure_logging()\n"
        "logging.getLogger('x').warning('still visible')\n"
        "print(type(logging.getLogger().handlers[0]).__name__)\n",
        {"INVOCATION_ID": "0123456789abcdef0123456789abcdef"},
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "StreamHandler"
    assert "WARNING x: still visible" in result.stderr


@pytest.fixture
def root_logger():
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield root
    root.handlers[:] = handlers
    root.setLevel(level)


def test_logging_uses_the_journal_under_systemd(tmp_path, monkeypatch, root_logger):
    from systemd.journal import JournalHandler

    journal_socket = tmp_path / "socket"
    journal_socket.touch()
    monkeypatch.setattr(service, "JOURNAL_SOCKET", str(journal_socket))
    monkeypatch.setenv("JOURNAL_STREAM", "8:12345")
    configure_logging("WARNING", name="edge-agent")
    configure_logging("WARNING", name="edge-agent")
    ours = [h for h in root_logger.handlers if h.get_name() == service.HANDLER_NAME]
    assert len(ours) == 1 and isinstance(ours[0], JournalHandler)
    assert ours[0]._extra["SYSLOG_IDENTIFIER"] == "edge-agent"
    assert root_logger.level == logging.WARNING


# --- the unit file -----------------------------------------------------------------------------

def unit_settings(text):
    """{key: [values]} over all sections; unit files repeat keys (DeviceAllow=, SystemCallFilter=)."""
    settings = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";", "[")):
            continue
        key, _, value = line.partition("=")
        settings.setdefault(key.strip(), []).append(value.strip())
    return settings


def runnable_copy(tmp_path, unit):
    """The unit with ExecStart= pointing at an executable that exists here (verify checks it)."""
    venv_binary = Path(sys.executable).parent / unit.stem
    binary = venv_binary if os.access(venv_binary, os.X_OK) else Path("/bin/true")
    text = re.sub(r"(?m)^ExecStart=(\S+)", lambda m: f"ExecStart={binary}", unit.read_text())
    copy = tmp_path / unit.name
    copy.write_text(text)
    return copy


@needs_systemd_analyze
@both_units
def test_unit_passes_systemd_analyze_verify(tmp_path, unit):
    copy = runnable_copy(tmp_path, unit)
    result = subprocess.run([SYSTEMD_ANALYZE, "verify", str(copy)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    # verify exits 0 even for unknown or unparsable settings; it names the file when it ignores one.
    complaints = [line for line in result.stderr.splitlines() if unit.name in line or "ignoring" in line.lower()]
    assert complaints == []


@needs_systemd_analyze
@both_units
def test_unit_exposure_is_at_most_2(unit):
    result = subprocess.run([SYSTEMD_ANALYZE, "security", "--offline=yes", str(unit)],
                            capture_output=True, text=True, timeout=60)
    output = result.stdout + result.stderr
    found = re.search(rf"Overall exposure level for {re.escape(unit.name)}: (\d+\.\d+)", output)
    assert found, output
    assert float(found.group(1)) <= 2.0, output


def test_unit_settings():
    settings = unit_settings(UNIT.read_text())

    def one(key):
        assert len(settings.get(key, [])) == 1, f"{key}= should be set exactly once"
        return settings[key][0]

    assert one("Type") == "notify"
    assert one("NotifyAccess") == "main"
    assert one("Restart") == "on-failure"
    assert one("ExecStart").startswith("/opt/edge-agent/venv/bin/edge-agent run --config ")
    assert "-HUP $MAINPID" in one("ExecReload")
    # The agent pings at half of WatchdogSec; the default Notifier interval follows it.
    assert 10 <= int(one("WatchdogSec")) <= 300
    assert one("StateDirectory") == "edge-agent"
    assert one("StateDirectoryMode") == "0700"
    assert one("User") not in ("root", "0")
    assert "video" in one("SupplementaryGroups").split()
    assert one("DevicePolicy") == "closed"
    allowed = {value.split()[0] for value in settings["DeviceAllow"]}
    # Names exactly as the kernel registers them in /proc/devices; systemd ignores a misspelt one.
    assert allowed == {"char-video4linux", "char-media", "char-dma_heap"}
    assert one("NoNewPrivileges") == "yes"
    assert one("CapabilityBoundingSet") == ""
    assert "network-online.target" in one("Wants").split()
    assert one("WantedBy") == "multi-user.target"
