"""Fixtures of the collector's tests."""

import pytest

from edge_agent.collector.store import Store


@pytest.fixture
def store(tmp_path):
    """An empty SQLite store in the test's directory (test modules with other needs define their own)."""
    store = Store(f"sqlite:///{tmp_path / 'collector.sqlite3'}")
    yield store
    store.close()
