"""A device's page, ``devices/DEVICE.html``: its state, and its stats of the last day and month as charts.

Invariants: a figure is shown as the device sent it, one outside its plausible range marked so and
drawn at its chart's edge, never corrected or dropped; a chart's buckets lie on round times, so a
page drawn again later moves by whole buckets; a page and its charts are one unit, drawn again
when the device's state changes or its ``period`` (the caller's clock for its stats) moves on.
"""

import math

from . import svg
from .fleet import PLAUSIBLE, Health, Thresholds, ago_text, plausible, seen_text
from .pages import DEVICES, Pages, device_href, duration_text, file_name, number_text, rel, room_folder
from .site_files import fingerprint_of
from .store import Store

DAY_BUCKET_S, MONTH_BUCKET_S = 600, 3 * 3600
STATS_PANELS = (("fps", "Frames per second", ""), ("detect_ms", "Detection", "ms"),
                ("faces_per_frame", "Faces per frame", ""), ("outbox_depth", "Outbox", "windows"),
                ("cpu_temp_c", "CPU temperature", "°C"), ("rss_mb", "Memory", "MB"))


def draw_device(pages: Pages, store: Store, item: Health, now: float, period: int) -> None:
    """Draw the device's page and charts unless they were drawn in ``period`` from the same state."""
    device = item.device
    name = device.device
    manifest = pages.files.manifest(DEVICES)
    fingerprint = fingerprint_of(pages.drawn_with, "device", name, device.site, device.room, device.state,
                                 device.reason, item.camera, device.version, item.problems, item.fps_target, period)
    if manifest.current(f"device:{name}", fingerprint):
        return
    page = device_href(name)
    files, charts = _stats_charts(pages, store, item, now, fingerprint) if item.latest else ({}, [])
    view = {"name": name, "room": f"{device.site}/{device.room}",
            "room_href": rel(page, f"{room_folder((device.site, device.room))}.html"),
            "facts": _facts(pages, item, now), "problems": "; ".join(item.problems), "charts": charts,
            "retention": f"{pages.settings.stats_retention_days:g} days",
            "as_of": seen_text(now, now, pages.settings.tz)}
    files[page] = pages.render("device.html", page, device=view)
    pages.files.write_unit(manifest, f"device:{name}", fingerprint, files)


def drop_gone_devices(pages: Pages, names: set[str]) -> None:
    """Delete the pages and charts of devices not among ``names`` (the store's retention deleted them)."""
    pages.files.drop_units(pages.files.manifest(DEVICES), "device:", {f"device:{name}" for name in names})


def _facts(pages, item, now):
    device, latest, tz = item.device, item.latest, pages.settings.tz
    facts = [("room", f"{device.site}/{device.room}"),
             ("state", (device.state or "unknown") + (f" ({device.reason})" if device.reason else "")),
             ("camera", item.camera or "unknown"), ("version", device.version or "unknown"),
             ("last seen", f"{seen_text(device.last_seen, now, tz)} ({ago_text(device.last_seen, now)})"),
             ("target", f"{item.fps_target:g} frames per second")]
    if latest:
        facts += [("last stats", f"{seen_text(latest.at, now, tz)} ({ago_text(latest.at, now)})")]
        facts += [(label + (f" ({unit})" if unit else ""), _figure(field, getattr(latest, field)))
                  for field, label, unit in STATS_PANELS]
        facts += [("windows dropped, last 24 h", "unknown" if item.dropped_day is None else f"{item.dropped_day}"),
                  ("uptime", "unknown" if latest.uptime_s is None else duration_text(latest.uptime_s))]
    return facts


def _stats_charts(pages, store, item, now, fingerprint):
    """The charts of the last day and month: ``({file: svg}, [their views])``."""
    name = item.device.device
    page = device_href(name)
    retention = pages.settings.stats_retention_days
    fields = [field for field, _, _ in STATS_PANELS]
    files, charts = {}, []
    for period_name, heading, span, bucket in (("day", "Last 24 hours", 86400, DAY_BUCKET_S),
                                               ("month", f"Last {retention:g} days", retention * 86400,
                                                MONTH_BUCKET_S)):
        # Buckets on round times, so a redraw ten minutes on moves the chart by whole buckets.
        end = int(now) // bucket * bucket + bucket
        start = end - int(span) // bucket * bucket
        series = store.stats_series(name, start, end, bucket, fields)
        panels, table = _panels(series, item, pages.settings.limits)
        description = f"{heading} of {name}'s stats: " + "; ".join(
            f"{row[0]} latest {row[1]}, lowest {row[2]}, highest {row[3]}" for row in table) + "."
        chart = f"{DEVICES}/{file_name(name)}-{fingerprint}-{period_name}.svg"
        files[chart] = svg.panels_svg(panels, start, end, pages.settings.tz, f"{heading} ({name})", description)
        charts.append({"heading": heading, "src": rel(page, chart), "alt": description,
                       "height": 150 * math.ceil(len(panels) / 2) + 24, "table": table})
    return files, charts


def _panels(series, item, limits: Thresholds):
    panels, table = [], []
    for name, label, unit in STATS_PANELS:
        points = series[name]
        low, high = PLAUSIBLE[name]
        target = item.fps_target if name == "fps" else limits.hot_c if name == "cpu_temp_c" else None
        target_name = "target" if name == "fps" else "hot" if name == "cpu_temp_c" else ""
        panels.append(svg.Panel(label, unit, points, 0.0, float(high), target, target_name))
        values = [v for _, v in points if v is not None]
        off = [v for v in values if not 0 <= v <= high]
        table.append((label + (f" ({unit})" if unit else ""),
                      _figure(name, values[-1]) if values else "not sent",
                      _figure(name, min(values)) if values else "–",
                      _figure(name, max(values)) if values else "–",
                      f"{len(off)}: drawn at the chart's edge" if off else "none"))
    return panels, table


def _figure(name, value):
    if value is None:
        return "not sent"
    text = number_text(value)
    return text if plausible(name, value) else f"{text} (implausible: stored as sent)"
