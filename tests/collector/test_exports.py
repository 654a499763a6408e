"""The CSVs instructors take away: a lesson's minutes and a room's lessons, written with the dashboard's pages."""

import csv
import io
import re
from zoneinfo import ZoneInfo

from edge_agent.collector.dashboard import Dashboard
from edge_agent.collector.store import Store
from edge_agent.common.contract import EMOTIONS
from support.windows import T0, lesson, window

BERLIN = ZoneInfo("Europe/Berlin")


def rows(path):
    return list(csv.DictReader(io.StringIO(path.read_text(encoding="utf-8"))))


def figure(page, label):
    """A row of the lesson page's table of figures."""
    found = re.search(rf"<tr><th>{label}<td>([^\n<]+)", page.read_text())
    assert found, label
    return found.group(1)


def a_lesson_with_gaps(store):
    """Minutes 0-11 from two cameras; minute 3 suppressed by both, minute 5 never sent, minute 7 one camera's."""
    windows = [w for w in lesson(range(12)) if w.start_epoch not in (T0 + 3 * 60, T0 + 5 * 60, T0 + 7 * 60)]
    windows += [window(device, 3, suppressed=True) for device in ("pi-101a", "pi-101b")]
    windows += [window("pi-101a", 7, happy=1, angry=5, fear=2), window("pi-101b", 7, suppressed=True)]
    store.add_windows(windows)


def test_a_lesson_csv_adds_up_to_its_page_and_shows_its_gaps_as_empty_rows(store, tmp_path):
    a_lesson_with_gaps(store)
    store.add_windows(lesson(range(60, 70)))  # a later lesson, for the room's CSV
    out = tmp_path / "www"
    Dashboard(out, tz=BERLIN).build(store, now=T0 + 90 * 60)
    page = out / "rooms" / "north" / "101" / "20261123T1000.html"
    link = re.search(r'<a href="([^"]+\.csv)" download>', page.read_text())
    assert link and link.group(1) == "20261123T1000.csv"
    minutes = rows(page.parent / link.group(1))
    assert list(minutes[0]) == ["start", "faces", *EMOTIONS, "interest"]
    assert [row["start"] for row in minutes] == [f"2026-11-23T11:{m:02d}+01:00" for m in range(12)]
    # The chart's gaps: suppressed by every camera, and never sent. Empty, never zero.
    for gap in (3, 5):
        assert set(minutes[gap].values()) == {minutes[gap]["start"], ""}, minutes[gap]
    # A minute one camera suppressed counts the other's faces only, as the charts do.
    assert (minutes[7]["faces"], minutes[7]["angry"], minutes[7]["interest"]) == ("8", "5", "0.1250")
    assert minutes[0]["faces"] == "20" and minutes[0]["happy"] == "12" and minutes[0]["interest"] == "0.8000"
    counted = [row for row in minutes if row["faces"]]
    faces = sum(int(row["faces"]) for row in counted)
    assert f"{faces:,}" == figure(page, "faces counted")
    for row in counted:
        assert sum(int(row[label]) for label in EMOTIONS) == int(row["faces"])
    interested = sum(int(row[label]) for row in counted for label in ("happy", "surprise", "neutral"))
    assert f"{interested / faces:.0%}" == figure(page, "interest")

    room_page = out / "rooms" / "north" / "101.html"
    room_link = re.search(r'<a href="([^"]+\.csv)" download>', room_page.read_text())
    assert room_link and room_link.group(1) == "101/lessons.csv"
    lessons = rows(room_page.parent / room_link.group(1))
    assert [row["start"] for row in lessons] == ["2026-11-23T11:00+01:00", "2026-11-23T12:00+01:00"]
    first = lessons[0]
    assert (first["end"], first["minutes"], first["minutes_with_faces"]) == ("2026-11-23T11:12+01:00", "12", "10")
    assert int(first["faces"]) == faces
    for label in EMOTIONS:
        assert int(first[label]) == sum(int(row[label]) for row in counted), label
    assert f"{float(first['interest']):.0%}" == figure(page, "interest")
    assert first["lowest_5_minutes_start"] and first["lowest_5_minutes_interest"]


def test_the_csvs_follow_their_lesson_and_leave_with_the_room(tmp_path):
    store = Store(f"sqlite:///{tmp_path / 'collector.sqlite3'}", retention_days=365)
    store.add_windows(lesson(range(5)))
    out = tmp_path / "www"
    dashboard = Dashboard(out)
    dashboard.build(store, now=T0 + 6 * 60)
    lesson_csv = out / "rooms" / "north" / "101" / "20261123T1000.csv"
    assert len(rows(lesson_csv)) == 5
    store.add_windows(lesson([5, 6]))
    dashboard.build(store, now=T0 + 8 * 60)
    assert len(rows(lesson_csv)) == 7
    assert rows(out / "rooms" / "north" / "101" / "lessons.csv")[0]["minutes"] == "7"
    # Retention deleted the room's windows: a fresh process removes its pages, and its CSVs with them.
    assert store.apply_retention(now=T0 + 400 * 86400) == 14
    Dashboard(out).build(store, now=T0 + 400 * 86400)
    assert not (out / "rooms" / "north" / "101.html").exists()
    assert not list(out.rglob("*.csv"))
    store.close()
