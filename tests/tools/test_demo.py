"""``edge-agent demo`` end to end: the real broker, agents and collector, then the page in Chromium."""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from support import REPO, browser

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def processes_mentioning(text):
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if text in cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace"):
                found.append(cmdline.parent.name)
        except OSError:
            pass
    return found


def written_since(folder, moment):
    return [path for path in folder.rglob("*") if path.is_file() and path.stat().st_mtime >= moment]


BROKERS = {"mosquitto": "mosquitto", "embedded": "embedded broker (amqtt)"}


@pytest.fixture(scope="module", params=sorted(BROKERS))
def demo(request, tmp_path_factory):
    """The demo run once per broker from an empty directory, with a HOME of its own to catch stray files."""
    if request.param == "embedded":
        pytest.importorskip("amqtt", reason="the embedded broker is not installed (the [demo] extra)")
    work = tmp_path_factory.mktemp("demo")
    home = work / "home"
    home.mkdir()
    env = {key: value for key, value in os.environ.items() if not key.startswith("XDG_")}
    env.update(HOME=str(home), PYTHONDONTWRITEBYTECODE="1")
    started = time.time()
    result = subprocess.run([sys.executable, "-m", "edge_agent.agent.cli", "demo", "--out", "out", "--duration", "20",
                             "--window-s", "2", "--broker", request.param], cwd=work, env=env, capture_output=True,
                            text=True, timeout=300, stdin=subprocess.DEVNULL)
    return work, result, started, BROKERS[request.param]


def test_demo_reports_where_the_dashboard_is(demo):
    work, result, _, broker = demo
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"dashboard: {work / 'out' / 'dashboard' / 'index.html'}" in result.stdout
    assert f"broker: {broker};" in result.stdout
    stored = int(result.stdout.split("; ")[1].split()[0])
    assert stored >= 5, result.stdout
    for room in ("101", "102"):
        assert (work / "out" / f"report-demo-{room}.png").read_bytes().startswith(PNG_SIGNATURE)
        assert (work / "out" / "dashboard" / "rooms" / "demo" / f"{room}.html").is_file()


def test_demo_leaves_no_process_and_no_file_outside_its_output(demo):
    work, _, started, _ = demo
    assert processes_mentioning(str(work / "out")) == []
    assert sorted(path.name for path in work.iterdir()) == ["home", "out"]
    assert list((work / "home").iterdir()) == []
    # The package's own directory (samples, templates) is only read.
    assert written_since(REPO / "edge_agent", started) == []


@pytest.mark.skipif(browser.unavailable() is not None, reason=str(browser.unavailable()))
def test_demo_dashboard_shows_its_charts_in_chromium(demo):
    work, _, _, _ = demo
    site = work / "out" / "dashboard"
    # A room: its latest lesson and its history (the made-up earlier lessons); a lesson: three charts.
    pages = [("index.html", 0), ("rooms/demo/101.html", 2), ("rooms/demo/102.html", 2),
             (max((site / "rooms" / "demo" / "101").glob("2*T*.html")).relative_to(site), 3),
             ("devices/pi-102.html", 2)]
    with browser.chromium() as chrome:
        for page, expected in pages:
            chrome.get((site / page).as_uri())
            images = browser.images(chrome)
            assert len(images) >= expected, (page, images)
            assert all(complete and width > 0 for _, complete, width in images), (page, images)
