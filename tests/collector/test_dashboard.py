"""The static dashboard, built from a real SQLite store: lesson history, fleet health, only what changed."""

import re
from html.parser import HTMLParser
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import insert

from edge_agent.collector import dashboard as dashboard_module
from edge_agent.collector.dashboard import Dashboard, DashboardError
from edge_agent.collector.fleet import Thresholds
from edge_agent.collector.pages import file_name
from edge_agent.collector.store import Store, devices_table, windows_table
from edge_agent.common.contract import EMOTIONS, StatsPayload, StatusPayload, format_utc
from support.windows import T0, lesson, window

WEEK = 7 * 86400


def status(device, state="online", camera="running"):
    return StatusPayload.model_validate({"device": device, "state": state, "camera": camera, "version": "0.1.0"})


def stats(device, at, **fields):
    values = {"device": device, "t": format_utc(at), "uptime_s": 600.0, "fps": 1.0, "detect_ms": 310.0,
              "faces_per_frame": 12.0, "outbox_depth": 0, "dropped_windows": 0, "camera": "running",
              "cpu_temp_c": 55.0, "rss_mb": 180.0}
    return StatsPayload.model_validate(values | fields)


def report_minutely(store, device, room, start, end, **fields):
    for at in range(int(start), int(end), 60):
        store.add_stats([(device, stats(device, at, **fields))], received_at=at)
    store.touch_many({device: ("north", room)}, seen_at=end - 30)


class Links(HTMLParser):
    def __init__(self):
        super().__init__()
        self.links, self.images = [], []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "a" and attrs.get("href", "").endswith(".html"):
            self.links.append(attrs["href"])
        if tag == "img":
            self.images.append(attrs)


def parsed(path):
    links = Links()
    links.feed(path.read_text())
    return links


def lesson_pages(out, room="101"):
    return sorted(p.name for p in (out / "rooms" / "north" / room).glob("2*T*.html"))


