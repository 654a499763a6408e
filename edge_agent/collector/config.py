"""The collector's YAML configuration: every key and its default, validated by the common machinery."""

import datetime as dt
import re
import socket
import zoneinfo
from pathlib import Path
from typing import Annotated

from pydantic import Field, field_validator, model_validator

from ..common.config import BROKER_PATH_KEYS, BrokerConfig, ConfigFile, LoggingConfig, Section, default_state_dir
from ..common.contract import DEFAULT_INTERESTED, EMOTIONS, Name

STATE_NAME = "edge-collector"
SQLITE_PREFIX = "sqlite:///"


def server_timezone():
    """The zone /etc/localtime names (what ``timedatectl`` shows), else UTC."""
    try:
        target = Path("/etc/localtime").resolve(strict=True)
        return zoneinfo.ZoneInfo(str(target).split("/zoneinfo/", 1)[1])
    except (OSError, IndexError, ValueError, zoneinfo.ZoneInfoNotFoundError):
        return dt.UTC


def _client_id():
    return f"edge-collector-{socket.gethostname().split('.')[0]}"[:64]


class CollectorMQTTConfig(BrokerConfig):
    client_id: Name = Field(default_factory=_client_id, title="MQTT client id",
                            description="names the persistent session: keep it stable across restarts")
    shared_group: Name | None = Field(
        None, title="MQTT 5 shared subscription group",
        description="collectors with the same group split the messages between them")

    @model_validator(mode="after")
    def _shared_needs_mqtt5(self):
        if self.shared_group and self.protocol != "5":
            raise ValueError("shared_group needs protocol 5 (MQTT 5 shared subscriptions)")
        return self


class StoreConfig(Section):
    url: str | None = Field(None, title="Database URL",
                            description="sqlite:///PATH (default: the state directory's collector.sqlite3) "
                                        "or postgresql://USER@HOST/DB")
    retention_days: Annotated[float, Field(gt=0)] | None = Field(
        365.0, title="Windows older than this many days are deleted (null: kept for ever)")
    stats_retention_days: Annotated[float, Field(gt=0)] = Field(
        30.0, title="Device stats older than this many days are deleted")
    stats_detail_days: Annotated[float, Field(gt=0)] = Field(
        1.0, title="Device stats younger than this many days are kept as sent; older ones as hourly summaries")

    @field_validator("stats_detail_days")
    @classmethod
    def _detail_within_retention(cls, value, info):
        retention = info.data.get("stats_retention_days")
        if retention is not None and value > retention:
            raise ValueError(f"{value:g} days is longer than stats_retention_days ({retention:g}): "
                             "nothing would be summarised")
        return value

    def resolved_url(self):
        """The URL; the default SQLite file's directory is made here, as systemd's StateDirectory= would."""
        if self.url:
            return self.url
        state = default_state_dir(STATE_NAME)
        state.mkdir(parents=True, exist_ok=True)
        return f"{SQLITE_PREFIX}{state / 'collector.sqlite3'}"


class SessionsConfig(Section):
    gap_min: Annotated[float, Field(gt=0, le=24 * 60)] = Field(
        15.0, title="A room silent for longer than this many minutes starts a new session")
    interested: tuple[str, ...] = Field(DEFAULT_INTERESTED, min_length=1, title="Emotions counted as interested")

    @field_validator("interested")
    @classmethod
    def _known_emotions(cls, value):
        unknown = [label for label in value if label not in EMOTIONS]
        if unknown:
            raise ValueError(f"unknown emotion {', '.join(unknown)}; choose from {', '.join(EMOTIONS)}")
        if len(set(value)) == len(EMOTIONS):
            raise ValueError("every emotion is listed: nothing would count as not interested")
        return tuple(dict.fromkeys(value))


FPS = Annotated[float, Field(gt=0, le=30)]


class FleetConfig(Section):
    fps: FPS = Field(1.0, title="Frames per second the cameras analyse (their camera.fps)",
                     description="a device below 90% of it is flagged")
    fps_by_device: dict[Name, FPS] = Field(default_factory=dict, title="Devices whose camera.fps differs, by id")
    silent_after_min: Annotated[float, Field(gt=0, le=24 * 60)] = Field(
        5.0, title="A device not heard from for longer than this many minutes is flagged")
    hot_c: Annotated[float, Field(ge=40, le=125)] = Field(
        80.0, title="A CPU temperature at or above this many degrees Celsius is flagged")


