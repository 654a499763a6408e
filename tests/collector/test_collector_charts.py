import math
from types import SimpleNamespace

import pytest

from edge_agent.collector.charts import (
    draw_interest,
    emotion_shares_chart,
    fleet_chart,
    gap_spans,
    interest_chart,
    interest_points,
    pyplot,
    seen_ago,
    session_figures,
    session_pie,
    session_report,
)
from edge_agent.collector.sessions import (
    Minute,
    Session,
    interest_series,
    room_minutes,
    smooth,
    split_sessions,
)
from edge_agent.common.contract import EMOTIONS
from support.windows import T0, lesson, window

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def mixed_session():
    payloads = [
        window("pi-101a", 0, happy=5, neutral=5, sad=10),
        window("pi-101b", 0, happy=2, angry=3, neutral=5),
        window("pi-101a", 1, suppressed=True),
        window("pi-101b", 1, happy=4, sad=6),
        window("pi-101a", 2, suppressed=True),
        window("pi-101b", 2, suppressed=True),
        window("pi-101a", 3, surprise=9, fear=1),
    ]
    [session] = split_sessions(payloads)
    return session


def zero_counts(**counts):
    return dict.fromkeys(EMOTIONS, 0) | counts


def test_room_minutes_sums_devices_and_keeps_gaps(mixed_session):
    minutes = mixed_session.minutes
    assert [m.start - T0 for m in minutes] == [0, 60, 120, 180]
    assert minutes[0].counts == zero_counts(happy=7, angry=3, neutral=10, sad=10)
    # One device suppressed, the other not: the slot keeps what the other saw.
    assert minutes[1].counts == zero_counts(happy=4, sad=6)
    assert minutes[2].counts is None
    assert mixed_session.totals() == zero_counts(happy=11, angry=3, neutral=10, sad=16, surprise=9, fear=1)
    assert mixed_session.interest() == pytest.approx(30 / 50)


def test_a_suppressed_minute_has_no_interest_rather_than_zero(mixed_session):
    ratios = dict(interest_series(mixed_session))
    assert ratios[T0 + 120] is None
    assert ratios[T0] == pytest.approx(17 / 30)


def test_room_minutes_counts_a_redelivered_window_once():
    first = window("pi-101a", 0, happy=3, sad=1)
    assert room_minutes([first, first]) == [Minute(T0, 60, zero_counts(happy=3, sad=1))]


def test_room_minutes_refuses_windows_of_two_rooms():
    with pytest.raises(ValueError, match="one room"):
        room_minutes([window("pi-101a", 0, happy=1), window("pi-102a", 0, room="102", happy=1)])


def test_a_room_with_only_suppressed_windows_has_no_interest():
    [session] = split_sessions([window("pi-101a", m, suppressed=True) for m in range(3)])
    assert session.totals() == zero_counts()
    assert session.interest() is None


def test_split_sessions_cuts_at_long_silences_only():
    # 101: 10:00-10:05, silent 20 min, 10:25-10:27, silent 9 min, 10:36-10:37. 102 runs alongside.
    payloads = (lesson(range(5)) + lesson(range(25, 27)) + lesson(range(36, 37))
                + lesson(range(2, 4), room="102", devices=("pi-102a",)))
    sessions = split_sessions(payloads, gap_s=15 * 60)
    assert [(s.room, s.start - T0, s.end - T0, len(s.minutes)) for s in sessions] == [
        ("101", 0, 300, 5), ("102", 120, 240, 2), ("101", 1500, 2220, 3)]
    assert sessions[0].interest() == pytest.approx(0.8)
    assert len(split_sessions(payloads, gap_s=20 * 60)) == 2
    assert len(split_sessions(payloads, gap_s=8 * 60)) == 4
    assert split_sessions([]) == []


def test_interest_series_and_smoothing_give_exact_values():
    payloads = [window("pi-101a", 0, happy=1, sad=1), window("pi-101a", 1, suppressed=True),
                window("pi-101a", 2, neutral=3, surprise=1), window("pi-101a", 3, angry=4, happy=1)]
    [session] = split_sessions(payloads)
    series = interest_series(session)
    assert series == [(T0, 0.5), (T0 + 60, None), (T0 + 120, 1.0), (T0 + 180, 0.2)]
    assert smooth([r for _, r in series], window=3) == pytest.approx([0.5, 0.75, 0.6, 0.6])
    assert smooth([0.5, None, 1.0, None, None, None, None, 0.2], window=3) == [
        0.5, 0.75, 1.0, 1.0, None, None, 0.2, 0.2]
    assert smooth([0.2, 0.4, 0.6, 0.8, 1.0]) == pytest.approx([0.4, 0.5, 0.6, 0.7, 0.8])
    assert smooth([None, None]) == [None, None]
    with pytest.raises(ValueError):
        smooth([0.1], window=4)


