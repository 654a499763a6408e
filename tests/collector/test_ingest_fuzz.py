"""Hostile messages against the collector: each is refused and counted, or stored valid; none stops it.

The first test sends 10,000 generated messages through the Ingest's own message handler and
store path (a real SQLite store, no broker); the second sends a few hundred through a real
mosquitto to a running Ingest.
"""

import json
import sqlite3
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from paho.mqtt.client import MQTTMessage

from edge_agent.collector.ingest import Ingest
from edge_agent.collector.store import Store
from edge_agent.common.config import BrokerConfig
from edge_agent.common.contract import (
    EMOTIONS,
    MAX_PAYLOAD_BYTES,
    EmotionsPayload,
    MessageError,
    StatusPayload,
    format_utc,
    parse_payload,
)
from support import wait_until
from support.broker import Mosquitto, publish, publisher

T0 = 1_795_000_000 - 1_795_000_000 % 60
MESSAGES = 10_000
# Several messages per example: the engine's own cost per example is most of the run otherwise.
PER_EXAMPLE = 5

# -- generated messages -----------------------------------------------------------------------

ALNUM = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
# Names the contract allows (NAME_PATTERN), built from characters: from_regex is slow to start.
names = st.builds(str.__add__, st.sampled_from(ALNUM), st.text(alphabet=ALNUM + "_.-", max_size=8))
bad_names = st.sampled_from(["", "-pi", ".pi", "pi/1", "pi+", "pi#", "p" * 65, "pï", "pi 1", "pi\n", "pi\x00", "$SYS"])
huge = st.sampled_from([2**31, 2**53 + 1, 2**63, 2**64, 2**70, -(2**70), 10**9 + 1, -1])
scalars = st.one_of(st.none(), st.booleans(), st.integers(), huge, st.floats(allow_nan=True, allow_infinity=True),
                    st.text(max_size=20), st.sampled_from(["1", "60", "true", "", "\x00", "\ud800"]))
hostile_values = st.one_of(scalars, st.lists(scalars, max_size=3),
                           st.dictionaries(st.text(max_size=5), scalars, max_size=3))
bad_times = st.sampled_from([
    "2026-11-23T10:15:30Z",  # not on a minute boundary
    "2026-11-23T10:15:00", "2026-11-23 10:15:00Z", "2026-11-23T10:15:00+00:00", "2026-11-23T10:15:00.000Z",
    "2026-11-23t10:15:00z", "2026-02-30T10:15:00Z", "2026-13-01T00:00:00Z", "2026-12-31T23:59:60Z",
    "2026-12-31T24:00:00Z", "0000-01-01T00:00:00Z", "٢٠٢٦-11-23T10:15:00Z", "2026-11-23T10:15:00Z\n", ""])
# Far past and far future: valid to the contract up to year 9999, refused beyond (five-digit years).
far_times = st.integers(-(2**33), 2**38).map(lambda seconds: format_utc(seconds - seconds % 60))
texts = st.sampled_from(["a\x00b", "\x1b[31mred", "line\nbreak", "\x7f", "m" * 81, "", "\ud800"])


@st.composite
def windows(draw):
    """A valid window as a dict, and its (site, room, device)."""
    counts = dict(zip(EMOTIONS, draw(st.lists(st.integers(0, 50), min_size=len(EMOTIONS), max_size=len(EMOTIONS))),
                      strict=True))
    faces = sum(counts.values())
    suppressed = faces == 0 and draw(st.booleans())
    body = {"schema": 1, "device": draw(names), "site": draw(names), "room": draw(names),
            "window_start": format_utc(T0 + 60 * draw(st.integers(0, 10**6))), "window_s": 60,
            "seq": draw(st.integers(0, 2**53)), "frames": draw(st.integers(1, 60)), "faces": faces,
            "faces_per_frame_median": min(faces, draw(st.integers(0, 5))), "counts": counts,
            "suppressed": suppressed, "model": draw(st.sampled_from(["mini-xception-int8:464fa583", "m"]))}
    return body


