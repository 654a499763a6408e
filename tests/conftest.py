"""Fixtures shared across the suite; plain helpers are in the ``support`` package beside it."""

import os

import numpy as np
import pytest

from support import MODEL, PUBLICTEST, arm64, arm64_setup
from support.broker import Mosquitto
from support.postgres import Postgres, find_bin_dir

# TensorFlow must see this before its first import, whichever test imports it first.
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

ARM64_WARMER = pytest.StashKey()


def pytest_collection_modifyitems(items):
    # Last, so that their setup (arm64_setup), begun at the session's start, has the whole rest
    # of the suite's time to run in.
    items.sort(key=lambda item: item.get_closest_marker("arm64") is not None)


def pytest_collection_finish(session):
    if (session.config.option.collectonly or arm64.unavailable()
            or not any(item.get_closest_marker("arm64") for item in session.items)):
        return
    # A cold arm64 cache costs tens of minutes of emulated builds: fill it from now, in a process
    # of its own; a warm one lets the installs and the fleet begin now, beside the rest of the suite.
    if arm64.cold():
        session.config.stash[ARM64_WARMER] = arm64.start_warming()
    else:
        arm64_setup.started(session.config)


def pytest_runtest_setup(item):
    if item.get_closest_marker("arm64") is not None and arm64_setup.KEY in item.config.stash:
        item.config.stash[arm64_setup.KEY].test_began()


def pytest_terminal_summary(terminalreporter, config):
    # CI's log: whether the arm64 setup was ready when its tests began, or they waited for it.
    if line := arm64_setup.timeline(config):
        terminalreporter.write_line(line)


def pytest_sessionfinish(session):
    warmer = session.config.stash.get(ARM64_WARMER, None)
    if warmer is not None:
        arm64.stop_warming(warmer)
    arm64_setup.close(session.config)


@pytest.fixture(scope="session")
def classifier():
    from edge_agent.agent.emotions import EmotionClassifier

    return EmotionClassifier(MODEL)


@pytest.fixture(scope="session")
def publictest():
    """The first 500 PublicTest faces: enough for stable figures, quick to run."""
    if not PUBLICTEST.is_file():
        pytest.skip(f"{PUBLICTEST} is absent (../shared not beside the repo)")
    with np.load(PUBLICTEST) as data:
        return data["images"][:500], data["labels"][:500].astype(np.int64)


@pytest.fixture(scope="session")
def weights():
    """The float reference weights (fetched once by the setup script, checked by sha256)."""
    pytest.importorskip("tensorflow", reason="the [model] extra (TensorFlow) is not installed")
    from edge_agent.tools.model_build import fetch_weights

    return fetch_weights()


@pytest.fixture
def mosquitto():
    """A started anonymous broker without persistence, removed after the test."""
    broker = Mosquitto()
    broker.start()
    try:
        yield broker
    finally:
        broker.cleanup()


@pytest.fixture(scope="session")
def postgres():
    pytest.importorskip("psycopg", reason="psycopg is not installed (pip install 'psycopg[binary]')")
    if find_bin_dir() is None:
        pytest.skip("PostgreSQL is not installed (apt-get install postgresql)")
    with Postgres() as server:
        yield server


@pytest.fixture(scope="session")
def postgres_url(postgres):
    return postgres.url
