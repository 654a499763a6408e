"""The pipeline over recorded lessons: video files, images and folders of images, offline."""

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2

from ..common.contract import EMOTIONS, format_utc, interest_ratio
from ..common.errors import EdgeAgentError
from .capture import CaptureError, Frame, OpenCVSource, sample_frames
from .charts import total_counts
from .tally import WindowTally

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".pgm", ".ppm"}
VIDEO_SUFFIXES = {".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".mpg", ".mpeg", ".wmv", ".flv", ".ts"}


@dataclass
class Source:
    """One recording: a video file, or a set of still images taken in order."""

    name: str
    video: Path | None = None
    images: list = field(default_factory=list)
    # Images found in a folder are skipped with a warning when unreadable; named ones are errors.
    lenient: bool = False


def collect_sources(paths, warn):
    """Sources for the paths a user named; missing paths are errors, stray files in folders are skipped."""
    sources, loose_images = [], []
    for path in map(Path, paths):
        if not path.exists():
            raise EdgeAgentError(f"{path} does not exist")
        if path.is_dir():
            images = []
            for child in sorted(path.iterdir()):
                suffix = child.suffix.lower()
                if child.is_file() and suffix in IMAGE_SUFFIXES:
                    images.append(child)
                elif child.is_file() and suffix in VIDEO_SUFFIXES:
                    sources.append(Source(str(child), video=child))
                else:
                    warn(f"skipping {child}: not an image or a video")
            if images:
                sources.append(Source(str(path), images=images, lenient=True))
            elif not any(s.video and s.video.parent == path for s in sources):
                warn(f"{path} holds no images or videos")
        elif path.suffix.lower() in IMAGE_SUFFIXES:
            loose_images.append(path)
        else:
            sources.append(Source(str(path), video=path))
    if loose_images:
        name = str(loose_images[0]) if len(loose_images) == 1 else f"{len(loose_images)} images"
        sources.append(Source(name, images=loose_images))
    return sources


def image_frames(source, warn):
    """Still images as ``(file name, frame)``, in the order taken (file modification time, then name)."""
    stamped = sorted((path.stat().st_mtime, path.name, path) for path in source.images)
    for index, (mtime, _, path) in enumerate(stamped):
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:
            if not source.lenient:
                raise EdgeAgentError(f"{path} cannot be read as an image")
            warn(f"skipping {path}: cannot be read as an image")
            continue
        yield str(path), Frame(image, mtime, index)


@dataclass
class Summary:
    sources: int = 0
    frames: int = 0
    windows: list = field(default_factory=list)
    detect_s: float = 0.0
    classify_s: float = 0.0
    wall_s: float = 0.0


class Analysis:
    """Runs frames of each source through the pipeline and a fresh tally; hands out windows as payloads."""

    def __init__(self, pipeline, config, warn, progress=False):
        self.pipeline = pipeline
        self.config = config
        self.warn = warn
        self.progress = progress
        self.model_tag = pipeline.classifier.tag
        self.seq = 0

    def frames(self, source, sample_fps, start):
        if source.images:
            return image_frames(source, self.warn), (len(source.images), None)
        video = OpenCVSource(str(source.video), realtime=False, start_time=start)
        try:
            video.open()
        except CaptureError as exc:
            if not source.lenient:
                raise
            self.warn(f"skipping {source.name}: {exc}")
            return iter(()), (None, None)
        return _closing(video, ((source.name, frame) for frame in sample_frames(video, sample_fps))), \
            (video.frame_count, video.fps)

    def run(self, sources, sample_fps, start=None, on_frame=None, on_window=None):
        """Analyse every source; ``on_frame(name, frame_number, t, result)`` and ``on_window(payload)``.

        ``name`` is the video's, or each image's own file, so a face can be traced to its picture.
        """
        summary = Summary()
        device = self.config.device
        began = time.perf_counter()
        for source in sources:
            summary.sources += 1
            tally = WindowTally(self.config.window.length_s, self.config.window.min_group)
            frames, (total, fps) = self.frames(source, sample_fps, start)
            first_t = None
            # A new source may be another camera: whatever the search learned of the last one is dropped.
            self.pipeline.restart_search()
            for number, (name, frame) in enumerate(self._progress(frames, source, total, fps, sample_fps)):
                result = self.pipeline.process(frame)
                summary.frames += 1
                summary.detect_s += result.detect_s
                summary.classify_s += result.classify_s
                first_t = frame.t if first_t is None else first_t
                if on_frame:
                    on_frame(name, number, frame.t - first_t, result)
                closed = tally.add(frame.t, result.labels)
                if closed:
                    self._emit(closed, device, summary, on_window)
            closed = tally.flush()
            if closed:
                self._emit(closed, device, summary, on_window)
        summary.wall_s = time.perf_counter() - began
        return summary

    def _emit(self, window, device, summary, on_window):
        payload = window.payload(device=device.id, site=device.site, room=device.room, seq=self.seq,
                                 model=self.model_tag)
        self.seq += 1
        summary.windows.append(payload)
        if on_window:
            on_window(payload)

    def _progress(self, frames, source, total, fps, sample_fps):
        if not self.progress or not source.video or not total:
            return frames
        from tqdm import tqdm

        # The bar counts the frames analysed; with sampling that is fewer than the video holds.
        expected = total if not sample_fps or not fps else max(1, round(total / fps * sample_fps))
        return tqdm(frames, total=expected, desc=os.path.basename(source.name), unit="frame",
                    leave=False, disable=None)


def _closing(source, frames):
    with source:
        yield from frames


_COLUMNS = ("window (UTC)", "frames", "faces", "median") + tuple(EMOTIONS) + ("interest",)


def format_header():
    return "  ".join(f"{name:>{_width(name)}}" for name in _COLUMNS)


def _width(name):
    return 19 if name == "window (UTC)" else max(len(name), 6)


def format_window(payload, interested):
    start = format_utc(payload.start_epoch)[:19].replace("T", " ")
    head = [start, payload.frames, payload.faces, payload.faces_per_frame_median]
    cells = [f"{value:>{_width(name)}}" for name, value in zip(_COLUMNS, head, strict=False)]
    if payload.suppressed:
        return "  ".join(cells) + "  suppressed: fewer than the minimum group of faces per frame"
    counts = payload.counts.as_dict()
    ratio = interest_ratio(counts, interested)
    cells += [f"{counts[label]:>{_width(label)}}" for label in EMOTIONS]
    cells.append(f"{'-' if ratio is None else f'{ratio:.0%}':>{_width('interest')}}")
    return "  ".join(cells)


def format_summary(summary, interested):
    windows = summary.windows
    suppressed = sum(p.suppressed for p in windows)
    totals = total_counts(windows)
    reported = sum(totals.values())
    faces = sum(p.faces for p in windows)
    lines = [f"session: {summary.sources} source(s), {summary.frames} frames, {faces} faces, "
             f"{len(windows)} window(s), {suppressed} suppressed"]
    if reported:
        shares = sorted(totals.items(), key=lambda item: -item[1])
        lines.append("emotions: " + ", ".join(f"{label} {count / reported:.1%}" for label, count in shares if count))
        lines.append(f"interest ({', '.join(interested)}): {interest_ratio(totals, interested):.1%} "
                     f"of {reported} reported faces")
    else:
        lines.append("emotions: none reported (no faces, or every window suppressed)")
    if summary.frames:
        per_frame = summary.wall_s / summary.frames * 1000
        lines.append(f"speed: {per_frame:.1f} ms per frame (detect {summary.detect_s / summary.frames * 1000:.1f}, "
                     f"classify {summary.classify_s / summary.frames * 1000:.1f}), {summary.wall_s:.1f} s in all")
    return "\n".join(lines)
