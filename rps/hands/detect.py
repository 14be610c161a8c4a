"""Hands found in RGB images by MediaPipe's palm detector and 21-point landmark model.

The two ``.tflite`` models (:mod:`rps.hands.models`) run on LiteRT (``ai-edge-litert``).
The decoding around them is written here, after MediaPipe's own graphs
(mediapipe/modules/palm_detection and hand_landmark): SSD anchors, weighted non-max
suppression, and the rotated square crop the landmark model expects.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np

from rps.hands import landmarks, models
from rps.startup import cores

log = logging.getLogger(__name__)

PALM_SIZE = 192  # the palm detector's input side
LANDMARK_SIZE = 224  # the landmark model's input side
# MediaPipe Hands' min_detection_confidence as the reference pipeline runs it (its default
# is 0.5): weak palms are kept, and the landmark model's presence score judges them.
MIN_PALM_SCORE = 0.3
TILE = 2 / 3  # a tile's side, as a share of the frame's shorter side
SAME_HAND_IOU = 0.5
NMS_IOU = 0.3
MIN_HAND_SCORE = 0.5
# The hand crop around a palm: 2.6 times the palm box, moved half a box toward the fingers.
ROI_SCALE, ROI_SHIFT = 2.6, -0.5
PALM_WRIST, PALM_MIDDLE_BASE = 0, 2  # the palm keypoints that give the hand's direction
# Following a hand as MediaPipe's hand_landmark_landmarks_to_roi graph does: the upright box
# of the steadier landmarks (wrist, thumb but its tip, each finger's base and first joint),
# twice its longer side, moved a tenth of its height toward the fingers.
STEADY_POINTS = (0, 1, 2, 3, 5, 6, 9, 10, 13, 14, 17, 18)
FOLLOW_SCALE, FOLLOW_SHIFT = 2.0, -0.1
RETRY_BORDER = 0.5
RETRY_GAMMA = 0.5
_BRIGHTER = np.round(255 * (np.arange(256) / 255) ** RETRY_GAMMA).astype(np.uint8)
FINDER_VERSION = 3  # bump when what the finder returns changes: it keys the landmark cache
_PROGRESS_SECONDS = 5.0
_PER_WORKER = 16  # images below which a second finder costs more than it saves


def _interpreter(path: Path, threads: int):
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path), num_threads=threads)
    interpreter.allocate_tensors()
    return interpreter


def anchors() -> np.ndarray:
    """The palm detector's 2016 SSD anchor centres (x, y), normalised: two per cell of its
    24x24 map (stride 8), six per cell of its 12x12 map (three layers of stride 16)."""
    centres = []
    for cells, per_cell in ((PALM_SIZE // 8, 2), (PALM_SIZE // 16, 6)):
        grid = (np.arange(cells) + 0.5) / cells
        y, x = np.meshgrid(grid, grid, indexing="ij")
        centres.append(np.repeat(np.stack([x.ravel(), y.ravel()], 1), per_cell, axis=0))
    return np.concatenate(centres).astype(np.float32)


@dataclass(frozen=True)
class Palm:
    """One palm, in pixels of the image: its box, score and seven keypoints."""

    box: np.ndarray  # (x_min, y_min, x_max, y_max)
    score: float
    keypoints: np.ndarray  # (7, 2)


@dataclass(frozen=True)
class Hand:
    """One hand: its 21 landmarks in pixels of the image (x, y; z at the scale of x), the
    rotated square it was read from (centre, side, angle in radians) and its scores."""

    landmarks: np.ndarray  # (21, 3)
    centre: tuple[float, float]
    side: float
    angle: float
    palm_score: float
    score: float

    def moved(self, dx: float, dy: float) -> Hand:
        return replace(
            self,
            landmarks=self.landmarks + np.array([dx, dy, 0.0]),
            centre=(self.centre[0] + dx, self.centre[1] + dy),
        )


def _upright(wrist: np.ndarray, middle: np.ndarray) -> float:
    """The angle, in (-pi, pi], that turns the wrist-to-middle-finger direction to point up."""
    angle = math.pi / 2 - math.atan2(-(middle[1] - wrist[1]), middle[0] - wrist[0])
    return (angle + math.pi) % (2 * math.pi) - math.pi


def _rotation(angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    return np.array([[c, -s], [s, c]])


def _iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    x0 = np.maximum(box[0], boxes[:, 0])
    y0 = np.maximum(box[1], boxes[:, 1])
    x1 = np.minimum(box[2], boxes[:, 2])
    y1 = np.minimum(box[3], boxes[:, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return inter / np.maximum(area + areas - inter, 1e-9)


def weighted_nms(
    boxes: np.ndarray,
    keypoints: np.ndarray,
    scores: np.ndarray,
) -> list[tuple[np.ndarray, np.ndarray, float]]:
    """MediaPipe's weighted non-max suppression: each kept detection is the score-weighted
    mean of those that overlap it by more than ``NMS_IOU``, with the best one's score."""
    order = np.argsort(-scores)
    boxes, keypoints, scores = boxes[order], keypoints[order], scores[order]
    kept, left = [], np.ones(len(scores), bool)
    for i in range(len(scores)):
        if not left[i]:
            continue
        overlap = left & (_iou(boxes[i], boxes) > NMS_IOU)
        overlap[i] = True
        weights = scores[overlap][:, None]
        kept.append(
            (
                (boxes[overlap] * weights).sum(0) / weights.sum(),
                (keypoints[overlap] * weights[:, :, None]).sum(0) / weights.sum(),
                float(scores[i]),
            )
        )
        left &= ~overlap
    return kept


