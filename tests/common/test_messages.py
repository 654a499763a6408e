import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_agent.common.contract import (
    MAX_PAYLOAD_BYTES,
    REJECT_REASONS,
    MessageError,
    StatusPayload,
    parse_payload,
    parse_topic,
    topic,
)

# The example of the contract in DESIGN.md, verbatim.
CONTRACT_EXAMPLE = {
    "schema": 1, "device": "pi-101a", "site": "north", "room": "101",
    "window_start": "2026-11-23T10:15:00Z", "window_s": 60, "seq": 4711,
    "frames": 60, "faces": 1130, "faces_per_frame_median": 19,
    "counts": {"angry": 20, "disgust": 1, "fear": 15, "happy": 210, "sad": 59, "surprise": 30, "neutral": 795},
    "suppressed": False, "model": "mini-xception-int8:3f2a9c1e",
}


def encode(obj):
    return json.dumps(obj).encode()


def changed(**fields):
    return encode({**CONTRACT_EXAMPLE, **fields})


def test_contract_example_is_accepted_and_round_trips():
    payload = parse_payload("emotions", encode(CONTRACT_EXAMPLE))
    assert payload.counts.happy == 210 and payload.seq == 4711
    assert json.loads(payload.to_json()) == CONTRACT_EXAMPLE


@pytest.mark.parametrize("raw, reason", [
    (changed(faces="1130"), "faces: Input should be a valid integer"),
    (changed(seq=-1), "seq: Input should be greater than or equal to 0"),
    (changed(frames=10**12), "frames: Input should be less than or equal to"),
    (changed(suppressed=1), "suppressed: Input should be a valid boolean"),
    (changed(faces=1131), "counts add up to 1130 but faces is 1131"),
    (changed(suppressed=True), "suppressed window must have all counts zero"),
    (changed(window_start="2026-11-23T10:15:30Z"), "not aligned to 60 s windows"),
    (changed(window_start="2026-13-40T10:15:00Z"), "not a real UTC time"),
    (changed(device="pi/#"), "device: String should match pattern"),
    (changed(schema=2), "schema: Input should be 1"),
    (changed(extra="x"), "extra: Extra inputs are not permitted"),
    (changed(counts={**CONTRACT_EXAMPLE["counts"], "bored": 1}), "counts.bored"),
    (changed(counts={**CONTRACT_EXAMPLE["counts"], "sad": -59}), "counts.sad"),
    (encode({k: v for k, v in CONTRACT_EXAMPLE.items() if k != "seq"}), "seq: Field required"),
    (b"[1, 2]", "Input should be an object"),
    (b"{\"schema\": 1,", "not valid JSON"),
    (b"\xff\xfe{}", "not UTF-8"),
    (b"[" * 5000 + b"]" * 5000, "not valid JSON"),
    (b" " * (MAX_PAYLOAD_BYTES + 1), f"the limit is {MAX_PAYLOAD_BYTES}"),
])
def test_bad_payloads_are_refused_with_a_reason(raw, reason):
    with pytest.raises(MessageError) as error:
        parse_payload("emotions", raw)
    assert reason in str(error.value)


def test_topic_and_body_must_name_the_same_device():
    with pytest.raises(MessageError, match="names device 'pi-101a' but the topic says 'pi-102'"):
        parse_payload("emotions", encode(CONTRACT_EXAMPLE), ("north", "101", "pi-102"))
    with pytest.raises(MessageError, match="is for north/101 but the topic says north/102"):
        parse_payload("emotions", encode(CONTRACT_EXAMPLE), ("north", "102", "pi-101a"))
    assert parse_payload("emotions", encode(CONTRACT_EXAMPLE), ("north", "101", "pi-101a")).room == "101"


@pytest.mark.parametrize("refuse, reason", [
    (lambda: parse_topic("classroom/north/101/pi-101a/video"), "topic"),
    (lambda: parse_topic("other/north/101/pi-101a/emotions"), "topic"),
    (lambda: parse_payload("emotions", b" " * (MAX_PAYLOAD_BYTES + 1)), "size"),
    (lambda: parse_payload("emotions", b"\xff\xfe{}"), "encoding"),
    (lambda: parse_payload("emotions", b"{\"schema\": 1,"), "json"),
    (lambda: parse_payload("emotions", changed(seq=-1)), "schema"),
    (lambda: parse_payload("stats", b'{"device": "pi-1", "t": "2026-11-23T10:00:00Z", "uptime_s": 1, "fps": NaN}'),
     "schema"),
    (lambda: parse_payload("emotions", encode(CONTRACT_EXAMPLE), ("north", "101", "pi-102")), "identity"),
    (lambda: parse_payload("emotions", encode(CONTRACT_EXAMPLE), ("north", "102", "pi-101a")), "identity"),
])
def test_each_refusal_names_the_rule_it_broke_for_counting(refuse, reason):
    """The collector counts refused messages by these words (edge_collector_messages_rejected_total)."""
    with pytest.raises(MessageError) as error:
        refuse()
    assert error.value.reason == reason and reason in REJECT_REASONS


def test_topics_round_trip_and_reject_strangers():
    name = topic("classroom", "north", "101", "pi-101a", "emotions")
    assert name == "classroom/north/101/pi-101a/emotions"
    assert parse_topic(name) == ("north", "101", "pi-101a", "emotions")
    for bad in ("classroom/north/101/pi-101a", "other/north/101/pi-101a/emotions",
                "classroom/north/101/pi-101a/images", "classroom/north/1 01/pi/stats"):
        with pytest.raises(MessageError):
            parse_topic(bad)


def test_status_payload_states():
    assert parse_payload("status", b'{"state": "offline", "device": "pi-1"}').state == "offline"
    with pytest.raises(MessageError, match="state"):
        parse_payload("status", b'{"state": "sleeping", "device": "pi-1"}')
    assert json.loads(StatusPayload(state="online", device="pi-1").to_json()) == {"state": "online", "device": "pi-1"}


def test_stats_payload_is_as_strict_as_the_others():
    good = {"device": "pi-1", "t": "2026-11-23T10:15:02Z", "uptime_s": 61, "fps": 1.5, "outbox_depth": 0}
    assert parse_payload("stats", encode(good)).uptime_s == 61.0
    for field, value, reason in (("uptime_s", True, "uptime_s"), ("uptime_s", "61", "uptime_s"),
                                 ("outbox_depth", 1.0, "outbox_depth"), ("fps", -1, "fps"),
                                 ("camera", "ok\x00", "camera")):
        with pytest.raises(MessageError, match=reason):
            parse_payload("stats", encode({**good, field: value}))


@settings(max_examples=300, deadline=None)
@given(st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
                    lambda children: st.lists(children) | st.dictionaries(st.text(), children), max_leaves=30))
def test_arbitrary_json_is_refused_or_valid_never_a_crash(value):
    try:
        payload = parse_payload("emotions", json.dumps(value).encode())
    except MessageError:
        return
    assert payload.counts.total() == (0 if payload.suppressed else payload.faces)