class MetricsConfig(Section):
    port: Annotated[int, Field(ge=1, le=65535)] | None = Field(
        None, title="Loopback port that serves the fleet's Prometheus metrics at /metrics (null: none)",
        description="127.0.0.1 only: a Prometheus on this server scrapes it, or IT's through the web server's login")


# A room pattern: `all`, or `site/room` where each part is a glob (* ? [...]) over contract names.
ROOM_PATTERN = re.compile(r"^(all|[A-Za-z0-9_.*?\[\]!-]{1,64}/[A-Za-z0-9_.*?\[\]!-]{1,64})$")


def _room_patterns(group, value):
    bad = [pattern for pattern in value if not ROOM_PATTERN.fullmatch(pattern)]
    if bad:
        raise ValueError(f"group {group}: room pattern {', '.join(map(repr, bad))} is not `all` or `site/room` "
                         "(globs * ? [...] allowed, e.g. north/1*)")
    return tuple(dict.fromkeys(value))


RoomPatterns = Annotated[tuple[str, ...], Field(min_length=1)]


class DashboardConfig(Section):
    output_dir: Path | None = Field(None, title="Directory the HTML pages and charts are written to",
                                    description="default: the state directory's dashboard/")
    refresh_s: Annotated[float, Field(ge=5, le=24 * 3600)] = Field(60.0, title="Seconds between regenerations")
    sessions_per_room: Annotated[int, Field(ge=1, le=100)] = Field(
        10, title="Latest lessons listed on a room's page", description="older ones are listed week by week")
    history_weeks: Annotated[int, Field(ge=1, le=104)] = Field(
        12, title="Weeks of lessons with a page each and on every room's history chart",
        description="older windows stay in the store for `edge-collector report`")
    worker: bool = Field(True, title="Draw the dashboard in a worker process of `edge-collector run`",
                         description="false: run `edge-collector dashboard --watch` as a service of its own")
    timezone: str | None = Field(None, title="IANA time zone of the times on pages, charts and reports",
                                 description="default: the server's zone")
    access: dict[Name, RoomPatterns] = Field(
        default_factory=dict, title="Access groups: a name and its rooms (`site/room` globs, or `all`)",
        description="each group's index, with its rooms only and no device section, is written to "
                    "groups/NAME/index.html beside the full index, for a web server to grant by path")

    @field_validator("access")
    @classmethod
    def _access_patterns(cls, value):
        return {name: _room_patterns(name, patterns) for name, patterns in value.items()}

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value):
        if value is not None:
            try:
                zoneinfo.ZoneInfo(value)
            except (zoneinfo.ZoneInfoNotFoundError, ValueError):
                raise ValueError(f"unknown time zone {value!r}; use an IANA name such as Europe/Berlin") from None
        return value

    def resolved_output_dir(self):
        return self.output_dir or default_state_dir(STATE_NAME) / "dashboard"

    def resolved_timezone(self):
        return zoneinfo.ZoneInfo(self.timezone) if self.timezone else server_timezone()


def sqlite_next_to(url: str, base: Path) -> str:
    """A relative SQLite URL made relative to ``base``; any other URL as it is.

    sqlite:///name.db is relative, sqlite:////abs.db absolute; relative means next to the config file.
    """
    if url.startswith(SQLITE_PREFIX) and not url.startswith(SQLITE_PREFIX + "/") and url != SQLITE_PREFIX + ":memory:":
        return SQLITE_PREFIX + str(base / url[len(SQLITE_PREFIX):])
    return url


class CollectorConfig(ConfigFile):
    PATH_KEYS = (("dashboard", "output_dir"), *BROKER_PATH_KEYS)
    SOMETIMES_PATH_KEYS = ((("store", "url"), sqlite_next_to),)

    mqtt: CollectorMQTTConfig = Field(default_factory=CollectorMQTTConfig)
    store: StoreConfig = Field(default_factory=StoreConfig)
    sessions: SessionsConfig = Field(default_factory=SessionsConfig)
    dashboard: DashboardConfig = Field(default_factory=DashboardConfig)
    fleet: FleetConfig = Field(default_factory=FleetConfig)
    metrics: MetricsConfig = Field(default_factory=MetricsConfig)
    logging: LoggingConfig = Field(default_factory=LoggingConfig)



# The collector's config from YAML text, or from a file (every default when the path is None).
parse_collector_config, load_collector_config = CollectorConfig.parse, CollectorConfig.load
