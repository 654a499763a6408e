"""Contract windows for collector tests: a lesson is a run of minutes from a room's cameras."""

from edge_agent.common.contract import EMOTIONS, EmotionsPayload, format_utc, parse_utc

T0 = parse_utc("2026-11-23T10:00:00Z")


def window(device, minute, room="101", suppressed=False, site="north", window_s=60, **counts):
    full = dict.fromkeys(EMOTIONS, 0) | counts
    faces = 40 if suppressed else sum(full.values())  # a lone face or two, seen but not reported
    return EmotionsPayload.model_validate({
        "schema": 1, "device": device, "site": site, "room": room,
        "window_start": format_utc(T0 + window_s * minute), "window_s": window_s, "seq": minute,
        "frames": 60, "faces": faces, "faces_per_frame_median": 1 if suppressed else min(faces, 12),
        "counts": full, "suppressed": suppressed, "model": "mini-xception-int8:test",
    })


def lesson(minutes, room="101", devices=("pi-101a", "pi-101b"), site="north"):
    """Every device reports 6 happy, 2 neutral, 2 sad per minute: 80% interest."""
    return [window(device, m, room=room, site=site, happy=6, neutral=2, sad=2) for m in minutes for device in devices]
