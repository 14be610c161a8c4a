"""Schemas of ``live.py``, ``evaluate.py`` and ``ensemble.py``."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

from rps.config.ranges import in_range
from rps.errors import ConfigError

# live.py


class LiveMode(str, Enum):
    classify = "classify"
    capture = "capture"


class CaptureSplit(str, Enum):
    train = "train"
    val = "val"
    test = "test"


class RoiFind(str, Enum):
    hand = "hand"  # the hand finder places the square around the hand, anywhere in the image
    fixed = "fixed"  # live.py: the roi.size square; evaluate.py: the model's own crop


@dataclass
class FindConfig:
    """Where the model looks. ``hand``: an image model sees the square around the hand the
    palm detector finds, and an image with no hand reads ``no hand``; a landmark model reads
    that hand. ``fixed``: the fixed square, in which a landmark model still finds the hand."""

    find: RoiFind = RoiFind.hand


@dataclass
class RoiConfig(FindConfig):
    """The fixed square (``find=fixed``), in frame pixels; ``x``/``y`` (its top-left corner)
    null centre it. In a frame it does not fit, the frame's largest centred square is used
    instead: the crop policy of training (rps/data/crop.py).
    """

    size: int = 300
    x: int | None = None
    y: int | None = None

    def __post_init__(self) -> None:
        in_range(self.size >= 16, "roi.size", self.size, "at least 16 pixels")
        in_range(self.x is None or self.x >= 0, "roi.x", self.x, "0 or more, or null to centre")
        in_range(self.y is None or self.y >= 0, "roi.y", self.y, "0 or more, or null to centre")


@dataclass
class CaptureConfig:
    """Capture mode keeps one crop every ``every`` frames (consecutive frames are near
    copies), until ``limit`` crops if set, into ``data.root/<split>/<label>/``."""

    every: int = 5
    limit: int | None = None
    split: CaptureSplit = CaptureSplit.train

    def __post_init__(self) -> None:
        in_range(self.every >= 1, "capture.every", self.every, "at least 1 (every frame)")
        in_range(
            self.limit is None or self.limit >= 1,
            "capture.limit",
            self.limit,
            "at least 1, or null for no limit",
        )


@dataclass
class RootConfig:
    """``data.root`` of the apps besides training: live.py's capture folder, evaluate.py's
    labelled folder, and where an ensemble's members' data folder is now, when it has moved
    since they trained."""

    root: str | None = None

    @property
    def folder(self) -> Path:
        """``root``, for an app that needs it: their schemas refuse a config without it."""
        if self.root is None:
            raise ConfigError("data.root has no value: set data.root=<folder>.")
        return Path(self.root).expanduser()


@dataclass
class StoreConfig:
    """The tracking store the apps besides training read runs from: null is the one
    training uses."""

    uri: str | None = None


@dataclass
class ModelChoice:
    """The model an app uses: exactly one of an MLflow run id (looked up in
    ``tracking.uri``), any MLflow model URI (``models:/rps/3``), or a saved ``model.keras``
    (or the run output folder that holds it)."""

    run_id: str | None = None
    model_uri: str | None = None
    model_path: str | None = None

    def chosen(self) -> list[str]:
        return [key for key in ("run_id", "model_uri", "model_path") if getattr(self, key)]

    def check_one(self, what: str) -> None:
        given = self.chosen()
        if len(given) != 1:
            raise ConfigError(
                f"{what} needs exactly one model, but {len(given)} of run_id, "
                f"model_uri and model_path are set{': ' + ', '.join(given) if given else ''}. "
                "Pass run_id=<MLflow run id>, model_uri=models:/<name>/<version>, or "
                "model_path=<model.keras or a run's output folder>."
            )


@dataclass
class LiveConfig(ModelChoice):
    """``live.py``: classify a camera, video file or image folder, or capture a dataset."""

    source: str = "0"
    roi: RoiConfig = field(default_factory=RoiConfig)
    smooth: int = 1
    threshold: float = 0.5
    headless: bool = False
    output: str | None = None
    predictions: str | None = None
    mode: LiveMode = LiveMode.classify
    label: str | None = None
    data: RootConfig = field(default_factory=RootConfig)
    capture: CaptureConfig = field(default_factory=CaptureConfig)
    tracking: StoreConfig = field(default_factory=StoreConfig)

    def __post_init__(self) -> None:
        in_range(self.smooth >= 1, "smooth", self.smooth, "at least 1 (1 = no smoothing)")
        in_range(0.0 <= self.threshold <= 1.0, "threshold", self.threshold, "between 0 and 1")
        if self.mode == LiveMode.capture:
            self._check_capture(self.chosen())
        else:
            self.check_one("classify mode")

    def _check_capture(self, given: list[str]) -> None:
        if given:
            raise ConfigError(
                f"mode=capture records images and uses no model, but {', '.join(given)} is "
                "set: drop it, or use mode=classify to run the model."
            )
        if (
            not self.label
            or self.label != self.label.strip()
            or "/" in self.label
            or "\\" in self.label
            or self.label.startswith(".")
        ):
            raise ConfigError(
                "mode=capture needs label=<class name>, a folder name such as label=rock "
                "(no slashes, no leading dot), but "
                + ("no label is set." if self.label is None else f"label is {self.label!r}.")
            )
        if not self.data.root:
            raise ConfigError(
                "mode=capture needs data.root=<folder>: crops go to "
                f"<data.root>/{self.capture.split.value}/{self.label}/, ready for "
                "`python run.py data=folder data.root=<folder>`."
            )


# evaluate.py


@dataclass
class EvaluateConfig(ModelChoice):
    """``evaluate.py``: score a model on a labelled folder, ``data.root/<class>/<image>``.
    ``log`` adds the scores to the model's run, when ``run_id`` names it."""

    data: RootConfig = field(default_factory=RootConfig)
    tracking: StoreConfig = field(default_factory=StoreConfig)
    roi: FindConfig = field(default_factory=FindConfig)
    batch_size: int = 32
    log: bool = True

    def __post_init__(self) -> None:
        self.check_one("evaluate.py")
        if not self.data.root:
            raise ConfigError(
                "evaluate.py needs data.root=<folder>: a folder with one subfolder of images "
                "per class (rock/, paper/, scissors/), such as a dataset's test/ folder."
            )
        in_range(1 <= self.batch_size <= 4096, "batch_size", self.batch_size, "between 1 and 4096")


