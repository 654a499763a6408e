from edge_agent.agent.tally import WindowTally
from edge_agent.common.contract import parse_payload, parse_utc

T0 = parse_utc("2026-11-23T10:15:00Z")


def test_windows_align_to_utc_minutes_and_close_on_the_next_minute():
    tally = WindowTally(60, min_group=1)
    assert tally.add(T0 + 12.5, ["happy", "sad"]) is None
    assert tally.open_start == T0
    assert tally.add(T0 + 59.9, ["happy"]) is None
    closed = tally.add(T0 + 60.0, ["neutral"])
    assert closed.start == T0 and closed.frames == 2 and closed.faces == 3
    assert closed.counts["happy"] == 2 and closed.counts["sad"] == 1 and not closed.suppressed
    assert tally.open_start == T0 + 60


def test_short_windows_align_to_their_length():
    tally = WindowTally(5, min_group=1)
    tally.add(T0 + 7.2, ["fear"])
    assert tally.open_start == T0 + 5


def test_median_below_min_group_suppresses_counts_but_keeps_frames_and_faces():
    tally = WindowTally(60, min_group=3)
    for labels in (["happy"] * 2, ["happy"] * 5, ["sad"] * 2):
        tally.add(T0 + 1, labels)
    window = tally.flush()
    assert window.median_faces == 2 and window.suppressed
    assert set(window.counts.values()) == {0}
    assert (window.frames, window.faces) == (3, 9)


def test_median_at_min_group_is_reported():
    tally = WindowTally(60, min_group=3)
    for labels in (["happy"] * 3, ["sad"] * 4, ["neutral"] * 1):
        tally.add(T0 + 1, labels)
    window = tally.flush()
    assert window.median_faces == 3 and not window.suppressed
    assert window.counts["happy"] == 3 and window.counts["sad"] == 4


def test_lower_median_errs_towards_suppression():
    tally = WindowTally(60, min_group=3)
    tally.add(T0 + 1, ["happy"] * 2)
    tally.add(T0 + 2, ["happy"] * 4)
    window = tally.flush()
    assert window.median_faces == 2 and window.suppressed


def test_window_with_frames_but_no_faces_is_a_valid_zero_window():
    tally = WindowTally(60, min_group=1)
    tally.add(T0 + 1, [])
    payload = tally.flush().payload(device="pi-1", site="north", room="101", seq=0, model="m:1")
    assert payload.frames == 1 and payload.faces == 0 and payload.counts.total() == 0
    assert parse_payload("emotions", payload.to_json()) == payload


def test_clock_stepping_back_counts_into_the_open_window():
    tally = WindowTally(60, min_group=1)
    tally.add(T0 + 61, ["happy"])
    assert tally.add(T0 + 30, ["sad"]) is None
    window = tally.flush()
    assert window.start == T0 + 60 and window.faces == 2


def test_close_due_closes_a_window_once_its_minute_is_over():
    tally = WindowTally(60, min_group=1)
    tally.add(T0 + 1, ["happy"])
    assert tally.close_due(T0 + 59) is None
    assert tally.close_due(T0 + 60).start == T0
    assert tally.close_due(T0 + 200) is None and tally.flush() is None


def test_payload_matches_the_contract():
    tally = WindowTally(60, min_group=2)
    tally.add(T0 + 3, ["happy", "neutral", "neutral"])
    payload = tally.flush().payload(device="pi-101a", site="north", room="101", seq=7, model="mini-xception-int8:abc")
    assert parse_payload("emotions", payload.to_json(), ("north", "101", "pi-101a")) == payload
    assert payload.window_start == "2026-11-23T10:15:00Z" and payload.window_s == 60 and payload.seq == 7
    assert payload.counts.as_dict() == {"angry": 0, "disgust": 0, "fear": 0, "happy": 1, "sad": 0,
                                        "surprise": 0, "neutral": 2}


def test_a_closed_window_is_never_opened_again():
    tally = WindowTally(60, min_group=1)
    tally.add(T0 + 10, ["happy"])
    first = tally.flush()
    tally.add(T0 + 20, ["sad"])
    second = tally.flush()
    assert (first.start, second.start) == (T0, T0 + 60)


def test_floor_from_a_previous_run_moves_late_frames_forward():
    tally = WindowTally(60, min_group=1, floor=T0 + 60)
    tally.add(T0 + 30, ["happy"])
    assert tally.open_start == T0 + 60
