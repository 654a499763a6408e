"""``edge-collector report``: one room's period (or its latest session) as a one-page PNG or PDF."""

from ..common.contract import format_utc
from ..common.errors import EdgeAgentError
from .charts import session_report
from .sessions import DEFAULT_GAP_S, Session, split_minutes

FORMATS = (".png", ".pdf")


class ReportError(EdgeAgentError):
    """The room or period has nothing to report, or the output cannot be written."""


def find_room(store, name):
    """``(site, room)`` for ``site/room``, or for a bare room name found in one site only."""
    rooms = store.rooms()
    if "/" in name:
        site, _, room = name.partition("/")
        if (site, room) in rooms:
            return site, room
        matches = []
    else:
        matches = [(site, room) for site, room in rooms if room == name]
        if len(matches) == 1:
            return matches[0]
    if len(matches) > 1:
        sites = ", ".join(site for site, _ in matches)
        raise ReportError(f"room {name} exists in several sites ({sites}): give it as SITE/{name}")
    known = ", ".join(f"{site}/{room}" for site, room in rooms) or "none yet"
    raise ReportError(f"no windows from room {name} in the store (rooms with data: {known})")


def report_session(store, site, room, start=None, end=None, gap_s=DEFAULT_GAP_S):
    """The period ``[start, end)`` as one session (its gaps drawn as such), or the room's latest lesson."""
    if start is None and end is None:
        last = store.last_window_start(site, room)
        minutes = store.room_minutes(site, room, start=last - 86400) if last is not None else []
        if not minutes:
            raise ReportError(f"no minute with faces to count from {site}/{room} in the day before its last window "
                              "(no windows, or only suppressed ones)")
        return split_minutes(site, room, minutes, gap_s)[-1]
    minutes = store.room_minutes(site, room, start=start, end=end)
    if not minutes:
        period = f"from {format_utc(start) if start else 'the first window'} to {format_utc(end) if end else 'now'}"
        raise ReportError(f"no minute with faces to count from {site}/{room} {period} "
                          "(no windows, or only suppressed ones)")
    return Session(site, room, minutes[0].start, minutes[-1].end, minutes)


def write_report(session, path, interested, tz):
    if path.suffix.lower() not in FORMATS:
        raise ReportError(f"{path}: the report is written as PNG or PDF; name the file .png or .pdf")
    try:
        session_report(session, path, interested, tz=tz)
    except OSError as exc:
        raise ReportError(f"report {path} cannot be written: {exc.strerror or exc}") from None
