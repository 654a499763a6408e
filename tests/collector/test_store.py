import os
import sqlite3
import stat

import pytest

from edge_agent.agent.tally import WindowTally
from edge_agent.collector.store import Device, Store, StoreError
from edge_agent.common.contract import EMOTIONS, MAX_COUNT, EmotionsPayload, StatusPayload, format_utc
from support import free_port
from support.windows import lesson

T0 = 1_795_000_000 - 1_795_000_000 % 60  # a minute in 2026


def window(device="pi-101a", start=T0, *, site="north", room="101", seq=1, counts=None, suppressed=False):
    counts = dict.fromkeys(EMOTIONS, 0) | (counts or {"happy": 40, "neutral": 150, "sad": 10})
    if suppressed:
        counts = dict.fromkeys(EMOTIONS, 0)
    faces = 200 if suppressed else sum(counts.values())
    return EmotionsPayload.model_validate({
        "schema": 1, "device": device, "site": site, "room": room, "window_start": format_utc(start),
        "window_s": 60, "seq": seq, "frames": 60, "faces": faces, "faces_per_frame_median": 2 if suppressed else 3,
        "counts": counts, "suppressed": suppressed, "model": "mini-xception-int8:3f2a9c1e",
    })


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'collector.db'}"
    return request.getfixturevalue("postgres").new_database()


@pytest.fixture
def store(url):
    store = Store(url, retention_days=30)
    yield store
    store.close()


def test_a_window_is_stored_once_however_often_it_arrives(store, url):
    first, second, third = window(seq=1), window(start=T0 + 60, seq=2), window("pi-101b", seq=7)
    assert store.add_windows([first, second, first, first]) == 2
    assert store.add_windows([second, third, first]) == 1
    assert store.add_windows([]) == 0
    assert store.count_windows() == 3
    store.close()
    reopened = Store(url)
    try:
        assert reopened.add_windows([first, third]) == 0
        assert reopened.count_windows() == 3
    finally:
        reopened.close()


def test_windows_round_trip_equal_to_what_arrived(store):
    tally = WindowTally(length_s=60, min_group=3)
    for second in range(60):
        tally.add(T0 + second, ["happy", "neutral", "neutral", "surprise"])
    tallied = tally.flush().payload(device="pi-101a", site="north", room="101", seq=2**53, model="m:1")
    largest = window(start=T0 + 60, counts={"angry": MAX_COUNT})
    suppressed = window(start=T0 + 120, suppressed=True)
    originals = [tallied, largest, suppressed]
    store.add_windows(reversed(originals))
    assert store.windows("north", "101") == originals
    assert store.windows("north", "101")[0].to_json() == tallied.to_json()


def test_rooms_and_windows_filter_by_room_and_time(store):
    store.add_windows([
        window("pi-b", T0, room="102"), window("pi-a", T0 + 60), window("pi-c", T0),
        window("pi-a", T0), window("pi-s", T0, site="south", room="1"), window("pi-a", T0 + 120),
    ])
    assert store.rooms() == [("north", "101"), ("north", "102"), ("south", "1")]
    got = [(w.device, w.start_epoch) for w in store.windows("north", "101")]
    assert got == [("pi-a", T0), ("pi-c", T0), ("pi-a", T0 + 60), ("pi-a", T0 + 120)]
    got = [(w.device, w.start_epoch) for w in store.windows("north", "101", start=T0 + 60, end=T0 + 120)]
    assert got == [("pi-a", T0 + 60)]
    assert [w.start_epoch for w in store.windows("north", "101", start=T0 + 60)] == [T0 + 60, T0 + 120]
    assert [w.device for w in store.windows("north", "101", end=T0 + 60)] == ["pi-a", "pi-c"]
    assert store.windows("north", "999") == []


def test_devices_after_status_and_touch(store):
    assert store.devices() == []
    store.touch("pi-b", site="north", room="102", seen_at=100.5)
    store.set_status(StatusPayload(state="online", device="pi-a", camera="picamera2", version="0.1.0"),
                     site="north", room="101", received_at=200.0)
    store.touch("pi-a", site="north", room="101", seen_at=201.25)
    store.set_status(StatusPayload(state="offline", device="pi-b", reason="lost connection"),
                     site="north", room="102", received_at=300.0)
    store.touch("pi-b", site="north", room="102", seen_at=300.0)
    assert store.devices() == [
        Device("pi-a", "north", "101", "online", "picamera2", last_seen=201.25, status_at=200.0,
               version="0.1.0"),
        Device("pi-b", "north", "102", "offline", None, last_seen=300.0, status_at=300.0,
               reason="lost connection"),
    ]


