"""From stored windows to lessons: a room's minutes, cut into sessions where the room goes quiet.

A minute with no counts (every device suppressed, or no faces at all) is a gap, never zero
interest: an empty or nearly empty room says nothing about how interested anyone was.
"""

from dataclasses import dataclass

from ..common.contract import DEFAULT_INTERESTED, EMOTIONS, interest_ratio

DEFAULT_GAP_S = 15 * 60


@dataclass(frozen=True)
class Minute:
    """One time slot of a room, summed over its devices; ``counts`` is None for a gap."""

    start: int
    window_s: int
    counts: dict | None

    @property
    def end(self):
        return self.start + self.window_s


@dataclass(frozen=True)
class Session:
    site: str
    room: str
    start: int
    end: int
    minutes: list[Minute]

    def totals(self):
        totals = dict.fromkeys(EMOTIONS, 0)
        for minute in self.minutes:
            if minute.counts:
                for label, count in minute.counts.items():
                    totals[label] += count
        return totals

    def interest(self, interested=DEFAULT_INTERESTED):
        return interest_ratio(self.totals(), interested)


def room_minutes(payloads):
    """The windows of one room, summed per ``window_start`` across its devices, in time order."""
    rooms = {(p.site, p.room) for p in payloads}
    if len(rooms) > 1:
        raise ValueError(f"room_minutes takes one room's windows, got {len(rooms)} rooms")
    # QoS 1 may deliver a window twice; count each (device, window_start) once.
    unique = {}
    for payload in payloads:
        unique.setdefault((payload.device, payload.start_epoch), payload)
    slots = {}
    for payload in unique.values():
        window_s, counts = slots.get(payload.start_epoch, (payload.window_s, None))
        window_s = max(window_s, payload.window_s)
        if not payload.suppressed and payload.faces:
            counts = dict(counts or dict.fromkeys(EMOTIONS, 0))
            for label, count in payload.counts.as_dict().items():
                counts[label] += count
        slots[payload.start_epoch] = (window_s, counts)
    return [Minute(start, window_s, counts) for start, (window_s, counts) in sorted(slots.items())]


def split_sessions(payloads, gap_s=DEFAULT_GAP_S):
    """Sessions of every room in ``payloads``, ordered by start; a room's silence over ``gap_s`` ends one."""
    by_room = {}
    for payload in payloads:
        by_room.setdefault((payload.site, payload.room), []).append(payload)
    sessions = []
    for (site, room), windows in by_room.items():
        current = []
        for minute in room_minutes(windows):
            if current and minute.start - current[-1].end > gap_s:
                sessions.append(_session(site, room, current))
                current = []
            current.append(minute)
        sessions.append(_session(site, room, current))
    return sorted(sessions, key=lambda s: (s.start, s.site, s.room))


def _session(site, room, minutes):
    return Session(site, room, minutes[0].start, max(m.end for m in minutes), minutes)


def interest_series(session, interested=DEFAULT_INTERESTED):
    """``(start, ratio)`` per minute; the ratio is None for a gap."""
    return [(m.start, interest_ratio(m.counts, interested) if m.counts else None) for m in session.minutes]


def smooth(values, window=5):
    """Centred moving average over ``window`` values (odd), skipping None; None where the whole window is None."""
    if window < 1 or window % 2 == 0:
        raise ValueError(f"smoothing window must be a positive odd number, not {window}")
    half = window // 2
    smoothed = []
    for i in range(len(values)):
        near = [v for v in values[max(0, i - half):i + half + 1] if v is not None]
        smoothed.append(sum(near) / len(near) if near else None)
    return smoothed
