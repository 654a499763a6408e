"""The indexes: ``index.html`` with every room and every device, and ``groups/GROUP/index.html`` per access group.

Invariants: the indexes are written on every refresh (they say which lessons run and when they
were generated) and are no unit of any manifest; a group's index lists only the group's rooms
(``room_matches``) and no devices, and links by way of the root, so a web server can grant a group
its index and its rooms' paths and nothing else; a group no longer configured loses its index.
"""

import fnmatch

from .fleet import Health, ago_text, plausible, seen_text
from .pages import Pages, device_href, file_name, number_text


def draw_index(pages: Pages, rooms: list[dict], health: list[Health], now: float) -> None:
    """``index.html``: the rooms' rows (room_pages.py), and every device, those that need a visit first."""
    devices = [_device_row(pages, item, now) for item in health]
    attention = sum(1 for item in health if item.problems)
    running = sum(1 for row in rooms if row["running"])
    summary = (f"{len(rooms)} room{'s' if len(rooms) != 1 else ''}, {running} with a lesson now; "
               f"{len(health)} device{'s' if len(health) != 1 else ''}.")
    text = pages.render("index.html", "index.html", rooms=rooms, devices=devices, summary=summary,
                        attention=f"{attention} need{'s' if attention == 1 else ''} attention" if attention else "",
                        generated=_generated(pages, now))
    pages.files.write("index.html", text)


def draw_group_indexes(pages: Pages, rooms: list[dict], now: float) -> None:
    """Each access group's index: its rooms only, no devices; links by way of the root, two folders up."""
    generated = _generated(pages, now)
    for group, patterns in pages.settings.access.items():
        page = f"groups/{group}/index.html"
        up = "../" * page.count("/")
        mine = []
        for row in rooms:
            if room_matches(row["key"], patterns):
                row = dict(row, href=up + row["href"])
                if row["lesson"]:
                    row["lesson"] = dict(row["lesson"], href=up + row["lesson"]["href"])
                mine.append(row)
        running = sum(1 for row in mine if row["running"])
        summary = f"{len(mine)} room{'s' if len(mine) != 1 else ''}, {running} with a lesson now."
        text = pages.render("index.html", page, rooms=mine, devices=None, fleet=False, summary=summary,
                            attention="", generated=generated, home="index.html", home_text="Your rooms")
        pages.files.write(page, text)


def drop_gone_groups(pages: Pages) -> None:
    """Delete the indexes of groups no longer configured, and so their one way in."""
    for page in pages.files.existing("groups/*/index.html"):
        if page.split("/")[1] not in pages.settings.access:
            pages.files.remove([page])


def room_matches(key: tuple[str, str], patterns) -> bool:
    """Whether room ``key`` (site, room) is one of ``patterns``: ``all``, or ``site/room`` globs.

    Globs match the names the files are written under (``file_name``), as the web server sees them:
    a room whose name needs hashing is reached by ``*`` or ``all`` only.
    """
    path = f"{file_name(key[0])}/{file_name(key[1])}"
    return any(pattern == "all" or fnmatch.fnmatchcase(path, pattern) for pattern in patterns)


def _generated(pages, now):
    return f"{pages.local(now):%Y-%m-%d %H:%M %Z}"


def _device_row(pages, item, now):
    device, stats, tz = item.device, item.stats, pages.settings.tz
    state = device.state or "unknown"
    if item.camera and device.state == "online":
        state += f", camera {item.camera}"
    row = {"name": device.device, "href": device_href(device.device),
           "room": f"{device.site}/{device.room}", "state": state,
           "seen": f"{seen_text(device.last_seen, now, tz)} ({ago_text(device.last_seen, now)})",
           "problems": "; ".join(item.problems), "figures": None,
           "no_stats": "no stats" if item.last_stats_at is None else
           f"no stats for {ago_text(item.last_stats_at, now).removesuffix(' ago')}"}
    if stats:
        fps = "–" if stats.fps is None else f"{number_text(stats.fps)}/{item.fps_target:g}"
        temperature = "–" if stats.cpu_temp_c is None else f"{number_text(stats.cpu_temp_c)} °C"
        row["figures"] = [
            (fps, not plausible("fps", stats.fps)),
            (_cell(stats.detect_ms), not plausible("detect_ms", stats.detect_ms)),
            (_cell(stats.faces_per_frame), not plausible("faces_per_frame", stats.faces_per_frame)),
            (_cell(stats.outbox_depth), not plausible("outbox_depth", stats.outbox_depth)),
            (_cell(item.dropped_day), False),
            (temperature, not plausible("cpu_temp_c", stats.cpu_temp_c)),
        ]
    return row


def _cell(value):
    return "–" if value is None else number_text(value)
