"""The agent's YAML configuration: its keys and defaults, validated by the common machinery."""

import socket
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from ..common.config import (
    BROKER_PATH_KEYS,
    BrokerConfig,
    ConfigFile,
    ExistingFile,
    LoggingConfig,
    Section,
    default_state_dir,
    file_path,
)
from ..common.contract import Name
from .paths import DEFAULT_CASCADE, DEFAULT_MODEL
from .sources import source_kind


def _hostname():
    name = socket.gethostname().split(".")[0]
    return "".join(ch if ch.isalnum() or ch in "_.-" else "-" for ch in name)[:64] or "edge-agent"


class DeviceConfig(Section):
    id: Name = Field(default_factory=_hostname, title="Device id",
                     description="MQTT client id and topic level; defaults to the host name")
    site: Name = Field("default", title="Site (school or building)")
    room: Name = Field("default", title="Room")


class CameraConfig(Section):
    backend: Literal["auto", "opencv", "picamera2"] = Field(
        "auto", title="Capture backend", description="auto: picamera2 when source is 'picamera2', else OpenCV")
    source: int | str = Field(
        "picamera2", title="Frame source",
        description="'picamera2', a camera index, /dev/videoN, a video file or an rtsp/http URL")
    width: Annotated[int, Field(ge=64, le=7680)] = Field(1280, title="Capture width")
    height: Annotated[int, Field(ge=48, le=4320)] = Field(720, title="Capture height")
    fps: Annotated[float, Field(gt=0, le=30)] = Field(1.0, title="Frames analysed per second")
    loop: bool = Field(False, title="Loop a video file (kiosks and demos)")
    stall_s: Annotated[float, Field(gt=0, le=3600)] = Field(
        10.0, title="Seconds without a frame before the camera is reopened and the watchdog starves")
    backoff_max_s: Annotated[float, Field(ge=1, le=3600)] = Field(60.0, title="Longest wait between reopen tries")


class HandBand(Section):
    top: Annotated[float, Field(ge=0, le=1)] = Field(title="Top row of face centres, as a fraction of the frame height")
    bottom: Annotated[float, Field(ge=0, le=1)] = Field(
        title="Bottom row of face centres, as a fraction of the frame height")
    min_face: Annotated[int, Field(ge=8, le=2000)] = Field(title="Smallest face searched for, in frame pixels")
    max_face: Annotated[int, Field(ge=8, le=2000)] = Field(title="Largest face searched for, in frame pixels")

    @model_validator(mode="after")
    def _ordered(self):
        if self.bottom <= self.top:
            raise ValueError(f"bottom ({self.bottom}) must be below top ({self.top})")
        if self.max_face < self.min_face:
            raise ValueError(f"max_face ({self.max_face}) is smaller than min_face ({self.min_face})")
        return self


class SearchConfig(Section):
    mode: Literal["learn", "bands", "whole"] = Field(
        "learn", title="Where faces are searched for",
        description="learn: whole frames at first, then the bands of rows and face sizes where faces were seen, "
                    "kept in the state directory; bands: the hand-set bands below; whole: every frame searched whole")
    learn_frames: Annotated[int, Field(ge=1, le=100_000)] = Field(
        60, title="Whole frames searched before the learned bands are used")
    full_every: Annotated[int, Field(ge=2, le=100_000)] = Field(
        60, title="One frame in this many is searched whole, so a face in a new place is found and learned")
    margin: Annotated[float, Field(ge=1.0, le=3.0)] = Field(
        1.25, title="How far beyond the face sizes seen in its rows a band searches (a factor)")
    seats: bool = Field(
        True, title="Between whole frames, search only around the faces found lately (their seats)",
        description="each seat for sizes within margin of its face, and what changed outside the seats since "
                    "the last frame (someone sitting down); the bands when there are no seats or they would cost "
                    "more; false: the bands alone")
    seat_frames: Annotated[int, Field(ge=1, le=100_000)] = Field(
        60, title="Frames a seat is still searched after its face was last found (a student looking away)")
    seat_reach: Annotated[float, Field(ge=0.05, le=2.0)] | None = Field(
        None, title="How far beyond its face a seat is searched on each side, in face widths (head movement)",
        description="default: 0.3 with detector.fine_scan, 0.4 without (a coarser scan needs more room)")
    bands: list[HandBand] = Field(
        default_factory=list, title="Hand-set bands for mode 'bands', top to bottom, each starting where the last ends")
    state: Path | None = Field(None, title="Learned bands (default: the outbox's directory's face_search.json)")

    @field_validator("bands")
    @classmethod
    def _bands_tile_the_rows(cls, bands):
        for number, (above, below) in enumerate(zip(bands, bands[1:], strict=False), start=2):
            if below.top < above.bottom:
                raise ValueError(f"band {number} (top {below.top}) overlaps band {number - 1} (bottom {above.bottom})")
            if below.top > above.bottom:
                raise ValueError(f"band {number} starts at {below.top}, leaving a gap after band {number - 1}, "
                                 f"which ends at {above.bottom}; start it at {above.bottom}")
        return bands

    @model_validator(mode="after")
    def _bands_for_mode_bands(self):
        if self.mode == "bands" and not self.bands:
            raise ValueError("mode 'bands' needs at least one band under bands:")
        return self


