"""A real headless Chromium (Debian's chromium and chromedriver) driven by Selenium.

    with chromium() as browser:
        browser.get(url); loaded_images(browser); browser.save_screenshot(path)
"""

import os
import shutil
from contextlib import contextmanager

import pytest

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("CHROMEDRIVER", "/usr/bin/chromedriver")


def unavailable():
    for path in (CHROMIUM, CHROMEDRIVER):
        if not shutil.which(path):
            return f"{path} is not installed (scripts/setup.sh installs chromium and chromium-driver)"
    return None


@contextmanager
def chromium(width=1280, height=1600):
    reason = unavailable()
    if reason:
        pytest.skip(reason)
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (the [test] extra)")
    # Never let Selenium Manager go looking for a driver on the internet: Debian's is the one.
    os.environ["SE_OFFLINE"] = "true"
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     f"--window-size={width},{height}"):
        options.add_argument(argument)
    browser = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=CHROMEDRIVER))
    try:
        yield browser
    finally:
        browser.quit()


def images(browser):
    """Each <img> on the page: its URL, whether it finished loading, and its decoded width (0: broken)."""
    return browser.execute_script(
        "return Array.from(document.images).map(i => [i.currentSrc, i.complete, i.naturalWidth]);")