class HandFinder:
    """Palms, then the landmarks of the hand around each, for RGB images of any size."""

    def __init__(
        self,
        files: dict[str, Path] | None = None,
        min_palm_score: float = MIN_PALM_SCORE,
        tiled: bool = True,
        threads: int | None = None,
    ) -> None:
        """Two threads per model make live.py's frames faster than one (benchmarks/live.py);
        more cores are not assumed. A list of images is shared among finders of one thread
        each instead (:func:`every_hand`)."""
        self.files = files or models.model_files()
        self.min_palm_score = min_palm_score
        self.tiled = tiled
        threads = threads or min(cores(), 2)
        self.palm = _interpreter(self.files["palm_detection"], threads)
        self.landmark = _interpreter(self.files["hand_landmark"], threads)
        self.anchors = anchors()

    def single_threaded(self) -> HandFinder:
        return HandFinder(self.files, self.min_palm_score, self.tiled, threads=1)

    @staticmethod
    def _run(interpreter, tensor: np.ndarray) -> list[np.ndarray]:
        interpreter.set_tensor(interpreter.get_input_details()[0]["index"], tensor[None])
        interpreter.invoke()
        outputs = sorted(interpreter.get_output_details(), key=lambda d: d["name"])
        return [interpreter.get_tensor(d["index"])[0] for d in outputs]

    def palms(self, rgb: np.ndarray) -> list[Palm]:
        """Every palm scored ``min_palm_score`` or more, best first, after suppression.

        The image is letterboxed into the detector's square (black bars), as MediaPipe does,
        so a wide frame keeps its proportions."""
        height, width = rgb.shape[:2]
        side = max(height, width)
        scale = PALM_SIZE / side
        resized = cv2.resize(
            rgb,
            (max(1, round(width * scale)), max(1, round(height * scale))),
            interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR,
        )
        square = np.zeros((PALM_SIZE, PALM_SIZE, 3), np.float32)
        top, left = (PALM_SIZE - resized.shape[0]) // 2, (PALM_SIZE - resized.shape[1]) // 2
        square[top : top + resized.shape[0], left : left + resized.shape[1]] = resized / 255.0
        raw, logits = self._run(self.palm, square)
        scores = 1 / (1 + np.exp(-np.clip(logits[:, 0], -100, 100)))
        hits = scores >= self.min_palm_score
        if not hits.any():
            return []
        raw, centres, scores = raw[hits], self.anchors[hits], scores[hits]
        xy = raw[:, :2] / PALM_SIZE + centres
        wh = raw[:, 2:4] / PALM_SIZE
        boxes = np.concatenate([xy - wh / 2, xy + wh / 2], axis=1)
        keypoints = raw[:, 4:].reshape(-1, 7, 2) / PALM_SIZE + centres[:, None, :]
        # From the letterboxed square back to the image's pixels.
        offset = np.array([left, top]) / PALM_SIZE
        to_pixels = PALM_SIZE / scale
        return [
            Palm(
                box=((b.reshape(2, 2) - offset) * to_pixels).ravel(),
                score=s,
                keypoints=(k - offset) * to_pixels,
            )
            for b, k, s in weighted_nms(boxes, keypoints, scores)
        ]

    def hand(self, rgb: np.ndarray, palm: Palm) -> Hand | None:
        """The landmarks in the rotated square around ``palm``; None when the landmark model
        sees no hand there."""
        angle = _upright(palm.keypoints[PALM_WRIST], palm.keypoints[PALM_MIDDLE_BASE])
        x0, y0, x1, y1 = palm.box
        centre = np.array([(x0 + x1) / 2, (y0 + y1) / 2])
        centre = centre + _rotation(angle) @ np.array([0.0, ROI_SHIFT * (y1 - y0)])
        return self._read(rgb, centre, max(x1 - x0, y1 - y0) * ROI_SCALE, angle, palm.score)

    def follow(self, rgb: np.ndarray, hand: Hand) -> Hand | None:
        """``hand`` again in the next frame of a video, without the palm detector: the crop
        comes from its landmarks (see STEADY_POINTS); None when the hand is gone."""
        points = hand.landmarks[:, :2]
        knuckles = (points[landmarks.INDEX_BASE] + points[landmarks.RING_BASE]) / 2
        angle = _upright(points[landmarks.WRIST], (knuckles + points[landmarks.MIDDLE_BASE]) / 2)
        rotation = _rotation(angle)
        steady = points[list(STEADY_POINTS)]
        mean = steady.mean(axis=0)
        upright = (steady - mean) @ rotation  # in the hand's frame, fingers toward -y
        low, high = upright.min(axis=0), upright.max(axis=0)
        size = high - low
        centre = mean + rotation @ ((low + high) / 2 + [0.0, FOLLOW_SHIFT * size[1]])
        return self._read(rgb, centre, float(size.max()) * FOLLOW_SCALE, angle, hand.palm_score)

    def _read(
        self, rgb: np.ndarray, centre: np.ndarray, side: float, angle: float, palm_score: float
    ) -> Hand | None:
        # Output pixel (u, v) of the crop samples image point centre + R (u/S - 1/2) side.
        rotation = _rotation(angle)
        step = side / LANDMARK_SIZE
        matrix = np.hstack(
            [rotation * step, (centre - rotation @ np.array([side / 2, side / 2]))[:, None]]
        )
        crop = cv2.warpAffine(
            rgb,
            matrix,
            (LANDMARK_SIZE, LANDMARK_SIZE),
            flags=cv2.WARP_INVERSE_MAP | cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_REPLICATE,
        )
        outputs = self._run(self.landmark, crop.astype(np.float32) / 255.0)
        points, presence = outputs[0].reshape(21, 3), float(outputs[1][0])
        if presence < MIN_HAND_SCORE:
            return None
        xy = points[:, :2] @ (rotation * step).T + matrix[:, 2]
        z = points[:, 2:] * step
        return Hand(
            landmarks=np.hstack([xy, z]),
            centre=(float(centre[0]), float(centre[1])),
            side=float(side),
            angle=float(angle),
            palm_score=palm_score,
            score=presence,
        )

    def hands(self, rgb: np.ndarray, tiles: Sequence[int] | None = None) -> list[Hand]:
        """Every hand found, surest first: the landmark model's presence score ranks them,
        since it judges the crop the head reads, where the palm score judges one anchor.

        The palm detector sees the whole frame at its own 192 pixels, and, in a frame larger
        than that, overlapping tiles of it at a higher resolution (:meth:`tiles`): a small
        hand far from the camera, or a second hand, that the whole frame shows too coarsely.
        ``tiles`` names which of them to search (live.py spreads them over frames); None
        searches all. Where nothing is found, the frame is tried again inside a border of its
        own edge pixels, ``RETRY_BORDER`` of its longer side wide (a hand cut by the frame's
        edge, or filling it: on the training renders, every image the first try missed).
        Where that finds nothing either, both searches run again on the frame brightened by a
        gamma of ``RETRY_GAMMA``: a hand in shadow, in a dark room or against a window."""
        found = self._search(rgb, tiles) or self._bordered(rgb)
        if not found:
            # Served models pass 0-255 floats: the table needs 8 bits.
            brighter = cv2.LUT(np.clip(np.rint(rgb), 0, 255).astype(np.uint8), _BRIGHTER)
            found = self._search(brighter, tiles) or self._bordered(brighter)
        return found

    def _bordered(self, rgb: np.ndarray) -> list[Hand]:
        margin = round(RETRY_BORDER * max(rgb.shape[:2]))
        padded = cv2.copyMakeBorder(rgb, margin, margin, margin, margin, cv2.BORDER_REPLICATE)
        return [
            hand.moved(-margin, -margin) for hand in self._read_palms(padded, self.palms(padded))
        ]

    def _search(self, rgb: np.ndarray, tiles: Sequence[int] | None) -> list[Hand]:
        windows = self.tiles(*rgb.shape[:2])
        if tiles is not None:
            windows = [windows[i % len(windows)] for i in tiles] if windows else []
        palms = self.palms(rgb)
        for top, left, side in windows:
            offset = np.array([left, top], np.float64)
            palms += [
                replace(p, box=p.box + np.tile(offset, 2), keypoints=p.keypoints + offset)
                for p in self.palms(rgb[top : top + side, left : left + side])
            ]
        return self._read_palms(rgb, merged(palms) if windows else palms)

    def tiles(self, height: int, width: int) -> list[tuple[int, int, int]]:
        """The squares (top, left, side) the palm detector searches besides the whole frame:
        ``TILE`` of its shorter side each, overlapping by half a tile or more, so that a hand
        lies whole in one of them. None where a tile would be no larger than the detector's
        input: it would show the detector no detail that the whole frame does not."""
        side = round(TILE * min(height, width))
        if not self.tiled or side <= PALM_SIZE:
            return []

        def starts(length: int) -> list[int]:
            count = math.ceil((length - side) / (side / 2) - 1e-9) + 1
            return [round(i * (length - side) / max(count - 1, 1)) for i in range(count)]

        return [(top, left, side) for top in starts(height) for left in starts(width)]

    def _read_palms(self, rgb: np.ndarray, palms: list[Palm]) -> list[Hand]:
        found: list[Hand] = []
        for palm in palms:
            hand = self.hand(rgb, palm)
            if hand is not None and not any(same_hand(hand, other) for other in found):
                found.append(hand)
        return sorted(found, key=lambda hand: hand.score, reverse=True)