# ensemble.py


@dataclass
class EnsembleTrackingConfig(StoreConfig):
    """Where the ensemble's run is filed: ``experiment`` null is the first member's
    experiment; ``register`` a registered model name to file the ensemble's model under."""

    experiment: str | None = None
    register: str | None = None


@dataclass
class EnsembleConfig:
    """``ensemble.py``: one model averaging the logits of finished runs, given as ``runs``
    (MLflow run ids) or as ``sweep_id`` (a sweep's parent run id: its finished jobs)."""

    runs: list[str] = field(default_factory=list)
    sweep_id: str | None = None
    data: RootConfig = field(default_factory=RootConfig)
    tracking: EnsembleTrackingConfig = field(default_factory=EnsembleTrackingConfig)

    def __post_init__(self) -> None:
        if bool(self.runs) == bool(self.sweep_id):
            raise ConfigError(
                "ensemble.py needs its members as exactly one of runs=[<run id>,<run id>,...] "
                "(MLflow run ids, two or more) or sweep_id=<the parent run id of a sweep>, but "
                f"got {'both' if self.runs else 'neither'}."
            )
        if self.runs and len(set(self.runs)) != len(self.runs):
            raise ConfigError(
                f"runs={list(self.runs)} names a run twice: each member counts "
                "once in the average, so list each run once."
            )
