"""Which devices need a visit: the rules read against a device's state and its stats from a real store."""

import pytest

from edge_agent.collector.fleet import Thresholds, assess, fleet_health
from edge_agent.collector.store import Device, FleetStats, Stats, Store
from edge_agent.common.contract import StatsPayload, format_utc

NOW = 1_795_000_000 - 1_795_000_000 % 3600 + 1800
LIMITS = Thresholds(fps=1.0, fps_by_device={"pi-hall": 2.0}, silent_after_s=300, hot_c=80)


def device(name="pi-1", state="online", seen=NOW - 30, camera="running", reason=None, room="101"):
    return Device(name, "north", room, state, camera, seen, seen, reason)


def stats(at=NOW - 30, **fields):
    values = {"fps": 1.0, "detect_ms": 300.0, "faces_per_frame": 12.0, "outbox_depth": 0, "dropped_windows": 0,
              "camera": "running", "cpu_temp_c": 55.0, "rss_mb": 180.0, "outbox_failing": False}
    return Stats("pi-1", at, False, 1, **(values | fields))


def problems(latest=None, outbox_before=0, dropped_before=0, **device_fields):
    fleet = FleetStats(latest, outbox_before, dropped_before) if latest else None
    return assess(device(**device_fields), fleet, NOW, LIMITS).problems


def test_a_healthy_device_has_no_problem():
    assert problems(stats()) == ()


@pytest.mark.parametrize("fields, expected", [
    ({"camera": "stalled"}, "camera stalled"),
    ({"camera": "reopening"}, "camera reopening"),
    ({"outbox_failing": True, "outbox_depth": 40}, "outbox cannot be written"),
    ({"outbox_depth": 12}, "outbox growing (12 waiting)"),
    ({"dropped_windows": 7}, "7 windows dropped in 24 h"),
    ({"cpu_temp_c": 80.0}, "CPU 80 °C"),
    ({"fps": 0.85}, "0.85 fps, below 1"),
    ({"fps": 10_000.0}, "implausible fps 10000"),
    ({"cpu_temp_c": -300.0}, "implausible cpu_temp_c -300"),
])
def test_each_problem_in_the_stats_is_named(fields, expected):
    assert problems(stats(**fields)) == (expected,)


def test_thresholds_are_where_the_settings_say():
    assert problems(stats(cpu_temp_c=79.9)) == ()
    assert problems(stats(fps=0.9)) == ()  # 90% of the target: a frame or two missed a minute
    assert problems(stats(outbox_depth=2), outbox_before=0) == ()  # one slow acknowledgement
    assert problems(stats(outbox_depth=12), outbox_before=12) == ()  # a backlog draining or steady, not growing
    assert problems(stats(dropped_windows=5), dropped_before=5) == ()  # dropped more than a day ago
    # A count lower than a day ago: a new outbox counting from zero.
    assert problems(stats(dropped_windows=2), dropped_before=9) == ("2 windows dropped in 24 h",)
    hall = assess(device("pi-hall"), FleetStats(stats(fps=1.5), 0, 0), NOW, LIMITS)
    assert hall.fps_target == 2.0 and hall.problems == ("1.5 fps, below 2",)


def test_liveness_problems():
    assert problems(state="offline", reason="lost connection") == ("offline (lost connection)",)
    assert problems(seen=NOW - 3 * 3600) == ("not heard from for 3 h",)
    assert problems(seen=None) == ("not heard from",)
    # Stopped on purpose: not a problem, however long ago.
    assert problems(state="stopped", seen=NOW - 86400) == ()
    # Stale stats say nothing about now: an old hot reading is not flagged, the silence is.
    assert problems(stats(at=NOW - 3600, cpu_temp_c=95.0), seen=NOW - 3600) == ("not heard from for 60 min",)


def test_a_device_without_stats_is_judged_by_its_status_alone():
    health = assess(device(camera="stalled"), None, NOW, LIMITS)
    assert health.stats is None and health.last_stats_at is None and health.problems == ("camera stalled",)


def test_devices_with_problems_come_first(tmp_path):
    store = Store(f"sqlite:///{tmp_path / 'c.sqlite3'}")
    names = {"pi-a": {}, "pi-b": {"cpu_temp_c": 90.0}, "pi-c": {}, "pi-d": {"camera": "stalled"}}
    for name, fields in names.items():
        values = {"device": name, "t": format_utc(NOW - 30), "uptime_s": 5.0, "fps": 1.0, "camera": "running"}
        store.add_stats([(name, StatsPayload.model_validate(values | fields))], received_at=NOW - 30)
    store.touch_many({name: ("north", "101") for name in names}, seen_at=NOW - 30)
    ordered = fleet_health(store.devices(), store.fleet_stats(NOW), NOW, LIMITS)
    assert [(h.device.device, bool(h.problems)) for h in ordered] == [
        ("pi-b", True), ("pi-d", True), ("pi-a", False), ("pi-c", False)]
    store.close()


def test_fleet_stats_reads_the_newest_row_and_the_earlier_figures(tmp_path):
    store = Store(f"sqlite:///{tmp_path / 'c.sqlite3'}")
    for minute in range(30):
        at = NOW - 1800 + minute * 60
        payload = StatsPayload(device="pi-1", t=format_utc(at), uptime_s=1.0, outbox_depth=minute,
                               dropped_windows=3 + minute // 10)
        store.add_stats([("pi-1", payload)], received_at=at)
    store.touch_many({"pi-1": ("north", "101"), "pi-2": ("north", "102")}, seen_at=NOW)
    fleet = store.fleet_stats(NOW)
    assert list(fleet) == ["pi-1"]
    assert fleet["pi-1"].latest.at == NOW - 60 and fleet["pi-1"].latest.outbox_depth == 29
    assert fleet["pi-1"].outbox_before == 20  # the first row of the last 10 minutes
    assert fleet["pi-1"].dropped_before == 3  # the first row of the last day
    store.close()
