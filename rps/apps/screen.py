"""What live.py shows and writes: the region of interest, the annotated frame, the window,
the predictions file, saved crops and the frame timings. Only :class:`Window` needs a
display."""

from __future__ import annotations

import csv
import json
import os
import statistics
import sys
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

import cv2
import numpy as np

from rps.config.apps import RoiConfig
from rps.data.crop import centre_square
from rps.data.video import OutputError
from rps.errors import UserError

TITLE = "rps live (q: quit)"


# BGR colours
GREEN, AMBER, RED = (60, 200, 60), (0, 170, 255), (40, 40, 230)


GREY, WHITE, BLACK = (150, 150, 150), (255, 255, 255), (0, 0, 0)


FONT = cv2.FONT_HERSHEY_SIMPLEX


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
