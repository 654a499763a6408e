import re
import shutil
import socket
import subprocess

import pytest

from conftest import REPO
from edge_agent.service import Notifier, configure_logging, cpu_temperature_c

UNIT = REPO / "systemd" / "edge-agent.service"
needs_analyze = pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="systemd-analyze is not installed")


@pytest.fixture
def notify_socket(tmp_path, monkeypatch):
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(tmp_path / "notify"))
    sock.settimeout(0.2)
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "notify"))
    monkeypatch.delenv("WATCHDOG_PID", raising=False)

    def received():
        messages = []
        while True:
            try:
                messages.append(sock.recv(4096).decode())
            except socket.timeout:
                return messages

    yield received
    sock.close()


def test_ready_status_stopping_and_reloading(notify_socket):
    notifier = Notifier()
    notifier.ready("camera running")
    notifier.status("camera running")
    notifier.status("camera stalled")
    notifier.stopping()
    notifier.reloading()
    messages = notify_socket()
    assert messages[:3] == ["READY=1\nSTATUS=camera running", "STATUS=camera stalled", "STOPPING=1"]
    assert re.fullmatch(r"RELOADING=1\nMONOTONIC_USEC=\d+", messages[3])


def test_watchdog_pings_at_half_the_period(notify_socket, monkeypatch):
    monkeypatch.setenv("WATCHDOG_USEC", "2000000")
    now = [100.0]
    notifier = Notifier(clock=lambda: now[0])
    assert notifier.watchdog_interval_s == 1.0
    for step in range(30):
        now[0] = 100.0 + step * 0.1
        notifier.watchdog()
    assert notify_socket() == ["WATCHDOG=1"] * 3


def test_watchdog_meant_for_another_process_is_not_fed(notify_socket, monkeypatch):
    monkeypatch.setenv("WATCHDOG_USEC", "2000000")
    monkeypatch.setenv("WATCHDOG_PID", "1")
    notifier = Notifier()
    notifier.watchdog()
    assert notifier.watchdog_interval_s is None and notify_socket() == []


def test_without_systemd_nothing_is_sent(monkeypatch):
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    notifier = Notifier()
    notifier.ready("x")
    notifier.watchdog()
    assert not notifier.enabled


def test_logging_goes_to_stderr_outside_systemd(monkeypatch, capsys):
    import logging

    monkeypatch.delenv("JOURNAL_STREAM", raising=False)
    monkeypatch.delenv("INVOCATION_ID", raising=False)
    root = logging.getLogger()
    before = list(root.handlers)
    try:
        configure_logging("INFO")
        configure_logging("INFO")
        added = [h for h in root.handlers if h not in before]
        assert len(added) == 1
        logging.getLogger("edge_agent.test").info("hello from the agent")
        assert "INFO edge_agent.test: hello from the agent" in capsys.readouterr().err
    finally:
        root.handlers[:] = before


def test_cpu_temperature_prefers_the_cpu_zone(tmp_path):
    for name, kind, temp in (("thermal_zone0", "acpitz", "27800"), ("thermal_zone1", "cpu-thermal", "48312")):
        (tmp_path / name).mkdir()
        (tmp_path / name / "type").write_text(kind + "\n")
        (tmp_path / name / "temp").write_text(temp + "\n")
    assert cpu_temperature_c(tmp_path) == pytest.approx(48.312)
    assert cpu_temperature_c(tmp_path / "none") is None


def installable_unit(tmp_path):
    """The unit with ExecStart pointing at a program that exists here, as verify insists."""
    unit = tmp_path / "edge-agent.service"
    unit.write_text(UNIT.read_text().replace("/opt/edge-agent/venv/bin/edge-agent", shutil.which("true")))
    return unit


@needs_analyze
def test_unit_passes_systemd_analyze_verify(tmp_path):
    result = subprocess.run(["systemd-analyze", "verify", str(installable_unit(tmp_path))],
                            capture_output=True, text=True)
    assert result.returncode == 0 and result.stderr.strip() == "", result.stderr


@needs_analyze
def test_unit_exposure_is_2_or_lower(tmp_path):
    result = subprocess.run(["systemd-analyze", "security", "--offline=yes", str(installable_unit(tmp_path))],
                            capture_output=True, text=True)
    match = re.search(r"Overall exposure level for edge-agent.service: (\d+\.\d)", result.stdout)
    assert match, result.stdout + result.stderr
    assert float(match.group(1)) <= 2.0


def test_unit_runs_the_agent_as_a_notify_service_with_a_watchdog():
    text = UNIT.read_text()
    settings = dict(line.split("=", 1) for line in text.splitlines() if "=" in line and not line.startswith("#"))
    assert settings["Type"] == "notify" and settings["Restart"] == "on-failure"
    assert int(settings["WatchdogSec"]) > 0 and settings["StateDirectory"] == "edge-agent"
    assert settings["User"] not in ("root", "") and "video" in settings["SupplementaryGroups"].split()
    assert settings["ExecStart"].endswith("edge-agent run --config /etc/edge-agent/edge-agent.yaml")
