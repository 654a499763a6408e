"""``edge-collector`` as a user runs it: report, dashboard, serve and check, each a fresh process."""

import os
import re
import subprocess
import sys
import urllib.request

import pytest

from edge_agent.collector.store import Store
from support import REPO
from support.broker import Mosquitto
from support.windows import lesson

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def collector(*args, **kwargs):
    return subprocess.run([sys.executable, "-m", "edge_agent.collector.cli", *map(str, args)], capture_output=True,
                          text=True, cwd=REPO, timeout=300, **kwargs)


@pytest.fixture
def config(tmp_path):
    """A config whose store holds two lessons in north/101 (10:00, 11:00) and one in south/101."""
    store = Store(f"sqlite:///{tmp_path / 'c.sqlite3'}")
    store.add_windows(lesson(range(0, 30)) + lesson(range(60, 80))
                      + lesson(range(0, 10), site="south", devices=("pi-s1",)))
    store.close()
    path = tmp_path / "collector.yaml"
    path.write_text(f"store:\n  url: sqlite:///c.sqlite3\ndashboard:\n  output_dir: {tmp_path / 'www'}\n")
    return path


def test_report_of_the_latest_session_as_png(config, tmp_path):
    out = tmp_path / "report.png"
    result = collector("report", "--config", config, "--room", "north/101", "--out", out)
    assert result.returncode == 0, result.stderr
    assert "north/101, 20 minutes, interest 80%" in result.stdout
    assert out.read_bytes().startswith(PNG_SIGNATURE)


def test_report_of_a_period_as_pdf(config, tmp_path):
    out = tmp_path / "report.pdf"
    result = collector("report", "--config", config, "--room", "north/101", "--from", "2026-11-23T10:00:00Z",
                       "--to", "2026-11-23T10:15Z", "--out", out)
    assert result.returncode == 0, result.stderr
    assert "15 minutes" in result.stdout
    assert out.read_bytes().startswith(b"%PDF")


@pytest.mark.parametrize("args, message", [
    (["--room", "101"], r"room 101 exists in several sites \(north, south\): give it as SITE/101"),
    (["--room", "north/999"], r"no windows from room north/999 in the store \(rooms with data: north/101, south/101\)"),
    (["--room", "north/101", "--from", "2026-12-01T00:00Z"],
     r"no minute with faces to count from north/101 from 2026-12-01T00:00:00Z to now \(no windows, or only "),
    (["--room", "north/101", "--from", "yesterday"], "'yesterday' is not an ISO 8601 time"),
])
def test_report_mistakes_are_explained(config, tmp_path, args, message):
    result = collector("report", "--config", config, *args, "--out", tmp_path / "r.png")
    assert result.returncode == 2
    assert re.search(message, result.stderr), result.stderr
    assert not (tmp_path / "r.png").exists()


def test_report_refuses_an_unknown_format(config, tmp_path):
    result = collector("report", "--config", config, "--room", "north/101", "--out", tmp_path / "r.svg")
    assert result.returncode == 2
    assert "name the file .png or .pdf" in result.stderr


def test_dashboard_then_serve_over_http(config, tmp_path):
    built = collector("dashboard", "--config", config)
    assert built.returncode == 0, built.stderr
    assert "2 rooms, 3 lessons" in built.stdout
    server = subprocess.Popen([sys.executable, "-m", "edge_agent.collector.cli", "serve", "--config", config,
                               "--port", "0"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
    try:
        line = server.stdout.readline()
        assert "serving" in line, server.stderr.read() if server.poll() is not None else line
        url = line.split(" at ")[1].split()[0]
        index = urllib.request.urlopen(url, timeout=10).read().decode()
        assert "north/101" in index and "south/101" in index
        history = re.search(r'<img src="(101/history-[0-9a-f]+\.svg)"', urllib.request.urlopen(
            url + "rooms/north/101.html", timeout=10).read().decode()).group(1)
        chart = urllib.request.urlopen(url + "rooms/north/" + history, timeout=10)
        assert chart.headers["Content-Type"] == "image/svg+xml"
        assert chart.read().startswith(b"<svg")
    finally:
        server.terminate()
        server.wait(10)


def test_serve_before_any_dashboard_says_what_to_run(tmp_path):
    result = collector("serve", "--dir", tmp_path / "nothing", "--port", "0")
    assert result.returncode == 2
    assert "has no index.html yet: run `edge-collector run` or `edge-collector dashboard` first" in result.stderr


@pytest.mark.parametrize("bind", ["0.0.0.0", "::", "", "192.0.2.7"])
def test_serve_refuses_an_address_beyond_loopback_without_the_flag(config, bind):
    """Refused before the directory is looked at: it would serve every room with no login."""
    result = collector("serve", "--config", config, "--bind", bind, "--port", "0")
    assert result.returncode == 2
    assert result.stderr.startswith(f"edge-collector: error: --bind {bind or repr(bind)} would serve every room to "
                                    "anyone who reaches it, with no login: keep the default 127.0.0.1, ")
    assert "or add --without-login to serve it so anyway" in result.stderr
    assert len(result.stderr.splitlines()) == 1


@pytest.mark.parametrize("bind, flag", [("localhost", []), ("127.0.0.2", []), ("0.0.0.0", ["--without-login"])])
def test_serve_listens_on_loopback_or_when_told_it_has_no_login(config, bind, flag):
    built = collector("dashboard", "--config", config)
    assert built.returncode == 0, built.stderr
    server = subprocess.Popen([sys.executable, "-m", "edge_agent.collector.cli", "serve", "--config", config,
                               "--bind", bind, "--port", "0", *flag], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, cwd=REPO)
    try:
        line = server.stdout.readline()
        assert line.startswith("serving "), server.stderr.read() if server.poll() is not None else line
    finally:
        server.terminate()
        server.wait(10)


def test_check_reports_each_part(config):
    with Mosquitto() as broker:
        text = config.read_text() + f"mqtt:\n  host: 127.0.0.1\n  port: {broker.port}\n"
        config.write_text(text)
        result = collector("check", "--config", config)
    assert result.returncode == 0, result.stdout
    lines = result.stdout.splitlines()
    assert [line.split()[:2] for line in lines[:4]] == [["config", "ok"], ["store", "ok"], ["output", "ok"],
                                                        ["broker", "ok"]]
    assert "110 windows, 2 rooms" in lines[1]


def test_check_names_what_is_wrong(tmp_path):
    config = tmp_path / "collector.yaml"
    config.write_text("store:\n  url: postgresql://edge:secret@127.0.0.1:1/x\n"
                      "mqtt:\n  host: 127.0.0.1\n  port: 1\n"
                      "dashboard:\n  output_dir: /proc/version/www\n")
    result = collector("check", "--config", config)
    assert result.returncode == 1
    verdicts = {line.split()[0]: line for line in result.stdout.splitlines()[:4]}
    assert "FAIL" in verdicts["store"] and "secret" not in result.stdout
    assert "FAIL" in verdicts["output"] and "/proc/version/www" in verdicts["output"]
    assert "FAIL" in verdicts["broker"] and "127.0.0.1:1" in verdicts["broker"]
    assert result.stdout.rstrip().endswith("3 problem(s) found")


def test_a_bad_config_is_exit_status_2_with_the_line(tmp_path):
    config = tmp_path / "collector.yaml"
    config.write_text("sessions:\n  gap_minutes: 5\n")
    result = collector("dashboard", "--config", config, env={**os.environ})
    assert result.returncode == 2
    assert f"{config} line 2: unknown key sessions.gap_minutes" in result.stderr
