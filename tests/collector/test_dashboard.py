"""The static dashboard, built from a real SQLite store."""

import re
from zoneinfo import ZoneInfo

import pytest

from edge_agent.collector.dashboard import Dashboard, DashboardError
from edge_agent.collector.store import Store
from edge_agent.common.contract import StatusPayload
from support.windows import T0, lesson, window

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def store(tmp_path):
    store = Store(f"sqlite:///{tmp_path / 'collector.sqlite3'}")
    yield store
    store.close()


def status(device, state="online"):
    return StatusPayload.model_validate({"device": device, "state": state, "camera": "ok",
                                         "version": "0.1.0"})


def two_lessons_and_a_silent_room(store):
    # 101: a lesson at 10:00 and one at 11:00 (a 30 min silence ends the first); 102: status, no windows.
    store.add_windows(lesson(range(0, 30)) + lesson(range(60, 90)))
    store.set_status(status("pi-101a"), site="north", room="101", received_at=T0)
    store.set_status(status("pi-102a", "offline"), site="north", room="102", received_at=T0)


def images(html):
    return re.findall(r'<img src="([^"]+)"', html)


def test_index_room_pages_and_charts_are_written(store, tmp_path):
    two_lessons_and_a_silent_room(store)
    out = tmp_path / "dashboard"
    result = Dashboard(out).build(store, now=T0 + 95 * 60)
    assert (result.rooms, result.sessions, result.charts_drawn) == (2, 2, 6)

    index = (out / "index.html").read_text()
    assert 'href="rooms/north/101.html"' in index and 'href="rooms/north/102.html"' in index
    # The latest session leads the room's row, with its interest (6 happy + 2 neutral of 10).
    assert "2026-11-23 11:00–11:30 UTC" in index and "80%" in index
    assert "no data from this room yet" in index
    assert "pi-102a (offline)" in index
    assert 'http-equiv="refresh" content="60"' in index
    assert "<script" not in index and "http://" not in index and "https://" not in index

    room = (out / "rooms" / "north" / "101.html").read_text()
    assert room.count("<h2>") == 2
    assert room.index("11:00–11:30") < room.index("10:00–10:30"), "newest session first"
    sources = images(room)
    assert len(sources) == 6
    for source in sources + images(index):
        page_dir = out / "rooms" / "north" if source.startswith("..") else out
        chart = (page_dir / source).resolve()
        assert chart.read_bytes().startswith(PNG_SIGNATURE), source

    silent = (out / "rooms" / "north" / "102.html").read_text()
    assert "No data from this room yet" in silent and "<img" not in silent


def test_only_changed_sessions_are_redrawn_and_stale_charts_removed(store, tmp_path):
    store.add_windows(lesson(range(0, 30)) + lesson(range(60, 70)))
    dashboard = Dashboard(tmp_path / "dashboard")
    dashboard.build(store)
    before = set((tmp_path / "dashboard" / "charts").rglob("*.png"))
    assert dashboard.build(store).charts_drawn == 0

    # The running lesson gets another minute: only its three charts are drawn again.
    store.add_windows(lesson([70]))
    assert dashboard.build(store).charts_drawn == 3
    after = set((tmp_path / "dashboard" / "charts").rglob("*.png"))
    assert len(after) == 6
    assert len(before & after) == 3, "the finished lesson's charts are kept, the running one's replaced"
    assert not list((tmp_path / "dashboard").rglob(".tmp-*"))


def test_sessions_per_room_limits_the_room_page(store, tmp_path):
    store.add_windows(lesson(range(0, 5)) + lesson(range(60, 65)) + lesson(range(120, 125)))
    Dashboard(tmp_path / "d", sessions_per_room=2).build(store)
    room = (tmp_path / "d" / "rooms" / "north" / "101.html").read_text()
    assert room.count("<h2>") == 2 and "12:00–12:05" in room and "10:00" not in room


def test_the_gap_setting_decides_where_sessions_split(store, tmp_path):
    store.add_windows(lesson(range(0, 5)) + lesson(range(25, 30)))  # 20 minutes of silence
    assert Dashboard(tmp_path / "a", gap_s=15 * 60).build(store).sessions == 2
    assert Dashboard(tmp_path / "b", gap_s=30 * 60).build(store).sessions == 1


def test_a_fully_suppressed_session_says_no_data_instead_of_zero(store, tmp_path):
    store.add_windows([window("pi-101a", m, suppressed=True) for m in range(10)])
    Dashboard(tmp_path / "d").build(store)
    index = (tmp_path / "d" / "index.html").read_text()
    row = index[index.index("rooms/north/101.html"):]
    assert "no data" in row[:400] and "0%" not in row[:400]


def test_an_empty_store_gives_a_page_that_says_so(store, tmp_path):
    Dashboard(tmp_path / "d").build(store)
    index = (tmp_path / "d" / "index.html").read_text()
    assert "No room has sent any data yet" in index
    assert "No device has reported yet" in index
    assert (tmp_path / "d" / "fleet.png").read_bytes().startswith(PNG_SIGNATURE)


def test_an_unwritable_output_directory_is_a_clear_error(store, tmp_path):
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    dashboard = Dashboard(blocker / "dashboard")
    with pytest.raises(DashboardError, match=r"dashboard output .*not-a-directory/dashboard cannot be written: "):
        dashboard.check_writable()
    with pytest.raises(DashboardError, match="not-a-directory"):
        dashboard.build(store)


def test_times_are_shown_in_the_configured_zone(store, tmp_path):
    store.add_windows(lesson(range(0, 30)))
    Dashboard(tmp_path / "d", tz=ZoneInfo("Europe/Berlin")).build(store)
    room = (tmp_path / "d" / "rooms" / "north" / "101.html").read_text()
    assert "2026-11-23 11:00–11:30 CET" in room and "UTC" not in room
