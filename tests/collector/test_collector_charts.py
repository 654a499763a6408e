"""A room's minutes from a real SQLite store, lessons cut from them, and the after-class report drawn."""

import math

import pytest

from edge_agent.collector.charts import (
    draw_interest,
    gap_spans,
    interest_points,
    pyplot,
    session_figures,
    session_report,
)
from edge_agent.collector.sessions import (
    Minute,
    Session,
    interest_series,
    low_stretch,
    smooth,
    split_minutes,
)
from edge_agent.common.contract import EMOTIONS
from support.windows import T0, lesson, window

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def lessons_of(store, payloads, room="101", gap_s=15 * 60):
    store.add_windows(payloads)
    return split_minutes("north", room, store.room_minutes("north", room), gap_s)


@pytest.fixture
def mixed_session(store):
    payloads = [
        window("pi-101a", 0, happy=5, neutral=5, sad=10),
        window("pi-101b", 0, happy=2, angry=3, neutral=5),
        window("pi-101a", 1, suppressed=True),
        window("pi-101b", 1, happy=4, sad=6),
        window("pi-101a", 2, suppressed=True),
        window("pi-101b", 2, suppressed=True),
        window("pi-101a", 3, surprise=9, fear=1),
    ]
    [session] = lessons_of(store, payloads)
    return session


def zero_counts(**counts):
    return dict.fromkeys(EMOTIONS, 0) | counts


def test_room_minutes_sum_devices_and_leave_out_what_has_no_faces(mixed_session):
    minutes = mixed_session.minutes
    assert [m.start - T0 for m in minutes] == [0, 60, 180]
    assert minutes[0].counts == zero_counts(happy=7, angry=3, neutral=10, sad=10)
    # One device suppressed, the other not: the slot keeps what the other saw.
    assert minutes[1].counts == zero_counts(happy=4, sad=6)
    assert (mixed_session.start - T0, mixed_session.end - T0, mixed_session.slots) == (0, 240, 4)
    assert mixed_session.totals() == zero_counts(happy=11, angry=3, neutral=10, sad=16, surprise=9, fear=1)
    assert mixed_session.interest() == pytest.approx(30 / 50)


def test_a_suppressed_minute_is_a_gap_rather_than_zero(mixed_session):
    assert dict(interest_series(mixed_session)) == {T0: pytest.approx(17 / 30), T0 + 60: pytest.approx(0.4),
                                                   T0 + 180: pytest.approx(0.9)}
    assert [(a - T0, b - T0) for a, b in gap_spans(mixed_session)] == [(120, 180)]
    assert [(t - T0, r) for t, r in interest_points(mixed_session)][2] == (120, None)


def test_room_minutes_count_a_redelivered_window_once(store):
    first = window("pi-101a", 0, happy=3, sad=1)
    store.add_windows([first, first])
    store.add_windows([first])
    assert store.room_minutes("north", "101") == [Minute(T0, 60, zero_counts(happy=3, sad=1))]


def test_room_minutes_keep_rooms_apart_and_honour_the_period(store):
    store.add_windows(lesson(range(5)) + lesson(range(5), room="102", devices=("pi-102a",)))
    assert [m.start - T0 for m in store.room_minutes("north", "101", start=T0 + 60, end=T0 + 180)] == [60, 120]
    assert store.room_minutes("north", "102")[0].counts == zero_counts(happy=6, neutral=2, sad=2)
    assert store.room_minutes("north", "101")[0].counts == zero_counts(happy=12, neutral=4, sad=4)


def test_a_room_with_only_suppressed_windows_has_no_lesson(store):
    assert lessons_of(store, [window("pi-101a", m, suppressed=True) for m in range(3)]) == []