@st.composite
def mutated_bodies(draw, body):
    """The window's body with one or a few hostile changes, as a dict (or anything JSON can hold)."""
    body = json.loads(json.dumps(body))
    for _ in range(draw(st.integers(1, 3))):
        change = draw(st.sampled_from(["value", "count", "delete", "extra", "time", "name", "text", "sum",
                                       "schema", "window_s", "nest"]))
        keys = sorted(body) if isinstance(body, dict) else []
        if not keys:
            break
        if change == "value":
            body[draw(st.sampled_from(keys))] = draw(hostile_values)
        elif change == "count" and isinstance(body.get("counts"), dict) and body["counts"]:
            body["counts"][draw(st.sampled_from(sorted(body["counts"])))] = draw(st.one_of(hostile_values, huge))
        elif change == "delete":
            del body[draw(st.sampled_from(keys))]
        elif change == "extra":
            body[draw(st.sampled_from(["extra", "Device", "counts ", "boxes", "embedding", ""]))] = draw(hostile_values)
        elif change == "time":
            body["window_start"] = draw(st.one_of(bad_times, far_times))
        elif change == "name":
            body[draw(st.sampled_from(["device", "site", "room"]))] = draw(bad_names)
        elif change == "text":
            body["model"] = draw(texts)
        elif change == "sum" and isinstance(body.get("faces"), int):
            body["faces"] += draw(st.sampled_from([-1, 1, 10**9]))
        elif change == "schema":
            body["schema"] = draw(st.sampled_from([0, 2, "1", 1.0, True, None, -1, 2**70]))
        elif change == "window_s":
            body["window_s"] = draw(st.sampled_from([0, -60, 7, 86401, 2**70, 60.0, "60"]))
        elif change == "nest":
            body = [body] if draw(st.booleans()) else {"payload": body}
    return body


def encode(body):
    # allow_nan: NaN and Infinity are not JSON, which is the point; ensure_ascii escapes lone surrogates.
    return json.dumps(body, allow_nan=True).encode()


