"""The dashboard as an instructor sees it: served over HTTP and opened in a real headless Chromium."""

import subprocess
import sys

import numpy as np
import pytest
from matplotlib.image import imread

from edge_agent.collector.dashboard import Dashboard
from edge_agent.collector.store import Store
from support import REPO, browser
from support.windows import lesson, window

pytestmark = pytest.mark.skipif(browser.unavailable() is not None, reason=str(browser.unavailable()))


@pytest.fixture
def served(tmp_path):
    store = Store(f"sqlite:///{tmp_path / 'c.sqlite3'}")
    store.add_windows(lesson(range(0, 40)) + [window("pi-101a", m, suppressed=True) for m in range(40, 45)]
                      + lesson(range(45, 60)) + lesson(range(0, 20), room="102"))
    Dashboard(tmp_path / "www").build(store)
    store.close()
    server = subprocess.Popen([sys.executable, "-m", "edge_agent.collector.cli", "serve", "--dir", tmp_path / "www",
                               "--port", "0"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=REPO)
    try:
        yield server.stdout.readline().split(" at ")[1].split()[0]
    finally:
        server.terminate()
        server.wait(10)


def coloured_share(path):
    """Share of the screenshot's pixels that are clearly coloured (charts), not white, grey or black text."""
    pixels = imread(path)[..., :3]
    return float(np.mean(pixels.max(axis=-1) - pixels.min(axis=-1) > 0.25))


def test_the_dashboard_shows_its_charts_in_chromium(served, tmp_path):
    with browser.chromium() as chrome:
        chrome.get(served)
        assert chrome.title == "Classroom interest"
        index_images = browser.images(chrome)
        assert index_images and all(complete and width > 0 for _, complete, width in index_images), index_images
        chrome.find_element("link text", "north/101").click()
        assert chrome.title.startswith("north/101")
        room_images = browser.images(chrome)
        assert len(room_images) == 3
        assert all(complete and width > 0 for _, complete, width in room_images), room_images
        chrome.save_screenshot(str(tmp_path / "room.png"))
    # A page whose images failed would be text on white; the charts fill it with colour.
    assert coloured_share(tmp_path / "room.png") > 0.05