class DetectorConfig(Section):
    cascade: ExistingFile = Field(DEFAULT_CASCADE, title="Haar cascade XML")
    scale_factor: Annotated[float, Field(gt=1.0, le=2.0)] = Field(1.1, title="Cascade scale step")
    min_neighbors: Annotated[int, Field(ge=0, le=50)] = Field(5, title="Neighbours a detection needs")
    min_size: Annotated[int, Field(ge=8, le=2000)] = Field(30, title="Smallest face, in frame pixels")
    detect_width: Annotated[int, Field(ge=0, le=7680)] = Field(
        0, title="Width frames are shrunk to before a whole-frame search (0: never shrink)",
        description="shrinking loses the smallest faces (the back rows); search.mode 'learn' is the speed knob")
    threads: Annotated[int, Field(ge=0, le=64)] = Field(1, title="OpenCV threads (0: OpenCV's default)")
    equalize: bool = Field(False, title="Equalise the histogram before detection (dim rooms)")
    fine_scan: bool = Field(
        True, title="Scan faces under 53 px (two cascade windows and a step) at every pixel, not every other",
        description="false scans them at every other pixel, as OpenCV does: faster, but it misses a third of "
                    "the 32-47 px faces (the back rows); see the README's face-search figures")
    crop_offsets: tuple[Annotated[float, Field(ge=0, le=1)], Annotated[float, Field(ge=0, le=1)]] = Field(
        (0.0, 0.0), title="Margin added around each face before labelling, as fractions of its width and height")
    search: SearchConfig = Field(default_factory=SearchConfig)


class ClassifierConfig(Section):
    model: ExistingFile = Field(DEFAULT_MODEL, title="Int8 TFLite emotion model")
    threads: Annotated[int, Field(ge=1, le=64)] = Field(1, title="Interpreter threads")
    flip_average: bool | None = Field(
        None, title="Label each face by the mean of it and its mirror image",
        description="both in the same interpreter call: twice the classifier's time per face; "
                    "null: as the model's build record says (read_out.flip_average), else false")


class WindowConfig(Section):
    length_s: Annotated[int, Field(ge=1, le=3600)] = Field(60, title="Window length in seconds")
    min_group: Annotated[int, Field(ge=1, le=1000)] = Field(
        3, title="Smallest median faces per frame whose counts are reported (fewer: suppressed)")

    @field_validator("length_s")
    @classmethod
    def _divides_a_day(cls, value):
        if 86400 % value:
            raise ValueError("must divide a day (86400 s) so windows line up with UTC minutes and hours")
        return value


class MQTTConfig(BrokerConfig):
    stats_interval_s: Annotated[float, Field(ge=5, le=3600)] = Field(60.0, title="Seconds between stats messages")


class OutboxConfig(Section):
    path: Path | None = Field(None, title="SQLite outbox (default: the state directory's outbox.sqlite3)")
    max_age_h: Annotated[float, Field(gt=0, le=24 * 365)] = Field(
        168.0, title="Windows older than this are dropped (counted and logged) when the broker stays away")
    memory_windows: Annotated[int, Field(ge=1, le=100_000)] = Field(
        1440, title="Windows held in memory while the outbox cannot be written (disk full or read-only)",
        description="the newest are kept; older ones beyond this are dropped and counted")

    def resolved_path(self):
        return self.path or default_state_dir("edge-agent") / "outbox.sqlite3"


class ClockConfig(Section):
    require_sync: bool = Field(
        True, title="Stamp windows only once the system clock is synchronised (NTP)",
        description="a Pi boots with a stale clock or at 1970; false only where the clock is right without NTP")


def video_file_next_to(source: str, base: Path) -> str:
    """A camera source that is a video file, made relative to ``base``; a device or URL as it is."""
    return file_path(source, base) if source_kind(source) == "file" else source


class AgentConfig(ConfigFile):
    PATH_KEYS = (("detector", "cascade"), ("detector", "search", "state"), ("classifier", "model"), ("outbox", "path"),
                 *BROKER_PATH_KEYS)
    SOMETIMES_PATH_KEYS = ((("camera", "source"), video_file_next_to),)

    device: DeviceConfig = Field(default_factory=DeviceConfig)
    camera: CameraConfig = Field(default_factory=CameraConfig)
    detector: DetectorConfig = Field(default_factory=DetectorConfig)
    classifier: ClassifierConfig = Field(default_factory=ClassifierConfig)
    window: WindowConfig = Field(default_factory=WindowConfig)
    mqtt: MQTTConfig = Field(default_factory=MQTTConfig)
    outbox: OutboxConfig = Field(default_factory=OutboxConfig)
    clock: ClockConfig = Field(default_factory=ClockConfig)
    logging: LoggingConfig = Field(default_factory=LoggingConfig)



# The agent's config from YAML text, or from a file (every default when the path is None).
parse_config, load_config = AgentConfig.parse, AgentConfig.load
