"""Which devices need a visit: each device's state and latest stats read against what they should be.

A device's problems, worst kind first: offline (its Last Will) or not heard from for
``silent_after_s``; then, from stats no older than that: the camera stalled or reopening, the
outbox failing or growing, windows dropped in the last day, the CPU at ``hot_c`` or above, fewer
frames per second than FPS_SHORTFALL of its target, and figures no working device could send
(outside PLAUSIBLE), which are stored as sent but flagged and never drawn as if real. A device
that sends no stats is "no stats", never zeros.

IT's Prometheus gets the same verdicts as alerts: alerts.py writes one rule per kind of problem
from the constants here, over the figures metrics.py exports from ``assess``. A new kind of
problem needs its rule there, and a device with it among the fleet tests/collector/test_alerts.py
checks, which fails on a verdict that no rule, or more than one, matches.
"""

import datetime as dt
from dataclasses import dataclass, field

from .store import Device, FleetStats, Stats

# fps is frames over the last stats interval: a frame or two missed per minute is not a problem.
FPS_SHORTFALL = 0.9
# An outbox holding a couple of windows is one slow acknowledgement; more, and rising, is a backlog.
OUTBOX_GROWING_MIN = 3
# The range a working Pi's figures can fall in; the camera fps is at most 30 by configuration.
PLAUSIBLE = {
    "fps": (0.0, 60.0), "detect_ms": (0.0, 60_000.0), "classify_ms": (0.0, 10_000.0),
    "faces_per_frame": (0.0, 500.0), "cpu_temp_c": (-40.0, 125.0), "rss_mb": (0.0, 65_536.0),
    "outbox_depth": (0, 10_000_000), "load_1m": (0.0, 1000.0),
}
CAMERA_PROBLEMS = ("stalled", "reopening")


def plausible(name: str, value) -> bool:
    low, high = PLAUSIBLE.get(name, (float("-inf"), float("inf")))
    return value is None or low <= value <= high


@dataclass(frozen=True)
class Thresholds:
    fps: float = 1.0
    fps_by_device: dict = field(default_factory=dict)
    silent_after_s: float = 300.0
    hot_c: float = 80.0

    @classmethod
    def from_config(cls, config) -> "Thresholds":
        return cls(config.fps, dict(config.fps_by_device), config.silent_after_min * 60, config.hot_c)

    def fps_target(self, device: str) -> float:
        return self.fps_by_device.get(device, self.fps)


@dataclass(frozen=True)
class Health:
    """A device as the fleet table shows it."""

    device: Device
    stats: Stats | None  # None: none recent enough to judge the device by
    latest: Stats | None  # the newest, however old
    fps_target: float
    dropped_day: int | None
    problems: tuple[str, ...]
    implausible: tuple[str, ...]
    outbox_before: int | None = None  # the outbox depth ten minutes ago, beside ``stats``

    @property
    def last_stats_at(self) -> float | None:
        return self.latest.at if self.latest else None

    @property
    def camera(self) -> str | None:
        return self.stats.camera if self.stats and self.stats.camera else self.device.camera


def _dropped(stats: Stats, before: int | None) -> int | None:
    """Windows dropped since the count ``before`` (a day ago)."""
    latest = stats.dropped_windows
    if latest is None:
        return None
    # A smaller count than a day ago: the outbox was replaced, and counts from zero again.
    return latest if before is None or latest < before else latest - before


def assess(device: Device, fleet: FleetStats | None, now: float, limits: Thresholds) -> Health:
    problems = []
    heard = device.last_seen
    silent = heard is None or now - heard > limits.silent_after_s
    if device.state == "offline":
        problems.append(f"offline ({device.reason})" if device.reason else "offline")
    elif device.state != "stopped" and silent:
        problems.append("not heard from" if heard is None else f"not heard from for {_ago(now - heard)}")
    latest = fleet.latest if fleet else None
    current = latest if latest is not None and now - latest.at <= limits.silent_after_s else None
    # The trend figures are read beside current stats only.
    outbox_before = fleet.outbox_before if fleet and current else None
    target = limits.fps_target(device.device)
    dropped = _dropped(current, fleet.dropped_before) if fleet and current else None
    implausible = tuple(f"{name} {value:g}" for name in PLAUSIBLE
                        if current and not plausible(name, value := getattr(current, name)))
    camera = current.camera if current and current.camera else device.camera
    if camera in CAMERA_PROBLEMS and device.state not in ("offline", "stopped"):
        problems.append(f"camera {camera}")
    if current:
        if current.outbox_failing:
            problems.append("outbox cannot be written")
        elif (depth := current.outbox_depth or 0) >= OUTBOX_GROWING_MIN and outbox_before is not None \
                and depth > outbox_before:
            problems.append(f"outbox growing ({depth} waiting)")
        if dropped:
            problems.append(f"{dropped} window{'s' if dropped > 1 else ''} dropped in 24 h")
        if current.cpu_temp_c is not None and plausible("cpu_temp_c", current.cpu_temp_c) \
                and current.cpu_temp_c >= limits.hot_c:
            problems.append(f"CPU {current.cpu_temp_c:.0f} °C")
        if current.fps is not None and plausible("fps", current.fps) and current.fps < FPS_SHORTFALL * target:
            problems.append(f"{current.fps:.2g} fps, below {target:g}")
        if implausible:
            problems.append("implausible " + ", ".join(implausible))
    return Health(device, current, latest, target, dropped, tuple(problems), implausible, outbox_before)


def fleet_health(devices, fleet_stats: dict, now: float, limits: Thresholds) -> list[Health]:
    """Every device assessed, those with problems first, each group by site, room and device."""
    assessed = [assess(device, fleet_stats.get(device.device), now, limits) for device in devices]
    return sorted(assessed, key=lambda h: (not h.problems, h.device.site, h.device.room, h.device.device))


def _ago(seconds: float) -> str:
    minutes = max(0, int(seconds // 60))
    if minutes < 120:
        return f"{minutes} min"
    if minutes < 48 * 60:
        return f"{minutes // 60} h"
    return f"{minutes // (24 * 60)} days"


def seen_text(moment: float | None, now: float, tz) -> str:
    """``10:42`` today, ``2026-11-20 10:42`` before; "never" for None."""
    if moment is None:
        return "never"
    local = dt.datetime.fromtimestamp(moment, tz)
    today = dt.datetime.fromtimestamp(now, tz).date() == local.date()
    return f"{local:%H:%M}" if today else f"{local:%Y-%m-%d %H:%M}"


def ago_text(moment: float | None, now: float) -> str:
    return "never" if moment is None else f"{_ago(now - moment)} ago"