@st.composite
def raw_bodies(draw, good):
    """Bytes that are not a JSON window at all, or a good one damaged on the way."""
    kind = draw(st.sampled_from(["bytes", "truncate", "bad utf8", "bom", "nul", "utf16", "deep", "deep object",
                                 "oversize", "megabyte", "duplicate", "empty", "scalar"]))
    if kind == "bytes":
        return draw(st.binary(max_size=200))
    if kind == "truncate":
        return good[:draw(st.integers(0, len(good) - 1))]
    if kind == "bad utf8":
        at = draw(st.integers(0, len(good)))
        broken = draw(st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\xf8\x88\x80\x80\x80"]))
        return good[:at] + broken + good[at:]
    if kind == "bom":
        return b"\xef\xbb\xbf" + good
    if kind == "nul":
        at = draw(st.integers(0, len(good)))
        return good[:at] + b"\x00" + good[at:]
    if kind == "utf16":
        return good.decode().encode("utf-16")
    if kind == "deep":
        depth = draw(st.sampled_from([100, 1000, 5000, 8000, 10_000]))
        return b"[" * depth + b"]" * depth
    if kind == "deep object":
        depth = draw(st.sampled_from([100, 1000, 2500]))
        return b'{"a":' * depth + b"1" + b"}" * depth
    if kind == "oversize":
        # A good window padded with JSON whitespace to just past the limit.
        return good[:-1] + b" " * (MAX_PAYLOAD_BYTES - len(good) + 1) + b"}"
    if kind == "megabyte":
        return draw(st.sampled_from([b"{" * 1_000_000, good + b" " * 1_000_000, b"\xff" * 1_000_000]))
    if kind == "duplicate":
        key = draw(st.sampled_from(["device", "faces", "site", "schema", "counts", "suppressed"]))
        return good[:-1] + f', "{key}": {json.dumps(draw(scalars), allow_nan=True)}'.encode() + b"}"
    if kind == "empty":
        return b""
    return draw(st.sampled_from([b"null", b"1", b'"x"', b"[]", b"{}", b"true", b"NaN", b"Infinity"]))


def topic_of(site, room, device, kind="emotions", prefix="classroom"):
    return f"{prefix}/{site}/{room}/{device}/{kind}".encode()


def other_names(name):
    return names.map(lambda other: other if other != name else other + "x")


@st.composite
def hostile_topics(draw, site, room, device):
    change = draw(st.sampled_from(["device", "site", "room", "kind", "extra", "short", "prefix", "empty", "utf8"]))
    if change == "device":
        return topic_of(site, room, draw(other_names(device)))
    if change == "site":
        return topic_of(draw(other_names(site)), room, device)
    if change == "room":
        return topic_of(site, draw(other_names(room)), device)
    if change == "kind":
        return topic_of(site, room, device, draw(st.sampled_from(["emotion", "EMOTIONS", "", "status", "stats", "x"])))
    if change == "extra":
        return topic_of(site, room, device) + b"/" + draw(st.sampled_from([b"", b"x", b"emotions"]))
    if change == "short":
        return f"classroom/{room}/{device}/emotions".encode()
    if change == "prefix":
        return topic_of(site, room, device, prefix=draw(st.sampled_from(["", "Classroom", "classroom/x", "$SYS"])))
    if change == "empty":
        return b""
    return topic_of(site, room, device)[:-2] + draw(st.sampled_from([b"\xff", b"\xc3(", b"\xed\xa0\x80"]))


@st.composite
def hostile_statuses(draw, site, room, device):
    body = {"state": draw(st.sampled_from(["online", "offline", "stopped", "Online", "", None, 1])),
            "device": draw(st.one_of(st.just(device), bad_names, names))}
    for key in draw(st.sets(st.sampled_from(["camera", "reason", "version", "t", "extra"]))):
        body[key] = draw(st.one_of(texts, hostile_values, bad_times, st.just("x" * 501)))
    return topic_of(site, room, device, "status"), encode(body)


@st.composite
def hostile_messages(draw):
    """``(topic bytes, payload bytes)``: a window hostile in its body, its bytes, its topic, or a status."""
    body = draw(windows())
    site, room, device = body["site"], body["room"], body["device"]
    good = encode(body)
    how = draw(st.sampled_from(["body", "body", "body", "raw", "raw", "topic", "status"]))
    if how == "body":
        return topic_of(site, room, device), encode(draw(mutated_bodies(body)))
    if how == "raw":
        return topic_of(site, room, device), draw(raw_bodies(good))
    if how == "topic":
        return draw(hostile_topics(site, room, device)), good
    return draw(hostile_statuses(site, room, device))


# -- checks -----------------------------------------------------------------------------------


def canonical(body):
    return json.dumps(body, sort_keys=True)


def mqtt_message(topic, payload, mid):
    message = MQTTMessage(mid=mid, topic=topic)
    message.payload = payload
    message.qos = 1
    return message


def stored_windows(path):
    connection = sqlite3.connect(path)
    connection.row_factory = sqlite3.Row
    try:
        return [dict(row) for row in connection.execute("SELECT * FROM windows")]
    finally:
        connection.close()


def revalidate(row):
    """The row as the payload it came from, through the contract's strict JSON path; MessageError if bad."""
    body = {"schema": 1, "device": row["device"], "site": row["site"], "room": row["room"],
            "window_start": format_utc(row["window_start"]), "window_s": row["window_s"], "seq": row["seq"],
            "frames": row["frames"], "faces": row["faces"], "faces_per_frame_median": row["faces_per_frame_median"],
            "counts": {label: row[label] for label in EMOTIONS}, "suppressed": bool(row["suppressed"]),
            "model": row["model"]}
    return parse_payload("emotions", json.dumps(body).encode(), (row["site"], row["room"], row["device"]))


def check_devices(store):
    for device in store.devices():
        status = {"state": device.state, "device": device.device, "camera": device.camera, "reason": device.reason,
                  "version": device.version}
        if device.state is not None:
            StatusPayload.model_validate_json(json.dumps({k: v for k, v in status.items() if v is not None}))


def test_ten_thousand_hostile_messages_are_refused_or_stored_valid(tmp_path):
    path = tmp_path / "c.sqlite3"
    store = Store(f"sqlite:///{path}")
    ingest = Ingest(store, BrokerConfig(host="127.0.0.1", port=1), client_id="collector-fuzz")
    accepted = {}  # (device, window_start epoch): the payloads accepted for it
    seen = {"messages": 0}
    started = time.monotonic()

    def store_queued():
        batch = []
        while not ingest._queue.empty():
            batch.append(ingest._queue.get_nowait())
        if batch:
            ingest._store(batch)

    @settings(max_examples=MESSAGES // PER_EXAMPLE, deadline=None, database=None, derandomize=True,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much,
                                     HealthCheck.large_base_example])
    @given(st.lists(hostile_messages(), min_size=PER_EXAMPLE, max_size=PER_EXAMPLE))
    def some(messages):
        for topic, payload in messages:
            one(topic, payload)

    def one(topic, payload):
        seen["messages"] += 1
        rejected = ingest.counts["rejected"]
        ingest._on_message(ingest.client, None, mqtt_message(topic, payload, seen["messages"] % 65535 + 1))
        if ingest.counts["rejected"] == rejected:
            # Accepted: it must be a window (or status) the contract allows, from the device its topic names.
            kind, site, room, device, parsed = ingest._queue.queue[-1][:5]
            assert topic.decode() == f"classroom/{site}/{room}/{device}/{kind}"
            if kind == "emotions":
                assert (parsed.device, parsed.site, parsed.room) == (device, site, room)
                EmotionsPayload.model_validate_json(parsed.to_json())
                # What was accepted is exactly what will be stored: same keys, values and JSON types (true is not 1).
                assert canonical(json.loads(payload)) == canonical(json.loads(parsed.to_json()))
                accepted.setdefault((device, parsed.start_epoch), []).append(parsed)
        else:
            assert ingest.counts["rejected"] == rejected + 1
        if ingest._queue.qsize() >= 500:
            store_queued()

    some()
    store_queued()
    assert seen["messages"] >= MESSAGES
    assert ingest.counts["received"] == seen["messages"]
    assert ingest.counts["rejected"] > 0.9 * seen["messages"]
    rows = stored_windows(path)
    for row in rows:
        payload = revalidate(row)
        assert payload in accepted[(row["device"], row["window_start"])]
    check_devices(store)
    print(f"{seen['messages']} messages, {ingest.counts['rejected']} rejected, {len(rows)} windows stored, "
          f"{time.monotonic() - started:.1f} s")


