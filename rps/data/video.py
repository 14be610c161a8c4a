"""Frames in and out: cameras, video files and image folders as one stream of BGR frames,
and annotated frames written back as a video.

Frames stay in OpenCV's BGR order here; they become RGB only at the model's door.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from rps.errors import UserError

log = logging.getLogger(__name__)

# OpenCV's log (a camera that is not there) and FFmpeg's (a truncated file) would bury the
# one paragraph that says what to do; failures still surface as return values, checked here.
# FFmpeg reads its level when first used.
cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_FATAL)
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # AV_LOG_QUIET

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".gif", ".bmp", ".webp", ".tif", ".tiff"}
# Codecs this OpenCV build (FFmpeg) both writes and reads back, by file suffix.
FOURCC = {".mp4": "mp4v", ".avi": "MJPG"}
# An image folder has no frame rate: slow enough to read each label in the video.
FOLDER_FPS = 5.0
# What a camera that does not report its rate most likely runs at.
CAMERA_FPS = 30.0
# A camera may miss a frame (USB hiccup, exposure change); this many misses in a row mean it
# is gone.
MAX_MISSED = 30


class SourceError(UserError):
    pass


class CameraError(SourceError):
    pass


class OutputError(UserError):
    pass


@dataclass(frozen=True)
class Frame:
    index: int
    image: np.ndarray  # HxWx3 uint8 BGR
    name: str = ""  # the file, for image folders


class CaptureSource:
    """A camera or a video file, through ``cv2.VideoCapture``.

    A stream that breaks off ends the iteration: the frames before it are kept, and the log
    says how far it got.
    """

    def __init__(self, capture: cv2.VideoCapture, what: str, live: bool):
        self._capture = capture
        self.what = what
        self.live = live
        fps = capture.get(cv2.CAP_PROP_FPS)
        self.fps = fps if 0 < fps < 1000 else CAMERA_FPS
        count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
        self._announced = count if count > 0 and not live else None

    def __iter__(self) -> Iterator[Frame]:
        index = missed = 0
        while missed < (MAX_MISSED if self.live else 1):
            try:
                ok, image = self._capture.read()
            except cv2.error:  # a corrupt packet can raise rather than return False
                ok, image = False, None
            if ok and image is not None:
                yield Frame(index, image)
                index, missed = index + 1, 0
            else:
                missed += 1
        if self.live:
            log.warning(
                "%s stopped sending frames after %d frames; ending with what was processed.",
                self.what,
                index,
            )
        elif self._announced and index < self._announced:
            log.warning(
                "%s ended after %d of the %d frames it announces: the file may be "
                "truncated. Ending with the %d frames processed.",
                self.what,
                index,
                self._announced,
                index,
            )

    def close(self) -> None:
        self._capture.release()


class FolderSource:
    """Every image under a folder, subfolders included, in name order; one image file too.

    Decoded as training decodes them (EXIF rotation, transparency on white), so a test
    folder gives the model the same pixels training did.
    """

    live = False
    fps = FOLDER_FPS

    def __init__(self, files: list[Path], root: Path):
        self._files = files
        self._root = root
        self.what = str(root)

    def __iter__(self) -> Iterator[Frame]:
        from rps.data.images import BadImage, read_rgb  # imports TensorFlow: only when needed

        index = 0
        for path in self._files:
            try:
                rgb = read_rgb(path)
            except BadImage as err:
                log.warning("skipping %s", err)
                continue
            name = path.relative_to(self._root).as_posix() if path != self._root else path.name
            yield Frame(index, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), name)
            index += 1

    def close(self) -> None:
        pass


Source = CaptureSource | FolderSource


def open_source(spec: str) -> Source:
    """``spec`` is a camera number, a video file, an image folder or one image file."""
    spec = spec.strip()
    if re.fullmatch(r"\d+", spec):
        return _camera(int(spec))
    path = Path(spec).expanduser()
    if path.is_dir():
        files = sorted(
            p
            for p in path.rglob("*")
            if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file() and not p.name.startswith(".")
        )
        if not files:
            raise SourceError(
                f"source={spec} is a folder without images: put .jpg/.png images in it (or "
                "in its subfolders), or give a video file or a camera number."
            )
        return FolderSource(files, path)
    if not path.is_file():
        raise SourceError(
            f"source={spec}: no such video file or image folder ({path.absolute()}). Check "
            "the path (relative paths start from the current directory), or give a camera "
            "number such as source=0."
        )
    if path.suffix.lower() in IMAGE_SUFFIXES:
        return FolderSource([path], path)
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        capture.release()
        raise SourceError(
            f"cannot read the video {path}: OpenCV (with FFmpeg) could not open it. It may be "
            "corrupt, or not a video; converting it to .mp4 (H.264) usually helps, e.g. "
            f"`ffmpeg -i {path.name} clip.mp4`."
        )
    return CaptureSource(capture, f"video {path}", live=False)


def _camera(index: int) -> CaptureSource:
    capture = cv2.VideoCapture(index)
    if not capture.isOpened():
        capture.release()
        raise CameraError(
            f"cannot open camera {index} (source={index}). Try another camera number "
            f"(source=1, source=2, ...); close any other program using the camera; on Linux, "
            f"check that /dev/video{index} exists and that you may read it (the 'video' "
            "group). A headless machine, container or CI runner has no camera: give a video "
            "file or an image folder instead, e.g. source=clip.mp4 headless=true."
        )
    return CaptureSource(capture, f"camera {index}", live=True)


class VideoSink:
    """Annotated frames as a video file.

    The writer opens on the first frame, whose size is known only then. Later frames of
    another size (image folders) are letterboxed to it: a writer silently drops frames whose
    size differs from the first.
    """

    def __init__(self, path: Path, fps: float):
        if path.suffix.lower() not in FOURCC:
            raise OutputError(
                f"output={path}: the annotated video must be a {' or '.join(FOURCC)} file."
            )
        self.path = path
        self.fps = fps
        self.frames = 0
        self._writer: cv2.VideoWriter | None = None
        self._size: tuple[int, int] | None = None

    def write(self, image: np.ndarray) -> None:
        if self._writer is None or self._size is None:
            self._writer, self._size = self._open(image.shape[1], image.shape[0])
        if (image.shape[1], image.shape[0]) != self._size:
            image = letterbox(image, *self._size)
        self._writer.write(image)
        self.frames += 1

    def _open(self, width: int, height: int) -> tuple[cv2.VideoWriter, tuple[int, int]]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fourcc = cv2.VideoWriter.fourcc(*FOURCC[self.path.suffix.lower()])
        writer = cv2.VideoWriter(str(self.path), fourcc, self.fps, (width, height))
        if not writer.isOpened():
            raise OutputError(
                f"cannot write the video {self.path}: check that its folder is "
                "writable, or pick another output= path."
            )
        return writer, (width, height)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.release()


def letterbox(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """Fit ``image`` inside width x height without distortion, on black."""
    scale = min(width / image.shape[1], height / image.shape[0])
    w, h = max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale))
    out = np.zeros((height, width, 3), dtype=np.uint8)
    x, y = (width - w) // 2, (height - h) // 2
    out[y : y + h, x : x + w] = cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA)
    return out