def merged(palms: list[Palm]) -> list[Palm]:
    """One palm for each seen in several overlapping views: weighted non-max suppression
    over all of them, in the image's pixels."""
    if not palms:
        return []
    kept = weighted_nms(
        np.array([p.box for p in palms]),
        np.array([p.keypoints for p in palms]),
        np.array([p.score for p in palms]),
    )
    return [Palm(box=box, score=score, keypoints=keypoints) for box, keypoints, score in kept]


def same_hand(a: Hand, b: Hand) -> bool:
    """Whether two readings are of one hand: their landmarks' boxes overlap by more than
    ``SAME_HAND_IOU`` (two palms, or two views, can lead to the same hand)."""
    box_a, box_b = (
        np.concatenate([h.landmarks[:, :2].min(0), h.landmarks[:, :2].max(0)]) for h in (a, b)
    )
    return float(_iou(box_a, box_b[None])[0]) > SAME_HAND_IOU


def every_hand(finder: HandFinder, images, workers: int | None = None) -> list[list[Hand]]:
    """The hands found in each image, surest first. A long list is cut into one run per
    core, each searched by a single-threaded finder of its own, which keeps the cores busier
    than one finder of two threads does (benchmarks/feedback.py). Logs its progress."""
    workers = min(workers or cores(), max(1, len(images) // _PER_WORKER))
    lock, started = threading.Lock(), time.perf_counter()
    done, last = [0], [started]

    def search(part_finder: HandFinder, part: Sequence) -> list[list[Hand]]:
        out = []
        for image in part:
            out.append(part_finder.hands(np.asarray(image)))
            with lock:
                done[0] += 1
                if time.perf_counter() - last[0] > _PROGRESS_SECONDS:
                    last[0] = time.perf_counter()
                    each = 1000 * (last[0] - started) / done[0]
                    log.info("%d/%d images, %.0f ms each", done[0], len(images), each)
        return out

    if workers == 1:
        return search(finder, images)
    bounds = np.linspace(0, len(images), workers + 1).round().astype(int)
    parts = [images[a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
    with ThreadPoolExecutor(workers) as pool:
        found = pool.map(lambda part: search(finder.single_threaded(), part), parts)
        return [hands for part in found for hands in part]


def first_landmarks(finder: HandFinder, images) -> np.ndarray:
    """(N, 21, 3) float32: the surest hand's landmarks in each image, NaN where none is
    found: one hand per image, as training reads them."""
    out = np.full((len(images), 21, 3), np.nan, np.float32)
    for i, found in enumerate(every_hand(finder, images)):
        if found:
            out[i] = found[0].landmarks
    return out
