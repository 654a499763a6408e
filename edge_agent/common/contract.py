"""The MQTT contract, version 1: the emotion labels, topics, the payloads the agent publishes and
the collector accepts, and how counts read as interest.

Both sides import this module, so a payload the agent can build is exactly a payload the
collector will store, and anything else is refused with a reason (the collector also refuses a
window stamped more than MAX_AHEAD_S ahead of its own clock). The labels are the model's
output order, which is FER-2013's; the agent sends counts only, and the interest ratio is the
collector's interpretation of them.
"""

import calendar
import time
from collections.abc import Iterable, Mapping
from typing import Annotated, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator, model_validator

# Index order of the emotion model's output, which is FER-2013's label order.
EMOTIONS = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
# Emotions counted as interested unless a config says otherwise.
DEFAULT_INTERESTED = ("happy", "surprise", "neutral")

SCHEMA_VERSION = 1
DEFAULT_PREFIX = "classroom"
TOPIC_KINDS = ("emotions", "status", "stats")
STATES = ("online", "offline", "stopped")
State = Literal["online", "offline", "stopped"]

# A window payload is about 400 bytes; anything far bigger is not ours.
MAX_PAYLOAD_BYTES = 16 * 1024

# Topic levels must not contain MQTT wildcards or separators, and must stay readable. These
# patterns' `$` is the end of the text in pydantic's engine; Python's re also lets it match before a
# final newline, so code matching them with re uses fullmatch.
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
# [0-9], not \d: the pattern engine's \d matches any script's digits, and strptime reads them.
ISO_MINUTE_PATTERN = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z$"
# Free text is stored and shown: no control characters (PostgreSQL refuses NUL in text outright).
TEXT_PATTERN = r"^[^\x00-\x1f\x7f]*$"

# Counts are stored as SQL integers; this bound keeps every sum far from overflow.
MAX_COUNT = 10**9
# A window stamped further ahead of the receiver's clock than this comes from a clock that is
# wrong, not from an agent holding its stamps ahead after a step back: the collector refuses it.
MAX_AHEAD_S = 86400

Name = Annotated[str, Field(pattern=NAME_PATTERN)]
Count = Annotated[int, Field(ge=0, le=MAX_COUNT)]
Text = Annotated[str, Field(pattern=TEXT_PATTERN)]
_NAME = TypeAdapter(Name)


def interest_ratio(counts: Mapping[str, int], interested: Iterable[str] = DEFAULT_INTERESTED) -> float | None:
    """Share of faces with an interested label, or None when there are no faces to judge."""
    total = sum(counts.values())
    return sum(counts[label] for label in interested) / total if total else None


# Why a message is refused, in a few words a monitoring system can count by: the topic, the size,
# the encoding, the JSON, the schema, a body naming another device or room than its topic, and
# (the collector's own) a window from a clock more than MAX_AHEAD_S ahead.
REJECT_REASONS = ("topic", "size", "encoding", "json", "schema", "identity", "future")


class MessageError(ValueError):
    """A payload or topic that breaks the contract; the text says how, ``reason`` (REJECT_REASONS) which rule."""

    def __init__(self, message: str, reason: str = "schema"):
        super().__init__(message)
        self.reason = reason


class _Strict(BaseModel):
    # strict: "5" is not 5 and 1 is not true; the agent never sends either.
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class Counts(_Strict):
    angry: Count
    disgust: Count
    fear: Count
    happy: Count
    sad: Count
    surprise: Count
    neutral: Count

    def total(self) -> int:
        return sum(self.as_dict().values())

    def as_dict(self) -> dict[str, int]:
        return {label: getattr(self, label) for label in EMOTIONS}


def format_utc(epoch_seconds: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch_seconds))


def parse_utc(text: str) -> int:
    return calendar.timegm(time.strptime(text, "%Y-%m-%dT%H:%M:%SZ"))


class EmotionsPayload(_Strict):
    """One window of anonymised emotion counts from one device."""

    schema_version: Literal[1] = Field(alias="schema")
    device: Name
    site: Name
    room: Name
    window_start: Annotated[str, Field(pattern=ISO_MINUTE_PATTERN)]
    window_s: Annotated[int, Field(ge=1, le=86400)]
    seq: Annotated[int, Field(ge=0, le=2**53)]
    frames: Count
    faces: Count
    faces_per_frame_median: Count
    counts: Counts
    suppressed: bool
    model: Annotated[Text, Field(min_length=1, max_length=80)]

    model_config = ConfigDict(populate_by_name=True)

    @field_validator("schema_version", mode="before")
    @classmethod
    def _schema_is_a_whole_number(cls, value: object) -> object:
        # pydantic's literal check lets true and 1.0 through as 1, strict or not.
        if type(value) is not int:
            raise ValueError(f"Input should be {SCHEMA_VERSION}")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        start: int | None
        try:
            start = parse_utc(self.window_start)
        except ValueError:
            start = None
        # strptime also reads leap seconds (23:59:60): only the canonical spelling names a window.
        if start is None or format_utc(start) != self.window_start:
            raise ValueError(f"window_start {self.window_start!r} is not a real UTC time")
        if start % self.window_s:
            raise ValueError(f"window_start {self.window_start} is not aligned to {self.window_s} s windows")
        if self.suppressed and self.counts.total():
            raise ValueError("a suppressed window must have all counts zero")
        if not self.suppressed and self.counts.total() != self.faces:
            raise ValueError(f"counts add up to {self.counts.total()} but faces is {self.faces}")
        if self.faces_per_frame_median > self.faces:
            raise ValueError("faces_per_frame_median is larger than faces")
        if self.frames == 0 and self.faces:
            raise ValueError("faces without frames")
        return self

    @property
    def start_epoch(self) -> int:
        return parse_utc(self.window_start)

    def to_json(self) -> bytes:
        return self.model_dump_json(by_alias=True).encode()