# Regressions: each of these was once accepted by the contract.
@pytest.mark.parametrize("change", [
    {"model": "mini\x00xception"},  # PostgreSQL refuses NUL in text: the batch would fail for ever
    {"model": "\x1b[2Jmodel"},
    {"window_start": "2026-12-31T23:59:60Z"},  # a leap second, read by strptime as the next minute
    {"window_start": "2026-12-31T23:59:61Z", "window_s": 1},
    {"window_start": "٢٠٢٦-11-23T10:15:00Z"},  # Arabic-Indic digits match \d and strptime reads them
    {"schema": True},  # pydantic's Literal[1] takes true and 1.0
    {"schema": 1.0},
])
def test_once_accepted_hostile_windows_are_refused(change):
    body = {"schema": 1, "device": "pi-1", "site": "north", "room": "101", "window_start": format_utc(T0),
            "window_s": 60, "seq": 1, "frames": 2, "faces": 6, "faces_per_frame_median": 3,
            "counts": {"angry": 0, "disgust": 0, "fear": 1, "happy": 2, "sad": 0, "surprise": 0, "neutral": 3},
            "suppressed": False, "model": "m"}
    parse_payload("emotions", json.dumps(body).encode())
    with pytest.raises(MessageError):
        parse_payload("emotions", json.dumps({**body, **change}).encode())


def test_status_text_with_control_characters_is_refused():
    with pytest.raises(MessageError):
        parse_payload("status", b'{"state": "offline", "device": "pi-1", "reason": "lost\\u0000"}')