def test_lessons_are_cut_where_nothing_was_counted_for_longer_than_the_gap(store):
    # 10:00-10:05, 20 min with no faces (suppressed: the cameras keep sending), 10:25-10:27, 9 min silent, 10:36.
    payloads = (lesson(range(5)) + [window("pi-101a", m, suppressed=True) for m in range(5, 25)]
                + lesson(range(25, 27)) + lesson(range(36, 37)))
    lessons = lessons_of(store, payloads, gap_s=15 * 60)
    assert [(s.start - T0, s.end - T0, len(s.minutes), s.slots) for s in lessons] == [
        (0, 300, 5, 5), (1500, 2220, 3, 12)]
    assert lessons[0].interest() == pytest.approx(0.8)
    assert len(split_minutes("north", "101", store.room_minutes("north", "101"), 20 * 60)) == 1
    assert len(split_minutes("north", "101", store.room_minutes("north", "101"), 8 * 60)) == 3
    assert split_minutes("north", "101", []) == []


def test_interest_series_and_smoothing_give_exact_values(store):
    payloads = [window("pi-101a", 0, happy=1, sad=1), window("pi-101a", 1, suppressed=True),
                window("pi-101a", 2, neutral=3, surprise=1), window("pi-101a", 3, angry=4, happy=1)]
    [session] = lessons_of(store, payloads)
    assert interest_series(session) == [(T0, 0.5), (T0 + 120, 1.0), (T0 + 180, 0.2)]
    ratios = [r for _, r in interest_points(session)]
    assert ratios == [0.5, None, 1.0, 0.2]
    assert smooth(ratios, window=3) == pytest.approx([0.5, 0.75, 0.6, 0.6])
    assert smooth([0.5, None, 1.0, None, None, None, None, 0.2], window=3) == [
        0.5, 0.75, 1.0, 1.0, None, None, 0.2, 0.2]
    assert smooth([0.2, 0.4, 0.6, 0.8, 1.0]) == pytest.approx([0.4, 0.5, 0.6, 0.7, 0.8])
    assert smooth([None, None]) == [None, None]
    with pytest.raises(ValueError):
        smooth([0.1], window=4)


def test_the_stretch_that_lost_the_room_is_the_five_minutes_with_the_least_interest(store):
    good = {"happy": 8, "sad": 2}
    payloads = [window("pi-101a", m, **(good if not 6 <= m <= 10 else {"happy": 2, "sad": 8})) for m in range(15)]
    [session] = lessons_of(store, payloads)
    start, end, ratio = low_stretch(session)
    assert (start - T0, end - T0) == (360, 660) and ratio == pytest.approx(0.2)
    [short] = lessons_of(store, [window("pi-101b", m, room="102", happy=1) for m in range(4)], room="102")
    assert low_stretch(short) is None


def test_gaps_are_never_plotted_as_zero(mixed_session):
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


def assert_png(path):
    data = path.read_bytes()
    assert data.startswith(PNG_SIGNATURE)
    assert len(data) > 10_000, f"{path.name} is only {len(data)} bytes"


def test_session_report_as_png_and_pdf(tmp_path, mixed_session):
    session_report(mixed_session, tmp_path / "report.png")
    assert_png(tmp_path / "report.png")
    session_report(mixed_session, tmp_path / "report.pdf")
    data = (tmp_path / "report.pdf").read_bytes()
    assert data.startswith(b"%PDF") and len(data) > 10_000
    assert dict(session_figures(mixed_session))["minutes"] == "4 (3 with data, 1 gaps)"


def test_a_period_without_a_minute_to_count_still_draws_and_says_no_data(tmp_path):
    session = Session("north", "101", T0, T0 + 600, [])
    assert [(a - T0, b - T0) for a, b in gap_spans(session)] == [(0, 600)]
    session_report(session, tmp_path / "report.png")
    assert_png(tmp_path / "report.png")
    assert dict(session_figures(session))["interest"] == "no data"
    plt = pyplot()
    fig, ax = plt.subplots()
    try:
        draw_interest(ax, session)
        assert any("no data" in t.get_text() for t in ax.texts)
    finally:
        plt.close(fig)