class StatusPayload(_Strict):
    """The retained liveness of a device; ``offline`` is its Last Will."""

    state: State
    device: Name
    t: Annotated[str, Field(pattern=ISO_MINUTE_PATTERN)] | None = None
    camera: Annotated[Text, Field(max_length=32)] | None = None
    reason: Annotated[Text, Field(max_length=500)] | None = None
    version: Annotated[Text, Field(max_length=32)] | None = None
    # Present only while something is wrong: "waiting for sync", or why the outbox cannot be written.
    clock: Annotated[Text, Field(max_length=64)] | None = None
    outbox: Annotated[Text, Field(max_length=200)] | None = None

    def to_json(self) -> bytes:
        return self.model_dump_json(exclude_none=True).encode()


Gauge = Annotated[float, Field(ge=0, le=1e12)]


class StatsPayload(_Strict):
    """Health figures every minute; all optional so an agent can add one without breaking a collector."""

    device: Name
    t: Annotated[str, Field(pattern=ISO_MINUTE_PATTERN)]
    uptime_s: Gauge
    fps: Gauge | None = None
    detect_ms: Gauge | None = None
    classify_ms: Gauge | None = None
    faces_per_frame: Gauge | None = None
    outbox_depth: Count | None = None
    dropped_windows: Count | None = None
    frames_dropped: Count | None = None
    camera: Annotated[Text, Field(max_length=32)] | None = None
    # Wide on purpose: a sensor gone wrong is stored as sent and flagged by the collector, not refused.
    cpu_temp_c: Annotated[float, Field(ge=-1000, le=1000)] | None = None
    rss_mb: Gauge | None = None
    # The system's load average over the last minute (runnable processes; a Pi has 4 cores).
    load_1m: Gauge | None = None
    outbox_failing: bool | None = None
    windows_held: Count | None = None
    clock_synced: bool | None = None
    clock_ahead_s: Gauge | None = None

    def to_json(self) -> bytes:
        return self.model_dump_json(exclude_none=True).encode()


Payload = EmotionsPayload | StatusPayload | StatsPayload
PAYLOAD_TYPES: dict[str, type[Payload]] = {"emotions": EmotionsPayload, "status": StatusPayload,
                                           "stats": StatsPayload}


def topic(prefix: str, site: str, room: str, device: str, kind: str) -> str:
    if kind not in TOPIC_KINDS:
        raise ValueError(f"unknown topic kind {kind!r}")
    return f"{prefix}/{site}/{room}/{device}/{kind}"


def parse_topic(name: str, prefix: str = DEFAULT_PREFIX) -> tuple[str, str, str, str]:
    """``(site, room, device, kind)`` of a contract topic, or MessageError."""
    parts = name.split("/")
    if len(parts) != 5 or parts[0] != prefix:
        raise MessageError(f"topic {name!r} is not {prefix}/<site>/<room>/<device>/<kind>", "topic")
    site, room, device, kind = parts[1:]
    if kind not in TOPIC_KINDS:
        raise MessageError(f"topic {name!r} ends in {kind!r}, not one of {', '.join(TOPIC_KINDS)}", "topic")
    for level in (site, room, device):
        try:
            _NAME.validate_python(level)
        except ValidationError:
            raise MessageError(f"topic {name!r} has an invalid level {level!r}", "topic") from None
    return site, room, device, kind


def _first_error(exc: ValidationError) -> str:
    error = exc.errors(include_url=False)[0]
    where = ".".join(str(part) for part in error["loc"])
    return f"{where}: {error['msg']}" if where else error["msg"]


def parse_payload(kind: str, raw: bytes | bytearray | str,
                  topic_levels: tuple[str, str, str] | None = None) -> Payload:
    """Validate raw bytes as a ``kind`` payload; MessageError says why one is refused.

    ``topic_levels`` (site, room, device) from the topic must match the body, so a
    device cannot report under another's name.
    """
    if len(raw) > MAX_PAYLOAD_BYTES:
        raise MessageError(f"{kind} payload is {len(raw)} bytes; the limit is {MAX_PAYLOAD_BYTES}", "size")
    try:
        text = raw.decode("utf-8") if isinstance(raw, (bytes, bytearray)) else raw
    except UnicodeDecodeError as exc:
        raise MessageError(f"{kind} payload is not UTF-8 ({exc.reason} at byte {exc.start})", "encoding") from None
    try:
        payload = PAYLOAD_TYPES[kind].model_validate_json(text)
    except ValidationError as exc:
        if any(error["type"] == "json_invalid" for error in exc.errors()):
            raise MessageError(f"{kind} payload is not valid JSON", "json") from None
        raise MessageError(f"{kind} payload: {_first_error(exc)}") from None
    if topic_levels is not None:
        site, room, device = topic_levels
        if payload.device != device:
            raise MessageError(f"{kind} payload names device {payload.device!r} but the topic says {device!r}",
                               "identity")
        if isinstance(payload, EmotionsPayload) and (payload.site, payload.room) != (site, room):
            raise MessageError(
                f"emotions payload is for {payload.site}/{payload.room} but the topic says {site}/{room}", "identity")
    return payload