def test_an_undecodable_topic_is_refused_not_raised(tmp_path):
    ingest = Ingest(Store(f"sqlite:///{tmp_path / 'c.sqlite3'}"), BrokerConfig(host="127.0.0.1", port=1),
                    client_id="collector-fuzz")
    ingest._on_message(ingest.client, None, mqtt_message(b"classroom/north/101/pi-\xff/emotions", b"{}", 1))
    assert ingest.counts["rejected"] == 1 and ingest._queue.empty()


# -- through a real broker --------------------------------------------------------------------


def hostile_list():
    """A few hundred messages the contract refuses, each for its own reason, on topics the collector
    subscribes to (the broker itself keeps the others away)."""
    good = {"schema": 1, "device": "pi-1", "site": "north", "room": "101", "window_start": format_utc(T0),
            "window_s": 60, "seq": 0, "frames": 2, "faces": 6, "faces_per_frame_median": 3,
            "counts": {"angry": 0, "disgust": 0, "fear": 1, "happy": 2, "sad": 0, "surprise": 0, "neutral": 3},
            "suppressed": False, "model": "m"}
    raw = json.dumps(good).encode()
    topic = "classroom/north/101/pi-1/emotions"
    messages = [(topic, b"{" * 1_000_000), (topic, raw + b" " * 1_000_000), (topic, b"\xff" + raw),
                (topic, b"\xef\xbb\xbf" + raw), (topic, raw[:-1]), (topic, b""), (topic, b"[" * 8000 + b"]" * 8000),
                ("classroom/north/101/pi-2/emotions", raw), ("classroom/south/101/pi-1/emotions", raw),
                ("classroom/north/101/pi 1/emotions", raw), ("classroom/north/101/pï/emotions", raw),
                ("classroom/north/101/pi-1/status", raw), ("classroom/north/101/pi-1/stats", raw)]
    messages += [(topic, raw[:cut]) for cut in range(0, len(raw), 20)]
    for key in ("device", "site", "room"):
        messages += [(topic, json.dumps({**good, key: name}).encode()) for name in ("pi/1", "p" * 65, "pï", " pi")]
    for key in good:
        messages.append((topic, json.dumps({k: v for k, v in good.items() if k != key}).encode()))
        for value in (None, "", -1, 2**70, 1.5, [], {}, "\x00", True):
            messages.append((topic, json.dumps({**good, key: value}).encode()))
    for label in good["counts"]:
        for value in (-1, 10**9 + 1, 2**70, "1", None, 0.5):
            messages.append((topic, json.dumps({**good, "counts": {**good["counts"], label: value}}).encode()))
    return messages


def test_hostile_messages_through_the_broker_leave_the_collector_storing(tmp_path):
    hostile = hostile_list()
    assert 200 <= len(hostile) <= 500
    path = tmp_path / "c.sqlite3"
    store = Store(f"sqlite:///{path}")
    with Mosquitto(persistence=True) as broker:
        ingest = Ingest(store, BrokerConfig(host="127.0.0.1", port=broker.port, reconnect_max_s=1),
                        client_id="collector-fuzz")
        ingest.start()
        client = publisher(broker.port)
        try:
            assert ingest.subscribed.wait(10)
            for name, body in hostile:
                client.publish(name, body, qos=1)
            valid = EmotionsPayload.model_validate_json(json.dumps({
                "schema": 1, "device": "pi-1", "site": "north", "room": "101", "window_start": format_utc(T0 + 60),
                "window_s": 60, "seq": 1, "frames": 2, "faces": 6, "faces_per_frame_median": 3,
                "counts": {"angry": 0, "disgust": 0, "fear": 1, "happy": 2, "sad": 0, "surprise": 0, "neutral": 3},
                "suppressed": False, "model": "m"}))
            publish(client, "classroom/north/101/pi-1/emotions", valid.to_json())
            wait_until(lambda: ingest.counts["received"] == len(hostile) + 1 and store.count_windows() == 1,
                       timeout=60)
            assert ingest.subscribed.is_set()
            assert ingest.counts["rejected"] == len(hostile)
        finally:
            client.disconnect()
            ingest.stop()
    assert store.windows("north", "101") == [valid]
    assert [revalidate(row) for row in stored_windows(path)] == [valid]
