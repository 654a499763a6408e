"""The dashboard as instructors and IT see it: served over HTTP and opened in a real headless Chromium."""

import base64
import re
import subprocess
import sys

import numpy as np
import pytest
from matplotlib.image import imread

from edge_agent.collector.dashboard import Dashboard
from edge_agent.collector.store import Store
from edge_agent.common.contract import StatsPayload, StatusPayload, format_utc
from support import REPO, browser
from support.windows import T0, lesson, window

pytestmark = pytest.mark.skipif(browser.unavailable() is not None, reason=str(browser.unavailable()))

WEEK = 7 * 86400
NOW = T0 + 2 * WEEK + 50 * 60
# A4 at 96 px per inch, less the pages' 12 mm margins on either side.
A4_CONTENT_PX = round((210 - 2 * 12) / 25.4 * 96)


def stats(device, at, **fields):
    values = {"device": device, "t": format_utc(at), "uptime_s": 600.0, "fps": 1.0, "detect_ms": 310.0,
              "faces_per_frame": 12.0, "outbox_depth": 0, "dropped_windows": 0, "camera": "running",
              "cpu_temp_c": 55.0, "rss_mb": 180.0}
    return StatsPayload.model_validate(values | fields)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    folder = tmp_path_factory.mktemp("dashboard")
    store = Store(f"sqlite:///{folder / 'c.sqlite3'}")
    for week in range(3):
        first = week * WEEK // 60
        store.add_windows(lesson(range(first, first + 40))
                          + [window("pi-101a", first + m, suppressed=True) for m in range(40, 45)]
                          + lesson(range(first + 45, first + 50)))
    store.add_windows(lesson(range(0, 20), room="102", devices=("pi-102a",)))
    devices = {"pi-101a": ("101", {}), "pi-101b": ("101", {"cpu_temp_c": 86.0}),
               "pi-102a": ("102", {"camera": "stalled"}), "pi-103a": ("103", {})}
    for name, (room, fields) in devices.items():
        store.set_status(StatusPayload(device=name, state="online", camera="running"), site="north", room=room,
                         received_at=NOW - 3600)
        for at in range(NOW - 7200, NOW, 60):
            store.add_stats([(name, stats(name, at, **fields))], received_at=at)
        store.touch_many({name: ("north", room)}, seen_at=NOW - 30)
    Dashboard(folder / "www", history_weeks=4).build(store, now=NOW)
    store.close()
    server = subprocess.Popen([sys.executable, "-m", "edge_agent.collector.cli", "serve", "--dir", folder / "www",
                               "--port", "0"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=REPO)
    try:
        yield server.stdout.readline().split(" at ")[1].split()[0], folder
    finally:
        server.terminate()
        server.wait(10)


def drawn_share(path, bare_path):
    """Share of the screenshot's pixels that differ from the same page with its images hidden."""
    return float(np.mean(np.abs(imread(path)[..., :3] - imread(bare_path)[..., :3]).max(axis=-1) > 0.1))


def assert_images_load(chrome, at_least):
    images = browser.images(chrome)
    assert len(images) >= at_least, images
    assert all(complete and width > 0 for _, complete, width in images), images
    assert chrome.execute_script("return document.scripts.length") == 0


PAGES = {"index": ("index.html", 0), "room": ("rooms/north/101.html", 2),
         "lesson": ("rooms/north/101/20261207T1000.html", 3), "week": ("rooms/north/101/2026-W49.html", 0),
         "device": ("devices/pi-101b.html", 2)}


def test_every_page_kind_loads_every_image_in_chromium(served):
    url, folder = served
    with browser.chromium() as chrome:
        for name, (page, images) in PAGES.items():
            chrome.get(url + page)
            assert_images_load(chrome, images)
            if images:
                # Charts that drew show on the screen: the page differs from itself with its images hidden.
                chrome.save_screenshot(str(folder / f"{name}.png"))
                chrome.execute_script("document.querySelectorAll('img').forEach(i => i.style.visibility = 'hidden')")
                chrome.save_screenshot(str(folder / f"{name}-bare.png"))
                assert drawn_share(folder / f"{name}.png", folder / f"{name}-bare.png") > 0.004, name


def test_problem_rows_come_first_and_are_marked(served):
    url, _ = served
    with browser.chromium() as chrome:
        chrome.get(url)
        rows = chrome.execute_script("""
            return Array.from(document.querySelectorAll('#devices ~ table tr')).slice(1).map(row => [
                row.cells[0].innerText, row.className, row.cells[row.cells.length - 1].innerText,
                getComputedStyle(row).backgroundColor, getComputedStyle(row.cells[0]).borderLeftWidth]);""")
    assert [row[0] for row in rows] == ["pi-101b", "pi-102a", "pi-101a", "pi-103a"]
    for name, css_class, attention, background, border in rows[:2]:
        assert css_class == "p" and attention.startswith("needs attention:"), name
        assert background != "rgba(0, 0, 0, 0)" and border == "4px", name
    assert "CPU 86 °C" in rows[0][2] and "camera stalled" in rows[1][2]
    for name, css_class, attention, background, _ in rows[2:]:
        assert css_class == "" and attention == "no" and background == "rgba(0, 0, 0, 0)", name


def test_older_lessons_are_a_click_away(served):
    url, _ = served
    with browser.chromium() as chrome:
        chrome.get(url)
        chrome.find_element("link text", "north/101").click()
        assert chrome.title.startswith("north/101")
        chrome.find_element("link text", "2026-W48").click()
        assert chrome.title == "north/101, week 2026-W48"
        chrome.find_element("partial link text", "Mon 2026-11-23 10:00").click()
        assert chrome.title.startswith("north/101: Mon 2026-11-23 10:00")
        assert_images_load(chrome, 3)
        chrome.find_element("partial link text", "Mon 2026-11-30 10:00").click()
        assert chrome.title.startswith("north/101: Mon 2026-11-30 10:00")


def test_pages_fit_an_a4_page_when_printed(served):
    url, _ = served
    with browser.chromium(width=A4_CONTENT_PX, height=1200) as chrome:
        chrome.execute_cdp_cmd("Emulation.setEmulatedMedia", {"media": "print"})
        for name, (page, _) in PAGES.items():
            chrome.get(url + page)
            width = chrome.execute_script("return [document.documentElement.scrollWidth, window.innerWidth]")
            assert width[0] <= width[1], (name, width)
        chrome.get(url + PAGES["lesson"][0])
        pdf = base64.b64decode(chrome.execute_cdp_cmd("Page.printToPDF", {"preferCSSPageSize": True})["data"])
    # The page's own @page rule makes it A4 (595 x 842 points), where Chromium's default is US Letter.
    assert re.search(rb"/MediaBox \[0 0 59[45]\.\d+ 841\.\d+\]", pdf)