def test_gaps_are_never_plotted_as_zero(mixed_session):
    points = interest_points(mixed_session)
    assert [(t - T0, r) for t, r in points][2] == (120, None)
    plt = pyplot()
    fig, ax = plt.subplots()
    try:
        draw_interest(ax, mixed_session)
        per_minute, smoothed = ax.lines[:2]
        for line in (per_minute, smoothed):
            y = list(line.get_ydata())
            assert math.isnan(y[2])
            assert not any(v == 0 for v in y)
        assert per_minute.get_ydata()[0] == pytest.approx(100 * 17 / 30)
        assert "suppressed / no data" in [t.get_text() for t in ax.get_legend().get_texts()]
    finally:
        plt.close(fig)


def test_a_missing_window_breaks_the_line_too():
    [session] = split_sessions(lesson([0, 1, 4]))
    assert [(t - T0, r) for t, r in interest_points(session)] == [
        (0, pytest.approx(0.8)), (60, pytest.approx(0.8)), (120, None), (240, pytest.approx(0.8))]
    assert [(a - T0, b - T0) for a, b in gap_spans(session)] == [(120, 240)]


def assert_png(path):
    data = path.read_bytes()
    assert data.startswith(PNG_SIGNATURE)
    assert len(data) > 10_000, f"{path.name} is only {len(data)} bytes"


def test_every_chart_writes_a_real_png(tmp_path, mixed_session):
    interest_chart(mixed_session, tmp_path / "interest.png")
    emotion_shares_chart(mixed_session, tmp_path / "shares.png", title="Room 101, Monday")
    session_pie(mixed_session, tmp_path / "pie.png")
    session_report(mixed_session, tmp_path / "report.png")
    for name in ("interest", "shares", "pie", "report"):
        assert_png(tmp_path / f"{name}.png")


def test_session_report_as_pdf(tmp_path, mixed_session):
    session_report(mixed_session, tmp_path / "report.pdf")
    data = (tmp_path / "report.pdf").read_bytes()
    assert data.startswith(b"%PDF") and len(data) > 10_000


def test_charts_of_a_session_with_only_gaps_say_no_data(tmp_path):
    [session] = split_sessions([window("pi-101a", m, suppressed=True) for m in range(5)])
    assert all(r is None for _, r in interest_points(session))
    interest_chart(session, tmp_path / "interest.png")
    emotion_shares_chart(session, tmp_path / "shares.png")
    session_pie(session, tmp_path / "pie.png")
    session_report(session, tmp_path / "report.png")
    session_report(session, tmp_path / "report.pdf")
    for name in ("interest", "shares", "pie", "report"):
        assert_png(tmp_path / f"{name}.png")
    assert (tmp_path / "report.pdf").read_bytes().startswith(b"%PDF")
    assert dict(session_figures(session))["interest"] == "no data"
    plt = pyplot()
    fig, ax = plt.subplots()
    try:
        draw_interest(ax, session)
        assert any("no data" in t.get_text() for t in ax.texts)
    finally:
        plt.close(fig)


def test_a_session_without_minutes_still_draws(tmp_path):
    session = Session("north", "101", T0, T0, [])
    session_report(session, tmp_path / "report.png")
    assert_png(tmp_path / "report.png")


def device(name, state, last_seen, room="101", camera="picamera2"):
    return SimpleNamespace(device=name, site="north", room=room, state=state, camera=camera,
                           last_seen=last_seen, status_at=last_seen)


def test_fleet_chart_draws_every_state(tmp_path):
    now = T0 + 3600
    devices = [device("pi-101a", "online", now - 30), device("pi-101b", "offline", now - 45 * 60),
               device("pi-102a", "stopped", now - 3 * 3600, room="102"),
               device("pi-103a", None, None, room="103", camera=None)]
    fleet_chart(devices, tmp_path / "fleet.png", now=now)
    assert_png(tmp_path / "fleet.png")


def test_fleet_chart_without_devices_says_so(tmp_path):
    fleet_chart([], tmp_path / "fleet.png", now=T0)
    assert_png(tmp_path / "fleet.png")


def test_seen_ago_reads_naturally():
    assert seen_ago(None, T0) == "never seen"
    assert seen_ago(T0 - 30, T0) == "last seen 0 min ago"
    assert seen_ago(T0 - 45 * 60, T0) == "last seen 45 min ago"
    assert seen_ago(T0 - 3 * 3600, T0) == "last seen 3 h ago"
    assert seen_ago(T0 - 3 * 86400, T0) == "last seen 3 days ago"