def three_weeks_of_mondays(store):
    """Room 101 on three Mondays at 10:00 (80% interest each) and a Tuesday 11:00 in between (60%)."""
    for week in range(3):
        store.add_windows(lesson([week * WEEK // 60 + m for m in range(30)]))
    tuesday = [window("pi-101a", (WEEK + 86400 + 3600) // 60 + m, happy=6, sad=4) for m in range(20)]
    store.add_windows(tuesday)


def test_every_page_kind_is_written_and_every_link_and_image_resolves(store, tmp_path):
    three_weeks_of_mondays(store)
    store.add_windows(lesson(range(0, 20), room="102", devices=("pi-102a",)))
    store.set_status(status("pi-101a"), site="north", room="101", received_at=T0)
    store.set_status(status("pi-103a", "offline"), site="north", room="103", received_at=T0)
    now = T0 + 2 * WEEK + 40 * 60
    report_minutely(store, "pi-101a", "101", now - 3600, now)
    out = tmp_path / "www"
    result = Dashboard(out, history_weeks=4).build(store, now=now)
    assert (result.rooms, result.lessons) == (3, 5)
    assert lesson_pages(out) == ["20261123T1000.html", "20261130T1000.html", "20261201T1100.html",
                                 "20261207T1000.html"]
    assert sorted(p.name for p in (out / "rooms" / "north" / "101").glob("*-W*.html")) == [
        "2026-W48.html", "2026-W49.html", "2026-W50.html"]
    pages = [out / "index.html", *out.glob("rooms/*/*.html"), *out.glob("rooms/*/*/*.html"), *out.glob("devices/*")]
    pages = [page for page in pages if page.suffix == ".html"]
    assert {page.name for page in out.glob("devices/*.html")} == {"pi-101a.html", "pi-103a.html"}
    for page in pages:
        text = page.read_text()
        assert "<script" not in text and "http://" not in text and "https://" not in text, page
        found = parsed(page)
        for href in found.links:
            assert (page.parent / href).resolve().is_file(), f"{page}: {href}"
        for image in found.images:
            assert image.get("alt"), f"{page}: an image without a text alternative"
            chart = (page.parent / image["src"]).resolve()
            assert chart.read_text().startswith('<svg xmlns="http://www.w3.org/2000/svg"'), f"{page}: {image}"
    room = (out / "rooms" / "north" / "101.html").read_text()
    assert 'href="101/20261207T1000.html"' in room and 'href="101/2026-W48.html"' in room


def test_the_room_history_marks_the_lessons_of_the_latest_lessons_weekday_and_hour(store, tmp_path):
    three_weeks_of_mondays(store)
    out = tmp_path / "www"
    Dashboard(out, history_weeks=4).build(store, now=T0 + 2 * WEEK + 3600)
    room = (out / "rooms" / "north" / "101.html").read_text()
    [history] = [image for image in parsed(out / "rooms" / "north" / "101.html").images
                 if "history-" in image["src"]]
    assert "4 lessons since" in history["alt"] and "Mondays 10:00: 80%, 80%, 80%." in history["alt"]
    svg = (out / "rooms" / "north" / history["src"]).read_text()
    assert "<desc>" + history["alt"] in svg and "Mondays 10:00" in svg
    # Marked lessons are filled and joined, the others hollow rings: three dots and one ring.
    assert len(re.findall(r'a3\.6,3\.6 0 1,0 7\.2,0', svg)) == 3
    assert len(re.findall(r'a2\.6,2\.6 0 1,0 5\.2,0', svg)) == 1
    slots = room[room.index("By weekday and hour"):room.index("Recent lessons")]
    assert "<strong>Mondays 10:00</strong><td class=\"n\">3<td class=\"n\">80%" in slots
    assert "Tuesdays 11:00<td class=\"n\">1<td class=\"n\">60%" in slots


def test_a_lesson_page_compares_it_with_the_lessons_before_it(store, tmp_path):
    three_weeks_of_mondays(store)
    store.add_windows([window("pi-101a", 2 * WEEK // 60 + m, happy=3, sad=7) for m in range(30, 40)])
    out = tmp_path / "www"
    Dashboard(out, history_weeks=4).build(store, now=T0 + 2 * WEEK + 3600)
    latest = (out / "rooms" / "north" / "101" / "20261207T1000.html").read_text()
    assert "Mondays 10:00<td>80% over the 2 lessons before this one (80%, 80%)" in latest
    # Every face counts once: two Mondays of two cameras at 80% outweigh a Tuesday of one at 60%.
    assert "this room<td>77% over the 3 lessons before this one" in latest
    assert "lowest 5 minutes<td>10:30–10:35: 30%" in latest
    assert 'href="20261201T1100.html" rel="prev"' in latest and "no later lesson yet" in latest
    first = (out / "rooms" / "north" / "101" / "20261123T1000.html").read_text()
    assert "the first lesson of this slot in the last 4 weeks" in first and 'rel="next"' in first


def test_older_lessons_are_reached_week_by_week(store, tmp_path):
    three_weeks_of_mondays(store)
    out = tmp_path / "www"
    Dashboard(out, history_weeks=4).build(store, now=T0 + 2 * WEEK + 3600)
    room = out / "rooms" / "north" / "101.html"
    weeks = [href for href in parsed(room).links if "-W" in href]
    assert weeks == ["101/2026-W50.html", "101/2026-W49.html", "101/2026-W48.html"]
    page, seen = room.parent / weeks[0], []
    while True:
        text = page.read_text()
        seen.append(page.name)
        seen.extend(re.findall(r'href="(2026\d{4}T\d{4})\.html"', text))
        older = re.search(r'href="([^"]+)" rel="prev"', text)
        if not older:
            break
        page = page.parent / older.group(1)
    # Newest week first, each week's lessons Monday to Friday.
    assert seen == ["2026-W50.html", "20261207T1000", "2026-W49.html", "20261130T1000", "20261201T1100",
                    "2026-W48.html", "20261123T1000"]


def written(out):
    return {path: path.stat().st_mtime_ns for path in out.rglob("*") if path.is_file()}


def test_only_what_changed_is_drawn_again_and_a_restart_draws_nothing(store, tmp_path):
    store.add_windows(lesson(range(0, 30)) + lesson(range(60, 70)))
    out = tmp_path / "www"
    dashboard = Dashboard(out)
    first = dashboard.build(store, now=T0 + 71 * 60)
    assert (first.lessons, first.charts_drawn) == (2, 2 * 3 + 1)
    before = written(out)
    again = dashboard.build(store, now=T0 + 72 * 60)
    assert (again.pages, again.charts_drawn) == (1, 0), "the index only"
    assert {p for p, t in written(out).items() if before.get(p) != t} == {out / "index.html"}

    # The running lesson gets another minute: its page, charts and CSV, its week and its room (with the
    # room's CSV of lessons); nothing else.
    store.add_windows(lesson([70]))
    before = written(out)
    result = dashboard.build(store, now=T0 + 72 * 60)
    changed = {p.relative_to(out).as_posix() for p, t in written(out).items() if before.get(p) != t}
    stem = "rooms/north/101/20261123T1100"
    assert {c for c in changed if not c.endswith(".svg")} == {
        "index.html", "rooms/north/101.html", f"{stem}.html", f"{stem}.csv", "rooms/north/101/2026-W48.html",
        "rooms/north/101/lessons.csv", "rooms/north/101/.manifest.json"}
    # The room's history takes a lesson once it has ended: the running one leaves it alone.
    assert {re.sub(r"-[0-9a-f]{12}", "", c) for c in changed if c.endswith(".svg")} == {
        f"{stem}-interest.svg", f"{stem}-shares.svg", f"{stem}-pie.svg"}
    assert result.charts_drawn == 3
    assert not [p for p in before if p not in written(out) and "20261123T1000" in p.name], "the 10:00 lesson stays"
    assert len(list(out.rglob("*T1100-*.svg"))) == 3, "the replaced charts are gone"
    assert not list(out.rglob(".tmp-*"))

    # A new process reads what was drawn from the manifests and draws nothing again.
    before = written(out)
    restarted = Dashboard(out)
    result = restarted.build(store, now=T0 + 72 * 60)
    assert (result.pages, result.charts_drawn) == (1, 0)
    assert {p for p, t in written(out).items() if before.get(p) != t} == {out / "index.html"}

    # Once the lesson has ended (no minute for longer than the gap), the history takes it in.
    ended = restarted.build(store, now=T0 + 71 * 60 + 16 * 60)
    assert ended.charts_drawn == 1 and len(list(out.rglob("history-*.svg"))) == 1
    [history] = [i for i in parsed(out / "rooms" / "north" / "101.html").images if "history-" in i["src"]]
    assert history["alt"].startswith("2 lessons since")


def test_a_restart_with_another_reload_interval_redraws_every_page_with_it(store, tmp_path):
    """Every page reloads itself every ``refresh_s``: a page kept from before would keep the old interval."""
    store.add_windows(lesson(range(0, 30)) + lesson(range(60, 70)))
    out = tmp_path / "www"
    Dashboard(out).build(store, now=T0 + 90 * 60)
    Dashboard(out, refresh_s=300).build(store, now=T0 + 90 * 60)
    pages = sorted(out.rglob("*.html"))
    assert len(pages) == 5, pages  # the index, the room, two lessons and their week
    assert [p for p in pages if '<meta http-equiv="refresh" content="300">' not in p.read_text()] == []


def test_a_late_window_redraws_the_lesson_it_belongs_to(store, tmp_path):
    store.add_windows(lesson(range(5, 35)) + lesson(range(65, 95)))
    out = tmp_path / "www"
    dashboard = Dashboard(out)
    dashboard.build(store, now=T0 + 96 * 60)
    page = out / "rooms" / "north" / "101" / "20261123T1005.html"
    assert "30 (30 with data, 0 gaps)" in page.read_text()
    # A camera that was cut off sends its outbox, late: a minute before the first lesson began.
    store.add_windows([window("pi-101c", 4, happy=10)])
    dashboard.build(store, now=T0 + 97 * 60)
    assert lesson_pages(out) == ["20261123T1004.html", "20261123T1105.html"]
    assert "31 (31 with data, 0 gaps)" in (out / "rooms" / "north" / "101" / "20261123T1004.html").read_text()
    assert not page.exists(), "the lesson's old page went with its old start"


def test_suppressed_and_missing_minutes_stay_gaps_never_zero(store, tmp_path):
    store.add_windows(lesson(range(0, 10)) + [window("pi-101a", m, suppressed=True) for m in range(10, 14)]
                      + lesson(range(14, 20)) + lesson(range(22, 30)))
    store.add_windows([window("pi-102a", m, room="102", suppressed=True) for m in range(10)])
    out = tmp_path / "www"
    Dashboard(out).build(store, now=T0 + 31 * 60)
    page = out / "rooms" / "north" / "101" / "20261123T1000.html"
    images = {re.sub(r".*-", "", image["src"]): image for image in parsed(page).images}
    assert "6 minutes without data" in images["interest.svg"]["alt"]
    interest = (page.parent / images["interest.svg"]["src"]).read_text()
    # Two gaps shaded (10:10-10:14, 10:20-10:22), and the line broken at each: three runs.
    assert interest.count('fill="#e8e8e8"/>') == 2
    assert interest.count('stroke="#009e73" stroke-width="0.8"') == 3
    index = (out / "index.html").read_text()
    row = index[index.index("rooms/north/102.html"):]
    assert "no lesson with faces to count" in row[:300] and "0%" not in row[:300]
    assert "No lesson in the last 12 weeks" in (out / "rooms" / "north" / "102.html").read_text()


def test_lessons_older_than_the_history_leave_with_their_pages(store, tmp_path):
    store.add_windows(lesson(range(0, 10)) + lesson([WEEK // 60 + m for m in range(10)]))
    out = tmp_path / "www"
    Dashboard(out, history_weeks=1).build(store, now=T0 + WEEK + 3600)
    assert lesson_pages(out) == ["20261123T1000.html", "20261130T1000.html"]
    old_charts = list(out.rglob("20261123T1000-*.svg"))
    assert len(old_charts) == 3
    # A day later the horizon has moved past the first lesson (a new process: a restart in between).
    Dashboard(out, history_weeks=1).build(store, now=T0 + WEEK + 86400 + 3600)
    assert lesson_pages(out) == ["20261130T1000.html"]
    assert not any(chart.exists() for chart in old_charts)
    assert not (out / "rooms" / "north" / "101" / "2026-W48.html").exists()


def test_fleet_rows_come_problems_first_marked_with_what_is_wrong(store, tmp_path):
    now = T0 + 3600
    healthy = {"pi-a1": {}, "pi-z9": {}}
    sick = {"pi-hot": {"cpu_temp_c": 84.0}, "pi-slow": {"fps": 0.5}, "pi-stall": {"camera": "stalled"},
            "pi-odd": {"fps": 10_000.0, "cpu_temp_c": -300.0}}
    for name, fields in (healthy | sick).items():
        store.set_status(status(name), site="north", room="101", received_at=now - 3000)
        report_minutely(store, name, "101", now - 1200, now, **fields)
    store.set_status(status("pi-gone", "offline"), site="north", room="102", received_at=now - 3000)
    store.touch_many({"pi-gone": ("north", "102")}, seen_at=now - 3000)
    store.set_status(status("pi-mute"), site="north", room="103", received_at=now - 60)
    store.touch_many({"pi-mute": ("north", "103")}, seen_at=now - 60)
    out = tmp_path / "www"
    Dashboard(out).build(store, now=now)
    index = (out / "index.html").read_text()
    table = index[index.index('<h2 id="devices">'):]
    rows = re.findall(r"<tr( class=\"p\")?><td><a href=\"devices/([^\"]+)\.html\">", table)
    assert [(name, bool(mark)) for mark, name in rows] == [
        ("pi-hot", True), ("pi-odd", True), ("pi-slow", True), ("pi-stall", True), ("pi-gone", True),
        ("pi-a1", False), ("pi-z9", False), ("pi-mute", False)]
    assert "5 need attention" in index
    for text in ("CPU 84 °C", "0.5 fps, below 1", "camera stalled", "implausible fps 10000, cpu_temp_c -300",
                 "offline"):
        assert text in table
    mute = table[table.index("devices/pi-mute.html"):]
    assert '<td colspan="6" class="none">no stats<td>no' in mute[:400]
    odd = table[table.index("devices/pi-odd.html"):]
    assert '<td class="n off" title="implausible: stored as sent">10,000/1' in odd[:700]
    assert '<td class="n off" title="implausible: stored as sent">-300 °C' in odd[:900]


def test_a_device_page_draws_its_stats_and_says_no_stats_rather_than_zeros(store, tmp_path):
    now = T0 + 2 * 86400
    store.set_status(status("pi-1"), site="north", room="101", received_at=now - 3000)
    report_minutely(store, "pi-1", "101", now - 2 * 86400, now - 86400 * 0.5, fps=0.95)
    report_minutely(store, "pi-1", "101", now - 86400 * 0.5 + 60, now, fps=10_000.0, cpu_temp_c=-300.0)
    store.prune_stats(now=now)
    store.set_status(status("pi-2"), site="north", room="102", received_at=now - 60)
    store.touch_many({"pi-2": ("north", "102")}, seen_at=now - 60)
    out = tmp_path / "www"
    Dashboard(out).build(store, now=now)
    page = out / "devices" / "pi-1.html"
    text = page.read_text()
    images = parsed(page).images
    assert [image["src"].rsplit("-", 1)[1] for image in images] == ["day.svg", "month.svg"]
    day = (page.parent / images[0]["src"]).read_text()
    assert "Frames per second" in day and "<polyline" in day
    # fps 10,000 and -300 °C: stored, drawn as triangles at the edge, said in the panel, the table and the alt.
    assert "Frames per second: 72 off the scale" in day and "CPU temperature (°C): 72 off the scale" in day
    assert day.count('fill="#d55e00"/>') >= 144
    assert "10,000 (implausible: stored as sent)" in text and "72: drawn at the chart&#39;s edge" in text
    assert "Frames per second latest 10,000 (implausible: stored as sent)" in images[0]["alt"]
    assert "0.95" in (page.parent / images[1]["src"]).read_text() or "0.95" in text
    silent = (out / "devices" / "pi-2.html").read_text()
    assert "No stats from this device in the last 30 days" in silent and "<img" not in silent


def test_a_device_page_follows_its_stats_every_ten_minutes_not_every_refresh(store, tmp_path, monkeypatch):
    now = T0 + 3600
    report_minutely(store, "pi-1", "101", now - 1800, now)
    out = tmp_path / "www"
    dashboard = Dashboard(out)
    # The device's own phase put at 0: its page is due on the ten-minute marks.
    monkeypatch.setattr(dashboard_module, "DEVICE_PERIOD_S", 600)
    dashboard.build(store, now=now + 1)
    page = out / "devices" / "pi-1.html"
    drawn = page.stat().st_mtime_ns
    phase = int(dashboard_module.hashlib.sha256(b"pi-1").hexdigest()[:8], 16) % 600
    boundary = (now + 1 + phase) // 600 * 600 + 600 - phase
    report_minutely(store, "pi-1", "101", now, boundary - 1)
    dashboard.build(store, now=boundary - 1)
    assert page.stat().st_mtime_ns == drawn
    dashboard.build(store, now=boundary)
    assert page.stat().st_mtime_ns != drawn


def test_names_with_html_or_path_characters_are_escaped_and_hashed_for_files(store, tmp_path):
    # The contract never lets such names in; a store written some other way still must not break out.
    room, device = '<b onclick="x">1</b>/../../evil', "pi/../<i>"
    counts = dict.fromkeys(EMOTIONS, 0) | {"happy": 5}
    with store.engine.begin() as connection:
        connection.execute(insert(windows_table), [
            {"device": device, "window_start": T0 + 60 * m, "site": "north", "room": room, "window_s": 60, "seq": m,
             "frames": 60, "faces": 5, "faces_per_frame_median": 5, **counts, "suppressed": False, "model": "m",
             "received_at": T0} for m in range(10)])
        connection.execute(insert(devices_table), [{"device": device, "site": "north", "room": room,
                                                    "state": "<script>", "last_seen": T0}])
    out = tmp_path / "www"
    Dashboard(out).build(store, now=T0 + 11 * 60)
    every = [p for p in tmp_path.rglob("*") if p.is_file() and p.name != "collector.sqlite3"
             and not p.name.startswith("collector.sqlite3")]
    assert all(Path(p).resolve().is_relative_to(out.resolve()) for p in every)
    assert file_name(room).startswith("~") and file_name("pi-101a") == "pi-101a"
    assert (out / "rooms" / "north" / f"{file_name(room)}.html").is_file()
    assert (out / "devices" / f"{file_name(device)}.html").is_file()
    for page in [out / "index.html", *out.rglob("*.html")]:
        text = page.read_text()
        assert "<b onclick" not in text and "<i>" not in text and "<script>" not in text, page
    assert "&lt;b onclick=&#34;x&#34;&gt;1&lt;/b&gt;/../../evil" in (out / "index.html").read_text()
    for chart in out.rglob("*.svg"):
        assert "<b onclick" not in chart.read_text()


def test_times_are_shown_in_the_configured_zone(store, tmp_path):
    store.add_windows(lesson(range(0, 30)))
    Dashboard(tmp_path / "d", tz=ZoneInfo("Europe/Berlin")).build(store, now=T0 + 3600)
    room = (tmp_path / "d" / "rooms" / "north" / "101.html").read_text()
    assert "2026-11-23 11:00–11:30 CET" in room and "UTC" not in room


def test_an_empty_store_gives_a_page_that_says_so(store, tmp_path):
    Dashboard(tmp_path / "d").build(store)
    index = (tmp_path / "d" / "index.html").read_text()
    assert "No room has sent any data yet" in index and "No device has reported yet" in index


def test_an_unwritable_output_directory_is_a_clear_error(store, tmp_path):
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    dashboard = Dashboard(blocker / "dashboard")
    with pytest.raises(DashboardError, match=r"dashboard output .*not-a-directory/dashboard cannot be written: "):
        dashboard.check_writable()
    with pytest.raises(DashboardError, match="not-a-directory"):
        dashboard.build(store)


def test_the_fps_target_comes_from_the_fleet_settings(store, tmp_path):
    report_minutely(store, "pi-hall", "101", T0 - 600, T0, fps=1.5)
    Dashboard(tmp_path / "d", limits=Thresholds(fps_by_device={"pi-hall": 2.0})).build(store, now=T0)
    index = (tmp_path / "d" / "index.html").read_text()
    assert "1.5/2" in index and "1.5 fps, below 2" in index


def test_the_dashboard_draws_from_postgresql_too(postgres, tmp_path):
    store = Store(postgres.new_database())
    try:
        three_weeks_of_mondays(store)
        store.set_status(status("pi-101a"), site="north", room="101", received_at=T0)
        now = T0 + 2 * WEEK + 3600
        report_minutely(store, "pi-101a", "101", now - 7200, now, fps=0.5)
        out = tmp_path / "www"
        dashboard = Dashboard(out, history_weeks=4)
        assert dashboard.build(store, now=now).lessons == 4
        store.add_windows(lesson([2 * WEEK // 60 + 30]))
        assert dashboard.build(store, now=now + 60).charts_drawn >= 3, "the new minute is found and drawn"
    finally:
        store.close()
    assert lesson_pages(out) == ["20261123T1000.html", "20261130T1000.html", "20261201T1100.html",
                                 "20261207T1000.html"]
    assert "31 (31 with data, 0 gaps)" in (out / "rooms" / "north" / "101" / "20261207T1000.html").read_text()
    index = (out / "index.html").read_text()
    assert "0.5 fps, below 1" in index
    device = (out / "devices" / "pi-101a.html").read_text()
    assert device.count("<img") == 2 and "Frames per second<td>0.5" in device
