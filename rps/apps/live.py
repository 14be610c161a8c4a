"""Live classification and dataset capture: frame -> ROI crop -> model -> label on the frame.

The loop takes a frame source, a view and sinks, so it runs the same on a camera with a
window as on a video file in CI. Only :class:`Window` needs a display.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import statistics
import sys
import time
from collections import deque
from collections.abc import Iterable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from itertools import chain
from pathlib import Path
from typing import Protocol, TextIO

import cv2
import numpy as np

from rps.config.apps import LiveConfig, LiveMode, RoiConfig, RoiFind
from rps.data.crop import centre_square, cut, hand_square
from rps.data.video import FolderSource, Frame, OutputError, SourceError, VideoSink, open_source
from rps.errors import UserError
from rps.hands.detect import Hand, HandFinder, same_hand
from rps.serve import logged_model
from rps.serve.predictor import Predictor, surety
from rps.serve.scores import NO_HAND

log = logging.getLogger(__name__)

UNCERTAIN = "uncertain"
TITLE = "rps live (q: quit)"
QUIT_KEYS = {ord("q"), 27}  # 27 is Esc
SAVE_KEY = ord("s")
RECORD_KEY = ord(" ")
# BGR colours
GREEN, AMBER, RED = (60, 200, 60), (0, 170, 255), (40, 40, 230)
GREY, WHITE, BLACK = (150, 150, 150), (255, 255, 255), (0, 0, 0)
FONT = cv2.FONT_HERSHEY_SIMPLEX
REDETECT_EVERY = 15  # frames: half a second at 30 FPS
# The landmark chains drawn: thumb, four fingers from the wrist, and the knuckles.
DRAWN_CHAINS = (
    (0, 1, 2, 3, 4),
    (0, 5, 6, 7, 8),
    (9, 10, 11, 12),
    (13, 14, 15, 16),
    (0, 17, 18, 19, 20),
    (5, 9, 13, 17),
)


class DisplayError(UserError):
    pass


# --- geometry, smoothing, decision ---------------------------------------------------------


@dataclass(frozen=True)
class Roi:
    x: int
    y: int
    size: int

    def crop(self, image: np.ndarray) -> np.ndarray:
        return image[self.y : self.y + self.size, self.x : self.x + self.size]

    def inside(self, shape: Sequence[int]) -> bool:
        return (
            self.x >= 0
            and self.y >= 0
            and self.x + self.size <= shape[1]
            and self.y + self.size <= shape[0]
        )


def wanted_roi(cfg: RoiConfig, shape: Sequence[int]) -> Roi:
    """The ROI as configured in a frame of ``shape``, centred where x or y is null."""
    height, width = shape[:2]
    x = (width - cfg.size) // 2 if cfg.x is None else cfg.x
    y = (height - cfg.size) // 2 if cfg.y is None else cfg.y
    return Roi(x, y, cfg.size)


def place_roi(cfg: RoiConfig, shape: Sequence[int]) -> Roi:
    """The configured ROI where it fits; else the frame's largest centred square, the crop
    policy training applies to every image (:mod:`rps.data.crop`). So a small frame, or a
    300x200 photo in an image folder, is cropped as training would crop it."""
    wanted = wanted_roi(cfg, shape)
    if wanted.inside(shape):
        return wanted
    top, left, side = centre_square(*shape[:2])
    return Roi(left, top, side)


class Smoother:
    """The mean of the last ``n`` probability vectors: one odd frame no longer flips the
    label, at the cost of ``n - 1`` frames of lag."""

    def __init__(self, n: int):
        self._recent: deque[np.ndarray] = deque(maxlen=n)

    def __call__(self, probabilities: np.ndarray) -> np.ndarray:
        self._recent.append(probabilities)
        return np.mean(self._recent, axis=0)


def decide(
    probabilities: np.ndarray, class_names: Sequence[str], threshold: float
) -> tuple[str, float]:
    """The most likely class and its probability; ``uncertain`` when that is below the
    threshold, rather than a confident-looking guess."""
    if np.isnan(probabilities).any():
        return NO_HAND, 0.0
    best = int(np.argmax(probabilities))
    probability = float(probabilities[best])
    return (class_names[best] if probability >= threshold else UNCERTAIN), probability


# --- drawing -------------------------------------------------------------------------------


def annotate(
    frame: np.ndarray,
    roi: Roi | None,
    lines: Sequence[str],
    colour: tuple[int, int, int],
    bars: Sequence[tuple[str, float]] = (),
    chosen: int | None = None,
    points: np.ndarray | None = None,
    others: Sequence[np.ndarray] = (),
) -> np.ndarray:
    """A copy of the frame with the box the model saw, the landmarks (frame pixels) of the
    hand it read in colour and of any other hand in grey, text lines at the top and one bar
    per class at the bottom. Pure, so the window shows exactly what the video records."""
    out = frame.copy()
    height, width = out.shape[:2]
    scale = min(max(height / 600, 0.4), 2.0)
    thick = max(1, round(2 * scale))
    step = round(32 * scale)
    if roi is not None:
        cv2.rectangle(
            out, (roi.x, roi.y), (roi.x + roi.size - 1, roi.y + roi.size - 1), colour, thick
        )
    drawn = [(hand, GREY) for hand in others] + ([] if points is None else [(points, colour)])
    for hand, dots in drawn:
        xy = np.round(hand).astype(np.int32)
        for finger in DRAWN_CHAINS:
            cv2.polylines(
                out, [xy[list(finger)]], False, WHITE if dots == colour else GREY, max(1, thick - 1)
            )
        for x, y in xy:
            cv2.circle(out, (int(x), int(y)), thick + 1, dots, -1)
    margin = round(8 * scale)
    for i, line in enumerate(lines):
        _text(
            out, line, (margin, margin + step * (i + 1)), scale, colour if i == 0 else WHITE, thick
        )
    bar_width = width // 3
    for i, (name, value) in enumerate(bars):
        top = height - margin - step * (len(bars) - i)
        cv2.rectangle(out, (margin, top + 2), (margin + bar_width, top + step - 4), GREY, 1)
        cv2.rectangle(
            out,
            (margin, top + 2),
            (margin + round(bar_width * value), top + step - 4),
            colour if i == chosen else GREY,
            -1,
        )
        _text(
            out,
            f"{name} {value:.0%}",
            (2 * margin + bar_width, top + step - margin),
            scale * 0.8,
            WHITE,
            max(1, thick - 1),
        )
    return out


def _text(
    image: np.ndarray,
    text: str,
    origin: tuple[int, int],
    scale: float,
    colour: tuple[int, int, int],
    thick: int,
) -> None:
    """Text on a dark box, legible on any background."""
    (w, h), base = cv2.getTextSize(text, FONT, scale, thick)
    x, y = origin
    cv2.rectangle(image, (x - 3, y - h - 3), (x + w + 3, y + base + 1), BLACK, -1)
    cv2.putText(image, text, origin, FONT, scale, colour, thick, cv2.LINE_AA)


# --- sinks and views -----------------------------------------------------------------------


class PredictionLog:
    """One row per frame, written as it comes (line-buffered), so Ctrl-C or a crash keeps
    every row so far. CSV or JSON Lines, by suffix."""

    SUFFIXES = (".csv", ".jsonl")

    def __init__(self, path: Path):
        if path.suffix.lower() not in self.SUFFIXES:
            raise OutputError(
                f"predictions={path}: the predictions file must be a "
                f"{' or '.join(self.SUFFIXES)} file."
            )
        self.path = path
        self.rows = 0
        self._file: TextIO | None = None
        self._csv: csv.DictWriter | None = None

    def write(self, row: dict) -> None:
        if self._file is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = self.path.open("w", newline="", buffering=1)
            if self.path.suffix.lower() == ".csv":
                self._csv = csv.DictWriter(self._file, fieldnames=list(row))
                self._csv.writeheader()
        if self._csv is not None:
            self._csv.writerow(row)
        else:
            self._file.write(json.dumps(row) + "\n")
        self.rows += 1

    def close(self) -> None:
        if self._file is not None:
            self._file.close()


class CropWriter:
    """Numbered PNG crops, named ``<prefix>_<session>_<n>.png`` so that a second session
    adds to a folder instead of overwriting the first."""

    def __init__(self, folder: Path, prefix: str):
        self.folder = folder
        self.prefix = prefix
        self.count = 0
        self._session = time.strftime("%Y%m%d-%H%M%S")

    def save(self, crop: np.ndarray) -> Path:
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / f"{self.prefix}_{self._session}_{self.count:05d}.png"
        if not cv2.imwrite(str(path), crop):
            raise OutputError(f"cannot write {path}: check that the folder is writable.")
        self.count += 1
        return path


class Window:
    """The on-screen view; ``show`` returns the key pressed, if any.

    OpenCV's Qt backend aborts the whole process when there is no display, so that case is
    caught first and explained.
    """

    def __init__(self, title: str = TITLE):
        if sys.platform.startswith("linux") and not (
            os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")
        ):
            raise DisplayError(
                "there is no display to open a window on (DISPLAY is not set): this is a "
                "headless machine, a container or an SSH session without X forwarding. Run "
                "with headless=true to write an annotated video and a predictions file "
                "instead, or connect with `ssh -X`."
            )
        self.title = title
        cv2.namedWindow(title, cv2.WINDOW_AUTOSIZE)

    def show(self, image: np.ndarray) -> int | None:
        cv2.imshow(self.title, image)
        key = cv2.waitKey(1)
        if cv2.getWindowProperty(self.title, cv2.WND_PROP_VISIBLE) < 1:  # closed by mouse
            return ord("q")
        return None if key < 0 else key & 0xFF

    def close(self) -> None:
        cv2.destroyAllWindows()


class NoWindow:
    """Headless: nothing shown, no key ever pressed."""

    def show(self, image: np.ndarray) -> int | None:
        return None

    def close(self) -> None:
        pass


# --- timing --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Summary:
    frames: int
    seconds: float
    fps: float
    median_model_ms: float | None
    median_frame_ms: float | None


@dataclass
class Meter:
    """Per-frame timings: a rolling rate for the screen, medians for the report at exit."""

    model_ms: list[float] = field(default_factory=list)
    frame_s: list[float] = field(default_factory=list)
    recent: deque = field(default_factory=lambda: deque(maxlen=30))
    started: float = field(default_factory=time.perf_counter)
    last: float = 0.0

    def start(self) -> None:
        self.started = self.last = time.perf_counter()

    def tick(self) -> None:
        """At the end of each frame: the time since the previous one, reading included."""
        now = time.perf_counter()
        self.frame_s.append(now - self.last)
        self.recent.append(now - self.last)
        self.last = now

    @property
    def fps(self) -> float:
        return len(self.recent) / sum(self.recent) if self.recent else 0.0

    def summary(self) -> Summary:
        seconds = self.last - self.started if self.frame_s else 0.0
        return Summary(
            frames=len(self.frame_s),
            seconds=seconds,
            fps=len(self.frame_s) / seconds if seconds > 0 else 0.0,
            median_model_ms=statistics.median(self.model_ms) if self.model_ms else None,
            median_frame_ms=1000 * statistics.median(self.frame_s) if self.frame_s else None,
        )


# --- the two modes -------------------------------------------------------------------------


class Mode(Protocol):
    @property
    def done(self) -> bool: ...

    def step(self, frame: Frame) -> np.ndarray: ...

    def on_key(self, key: int | None, frame: Frame) -> None: ...


class Classifying:
    """Each frame: find the hand or take the fixed square, predict, smooth, decide, log a
    row; ``s`` saves the square the model saw."""

    done = False

    def __init__(
        self,
        model: Predictor,
        conf: LiveConfig,
        rows: PredictionLog,
        crops: CropWriter,
        meter: Meter,
        video: bool = True,
    ):
        self.predict = model.frame(conf.roi.size)
        self.hands = Hands(model.finder, follow=video) if model.finder else None
        self.class_names = model.class_names
        self.roi = conf.roi
        self.threshold = conf.threshold
        self.smoother = Smoother(conf.smooth)
        self.rows = rows
        self.crops = crops
        self.meter = meter
        self.box: Roi | None = None

    def step(self, frame: Frame) -> np.ndarray:
        fixed = None if self.roi.find == RoiFind.hand else place_roi(self.roi, frame.image.shape)
        seen = frame.image if fixed is None else fixed.crop(frame.image)
        rgb = cv2.cvtColor(seen, cv2.COLOR_BGR2RGB)
        started = time.perf_counter()
        found = self.hands(rgb) if self.hands else []
        # Each hand read; the surest reading is the frame's (rps.serve.predictor.surety).
        readings = [(self.predict(rgb, hand), hand) for hand in found]
        raw, read = (
            max(readings, key=lambda r: surety(r[1].score, r[0]))
            if readings
            else (self.predict(rgb, None), None)
        )
        ms = 1000 * (time.perf_counter() - started)
        self.meter.model_ms.append(ms)
        probabilities = self.smoother(raw)
        label, probability = decide(probabilities, self.class_names, self.threshold)
        self.rows.write(
            {
                "frame": frame.index,
                "file": frame.name,
                "class": label,
                "probability": round(probability, 6),
                "latency_ms": round(ms, 3),
                **({"hands": len(found)} if self.hands else {}),
                **{
                    f"p_{name}": round(float(p), 6)
                    for name, p in zip(self.class_names, probabilities, strict=True)
                },
            }
        )
        offset = np.zeros(2) if fixed is None else np.array([fixed.x, fixed.y])
        points = None if read is None else read.landmarks[:, :2] + offset
        others = [hand.landmarks[:, :2] + offset for hand in found if hand is not read]
        self.box = fixed
        if fixed is None and points is not None:
            top, left, side = hand_square(points)
            self.box = Roi(left, top, side)
        shown = np.nan_to_num(probabilities)
        lines = [
            label if label == NO_HAND else f"{label} {probability:.0%}",
            f"{self.meter.fps:.1f} FPS  {ms:.0f} ms",
        ]
        if len(found) > 1:
            lines.append(f"{len(found)} hands: reading the boxed one, the surest")
        return annotate(
            frame.image,
            self.box,
            lines,
            GREEN if label in self.class_names else AMBER,
            list(zip(self.class_names, shown.tolist(), strict=True)),
            int(np.argmax(shown)) if label != NO_HAND else None,
            points,
            others,
        )

    def on_key(self, key: int | None, frame: Frame) -> None:
        if key != SAVE_KEY:
            return
        if self.box is None:
            log.info("no hand in this frame: nothing saved")
            return
        path = self.crops.save(cut(frame.image, self.box.y, self.box.x, self.box.size))
        log.info("saved %s", path)


class Hands:
    """The hands in each frame. In a video every hand found is followed from frame to frame
    by its landmarks alone, and the palm detector runs only when one is lost, or every
    ``REDETECT_EVERY`` frames to see new hands: the detector is most of a frame's
    cost. Each such search takes the whole frame and one of its tiles (rps.hands.detect), the next
    in turn, so a small hand far away is found within as many searches as there are tiles,
    at about the cost of one more palm pass each. In a folder of photos every image is
    searched afresh and whole, as evaluate.py searches it."""

    def __init__(self, finder: HandFinder, follow: bool):
        self.finder = finder
        self.follow = follow
        self.found: list[Hand] = []
        self.since_detection = 0
        self.turn = 0

    def __call__(self, rgb: np.ndarray) -> list[Hand]:
        if not self.follow:
            return self.finder.hands(rgb)
        self.since_detection += 1
        kept: list[Hand] = []
        for hand in self.found:  # two followed hands that meet are one
            followed = self.finder.follow(rgb, hand)
            if followed is not None and not any(same_hand(followed, k) for k in kept):
                kept.append(followed)
        if kept and len(kept) == len(self.found) and self.since_detection < REDETECT_EVERY:
            self.found = kept
            return kept
        fresh = self.finder.hands(rgb, tiles=[self.turn])
        self.turn, self.since_detection = self.turn + 1, 0
        new = [hand for hand in fresh if not any(same_hand(hand, old) for old in kept)]
        self.found = sorted(kept + new, key=lambda hand: hand.score, reverse=True)
        return self.found


class Capturing:
    """Keeps one ROI crop every ``capture.every`` frames while recording; space toggles.

    With a window it starts paused, so nothing is saved before the hand is in place;
    headless, nobody can press a key, so it records from the first frame.
    """

    def __init__(self, conf: LiveConfig, crops: CropWriter, meter: Meter, recording: bool):
        self.roi = conf.roi
        self.every = conf.capture.every
        self.limit = conf.capture.limit
        self.label = conf.label
        self.crops = crops
        self.meter = meter
        self.recording = recording
        self._seen = 0

    @property
    def done(self) -> bool:
        return self.limit is not None and self.crops.count >= self.limit

    def step(self, frame: Frame) -> np.ndarray:
        roi = place_roi(self.roi, frame.image.shape)
        if self.recording:
            if self._seen % self.every == 0:
                self.crops.save(roi.crop(frame.image))
            self._seen += 1
        limit = f"/{self.limit}" if self.limit else ""
        lines = [
            f"{self.label}: {self.crops.count}{limit} saved",
            "recording (space: pause)" if self.recording else "paused (space: record)",
            f"{self.meter.fps:.1f} FPS",
        ]
        return annotate(frame.image, roi, lines, RED if self.recording else GREY)

    def on_key(self, key: int | None, frame: Frame) -> None:
        if key == RECORD_KEY:
            self.recording = not self.recording
            self._seen = 0  # a resumed recording keeps its first frame


# --- the loop and the job ------------------------------------------------------------------


def loop(
    frames: Iterable[Frame],
    mode: Mode,
    view: Window | NoWindow,
    video: VideoSink | None,
    meter: Meter,
) -> None:
    """Until the stream ends, q or Esc, Ctrl-C, or the mode is done. Each frame is written
    as it is processed, so however the loop ends, the outputs hold every processed frame."""
    meter.start()
    try:
        for frame in frames:
            shown = mode.step(frame)
            if video is not None:
                video.write(shown)
            key = view.show(shown)
            meter.tick()
            if key in QUIT_KEYS or mode.done:
                break
            mode.on_key(key, frame)
    except KeyboardInterrupt:
        log.info("interrupted: ending with the %d frames processed", len(meter.frame_s))


def run(conf: LiveConfig, output_dir: Path, root: Path) -> Summary:
    """Check the model, then the source and its first frame, then the display, so each
    mistake is reported as itself; then loop. Sources and sinks close however it ends."""
    with ExitStack() as stack:
        model = None
        if conf.mode == LiveMode.classify:
            model = logged_model.chosen(conf, conf.tracking, root)
            if conf.roi.find == RoiFind.hand:
                model = model.finding_hands()
        source = open_source(conf.source)
        stack.callback(source.close)
        frames = iter(source)
        first = next(frames, None)
        if first is None:
            raise SourceError(
                f"{source.what} gave no frames. A camera may be in use by another program; a "
                "video may be empty or in a codec this OpenCV build cannot decode (convert it "
                "to .mp4); an image folder may hold only unreadable files."
            )
        view = NoWindow() if conf.headless else Window()
        stack.callback(view.close)
        if conf.mode == LiveMode.capture or conf.roi.find == RoiFind.fixed:
            _warn_if_roi_does_not_fit(conf.roi, first.image.shape)
        video = None
        if conf.output or conf.headless:
            video = VideoSink(_path(conf.output, output_dir / "annotated.mp4"), source.fps)
            stack.callback(video.close)
        meter = Meter()
        if model is None:
            label = conf.label or ""  # LiveConfig refuses capture without a label
            folder = conf.data.folder / conf.capture.split.value / label
            mode: Mode = Capturing(conf, CropWriter(folder, label), meter, recording=conf.headless)
        else:
            rows = PredictionLog(_path(conf.predictions, output_dir / "predictions.csv"))
            stack.callback(rows.close)
            mode = Classifying(
                model,
                conf,
                rows,
                CropWriter(output_dir / "crops", "crop"),
                meter,
                video=not isinstance(source, FolderSource),
            )
        loop(chain([first], frames), mode, view, video, meter)
    summary = meter.summary()
    _report(summary, source.what, conf, mode, video)
    return summary


def _warn_if_roi_does_not_fit(cfg: RoiConfig, shape: Sequence[int]) -> None:
    roi, wanted = place_roi(cfg, shape), wanted_roi(cfg, shape)
    if roi != wanted:
        where = "centred" if cfg.x is None and cfg.y is None else f"at x={wanted.x}, y={wanted.y}"
        log.warning(
            "the region of interest (roi.size=%d, %s) does not fit in the %dx%d frame: "
            "using the frame's largest centred square (%d pixels), as training crops every "
            "image, for each frame it does not fit. To choose the square yourself, make it "
            "lie inside the frame (roi.size=%d or less).",
            cfg.size,
            where,
            shape[1],
            shape[0],
            roi.size,
            roi.size,
        )


def _path(given: str | None, default: Path) -> Path:
    """A path the user gave is relative to the working directory, as typed."""
    return Path(given).expanduser() if given else default


def _report(
    summary: Summary, what: str, conf: LiveConfig, mode: Mode, video: VideoSink | None
) -> None:
    timing = (
        f"{summary.frames} frames from {what} in {summary.seconds:.1f} s: "
        f"{summary.fps:.1f} FPS, median frame {summary.median_frame_ms or 0:.1f} ms"
    )
    if summary.median_model_ms is not None:
        timing += f", median model latency {summary.median_model_ms:.1f} ms"
    log.info("%s", timing)
    if video is not None:
        log.info("annotated video: %s", video.path)
    if isinstance(mode, Classifying):
        log.info("predictions: %s", mode.rows.path)
        if mode.crops.count:
            log.info("%d saved crops in %s", mode.crops.count, mode.crops.folder)
    elif isinstance(mode, Capturing):
        total = sum(1 for p in mode.crops.folder.glob("*") if p.is_file())
        log.info(
            "saved %d crops of %r in %s (%d images there now). Train on them with "
            "`python run.py data=folder data.root=%s`.",
            mode.crops.count,
            conf.label,
            mode.crops.folder,
            total,
            conf.data.root,
        )