def test_retention_deletes_old_windows_only(store):
    now = T0 + 30 * 86400 + 60
    store.add_windows([window(start=T0), window(start=T0 + 60), window(start=T0 + 120), window(start=now - 60)])
    assert store.apply_retention(now=now) == 1
    assert [w.start_epoch for w in store.windows("north", "101")] == [T0 + 60, T0 + 120, now - 60]
    assert store.apply_retention(now=now) == 0


def test_no_retention_keeps_everything(tmp_path):
    store = Store(f"sqlite:///{tmp_path / 'c.db'}")
    store.add_windows([window(start=T0)])
    assert store.apply_retention(now=T0 + 10 * 365 * 86400) == 0
    assert store.count_windows() == 1
    store.close()


def test_unreachable_postgres_is_a_clear_error_with_the_password_masked():
    pytest.importorskip("psycopg", reason="psycopg is not installed")
    port = free_port()
    with pytest.raises(StoreError) as caught:
        Store(f"postgresql+psycopg://collector:s3cret-pw@127.0.0.1:{port}/collector")
    message = str(caught.value)
    assert "s3cret-pw" not in message
    assert f"postgresql+psycopg://collector:***@127.0.0.1:{port}/collector" in message
    assert "refused" in message.lower()


def test_bare_postgresql_url_means_psycopg():
    pytest.importorskip("psycopg", reason="psycopg is not installed")
    with pytest.raises(StoreError, match=r"postgresql\+psycopg://u:\*\*\*@127\.0\.0\.1"):
        Store(f"postgresql://u:pw@127.0.0.1:{free_port()}/db")


def test_unwritable_sqlite_path_is_a_clear_error(tmp_path):
    (tmp_path / "a-file").write_text("")
    pattern = "cannot open the store sqlite:///.*a-file/c.db: directory .* does not exist"
    with pytest.raises(StoreError, match=pattern):
        Store(f"sqlite:///{tmp_path / 'a-file' / 'c.db'}")
    (tmp_path / "a-dir").mkdir()
    with pytest.raises(StoreError, match="cannot open the store sqlite:///.*a-dir: unable to open database file"):
        Store(f"sqlite:///{tmp_path / 'a-dir'}")


def test_unsupported_or_malformed_url_is_a_clear_error():
    with pytest.raises(StoreError, match="only sqlite"):
        Store("mysql://u:pw@localhost/db")
    with pytest.raises(StoreError, match="not a database URL"):
        Store("not a url")


def test_sqlite_file_is_in_wal_mode(tmp_path):
    path = tmp_path / "collector.db"
    store = Store(f"sqlite:///{path}")
    store.add_windows([window()])
    with sqlite3.connect(path) as connection:
        assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    store.close()


def test_a_sqlite_store_is_its_owners_alone_whatever_the_umask_or_an_earlier_mode(tmp_path):
    path = tmp_path / "collector.sqlite3"
    old_umask = os.umask(0o022)
    try:
        store = Store(f"sqlite:///{path}")
        store.add_windows(lesson(range(3)))
        modes = {each.name: stat.S_IMODE(each.stat().st_mode) for each in tmp_path.iterdir()}
        store.close()
        assert modes == {"collector.sqlite3": 0o600, "collector.sqlite3-wal": 0o600, "collector.sqlite3-shm": 0o600}
        # A store an earlier version left readable by everyone is made private when next opened.
        path.chmod(0o644)
        Store(f"sqlite:///{path}").close()
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    finally:
        os.umask(old_umask)


def test_each_device_reports_the_model_of_its_newest_window_and_the_store_its_size(store):
    older = window(seq=1, start=T0).model_copy(update={"model": "mini-xception-int8:00000000"})
    store.add_windows([older, window(seq=2, start=T0 + 60), window("pi-102a", start=T0, room="102")])
    for device, room in (("pi-101a", "101"), ("pi-102a", "102"), ("pi-103a", "103")):
        store.set_status(StatusPayload(state="online", device=device), site="north", room=room, received_at=T0)
    # A device without windows has no model to tell.
    assert store.device_models() == {"pi-101a": "mini-xception-int8:3f2a9c1e", "pi-102a": "mini-xception-int8:3f2a9c1e"}
    before = store.size_bytes()
    assert before > 0
    store.add_windows([window(seq=n, start=T0 + 60 * n) for n in range(3, 2000)])
    assert store.size_bytes() > before
