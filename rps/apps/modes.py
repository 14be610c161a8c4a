"""live.py's two modes, one frame at a time: classifying (find or place the square,
predict, smooth, decide) and capturing a dataset."""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Sequence
from typing import Protocol

import cv2
import numpy as np

from rps.apps.screen import (
    AMBER,
    GREEN,
    GREY,
    RED,
    CropWriter,
    Meter,
    PredictionLog,
    Roi,
    annotate,
    place_roi,
)
from rps.config.apps import LiveConfig, RoiFind
from rps.data.crop import cut, hand_square
from rps.data.video import Frame
from rps.hands.detect import Hand, HandFinder, same_hand
from rps.serve.predictor import Predictor, surety
from rps.serve.scores import NO_HAND

log = logging.getLogger(__name__)


UNCERTAIN = "uncertain"


SAVE_KEY = ord("s")


RECORD_KEY = ord(" ")


REDETECT_EVERY = 15  # frames: half a second at 30 FPS


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
