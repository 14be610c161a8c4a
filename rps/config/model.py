"""Schemas of the groups that build the model: ``backbone``, ``head``, ``aug``,
``optimizer`` and ``finetune``."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from omegaconf import MISSING

from rps.config.ranges import in_range
from rps.errors import ConfigError


class BackboneName(str, Enum):
    resnet50 = "resnet50"
    mobilenet_v2 = "mobilenet_v2"
    efficientnet_b0 = "efficientnet_b0"
    efficientnet_lite0 = "efficientnet_lite0"
    hand_landmarks = "hand_landmarks"


HAND_WEIGHTS = "mediapipe"


@dataclass
class BackboneConfig:
    """``weights`` is ``imagenet``, null (random init) or a path to a Keras weights file;
    for ``hand_landmarks``, ``mediapipe``: MediaPipe's hand models (rps.hands.detect). The images
    are loaded at ``input_size``: the CNN's input, or what the hand finder looks at."""

    name: BackboneName = MISSING
    input_size: int = MISSING
    weights: str | None = "imagenet"

    def __post_init__(self) -> None:
        in_range(
            32 <= self.input_size <= 1024,
            "backbone.input_size",
            self.input_size,
            "between 32 and 1024 pixels",
        )
        if (self.name is BackboneName.hand_landmarks) != (self.weights == HAND_WEIGHTS):
            raise ConfigError(
                f"backbone={self.name.value} with backbone.weights={self.weights!r}: "
                f"weights={HAND_WEIGHTS} means MediaPipe's hand models, which only "
                "backbone=hand_landmarks runs, and it runs nothing else. Use "
                "backbone=hand_landmarks as it is, or a CNN backbone with imagenet, null or a "
                "weights file."
            )


@dataclass
class HeadConfig:
    """A logistic regression on the features (``head=linear``): Dropout, then the logits."""

    dropout: float = 0.2

    def __post_init__(self) -> None:
        in_range(0.0 <= self.dropout < 1.0, "head.dropout", self.dropout, "in [0, 1)")


@dataclass
class DenseHeadConfig(HeadConfig):
    """``depth`` hidden Dense layers of ``units`` each, every Dense preceded by Dropout."""

    units: int = 256
    depth: int = 1

    def __post_init__(self) -> None:
        super().__post_init__()
        in_range(self.units >= 1, "head.units", self.units, "a positive integer")
        in_range(
            1 <= self.depth <= 16,
            "head.depth",
            self.depth,
            "between 1 and 16 (head=linear has none)",
        )


@dataclass
class AugConfig:
    """No augmentation (``aug=none``): the options below have their own schemas, so a
    config holds the keys of its kind of backbone alone."""

    @property
    def on_images(self) -> bool:
        return False

    @property
    def on_landmarks(self) -> bool:
        return False


@dataclass
class ImageAugConfig(AugConfig):
    """Random transforms of the image backbones' training images; 0 turns one off.

    Factors follow the Keras preprocessing layers: ``rotation`` is a fraction of a full
    turn, ``translation`` a fraction of the image side, ``zoom_in`` and ``zoom_out`` the most
    the view narrows or widens, as a fraction of the side (``zoom_out=0.8`` shows up to 1.8
    times the side, the hand shrunk to 1/1.8: hands far from a webcam). ``background`` is the
    share of images whose white background is replaced, ``background_photos`` the share of
    those new backgrounds cut from bundled photos rather than generated,
    ``background_recolour`` the share of those photo crops redrawn in two random colours (their
    shapes in colours the photos lack), ``background_dir`` a folder of the user's own photos
    (the room the camera will see) to crop from besides the bundled ones, ``skin_tone`` the
    most a hand is darkened or lightened, ``white_balance`` the most a channel's gain moves
    from 1, and ``blur`` the largest Gaussian sigma, in pixels of the backbone input.
    """

    flip: bool = False
    rotation: float = 0.0
    zoom_in: float = 0.0
    zoom_out: float = 0.0
    translation: float = 0.0
    brightness: float = 0.0
    contrast: float = 0.0
    saturation: float = 0.0
    hue: float = 0.0
    background: float = 0.0
    background_photos: float = 0.0
    background_recolour: float = 0.0
    background_dir: str | None = None
    skin_tone: float = 0.0
    white_balance: float = 0.0
    blur: float = 0.0

    def __post_init__(self) -> None:
        for key in (
            "rotation",
            "translation",
            "brightness",
            "contrast",
            "saturation",
            "hue",
            "background",
            "background_photos",
            "background_recolour",
            "skin_tone",
            "white_balance",
        ):
            value = getattr(self, key)
            in_range(0.0 <= value <= 1.0, f"aug.{key}", value, "between 0 and 1")
        in_range(0.0 <= self.zoom_in < 1.0, "aug.zoom_in", self.zoom_in, "at least 0 and below 1")
        in_range(0.0 <= self.zoom_out <= 2.0, "aug.zoom_out", self.zoom_out, "between 0 and 2")
        in_range(0.0 <= self.blur <= 5.0, "aug.blur", self.blur, "between 0 and 5 pixels")
        if self.background_dir is not None and not (self.background and self.background_photos):
            raise ConfigError(
                f"aug.background_dir={self.background_dir!r} would never be used: photos are "
                "cropped only for the share aug.background of images that get a new "
                "background, times aug.background_photos. Set both above 0 (aug=background "
                "does), or drop aug.background_dir."
            )

    @property
    def on_images(self) -> bool:
        """Whether any image transform is on: answered from the values, without building
        layers (which can mean loading photos)."""
        return any(
            getattr(self, key)
            for key in (
                "flip",
                "rotation",
                "zoom_in",
                "zoom_out",
                "translation",
                "brightness",
                "contrast",
                "saturation",
                "hue",
                "background",
                "skin_tone",
                "white_balance",
                "blur",
            )
        )


@dataclass
class LandmarkAugConfig(AugConfig):
    """``backbone=hand_landmarks``'s augmentation: ``landmark_jitter`` moves each landmark by
    noise (a share of the palm's size), ``landmark_tilt`` turns the hand out of the image
    plane (degrees)."""

    landmark_jitter: float = 0.0
    landmark_tilt: float = 0.0

    def __post_init__(self) -> None:
        in_range(
            0.0 <= self.landmark_jitter <= 0.5,
            "aug.landmark_jitter",
            self.landmark_jitter,
            "between 0 and 0.5 (of the hand's size)",
        )
        in_range(
            0.0 <= self.landmark_tilt <= 90.0,
            "aug.landmark_tilt",
            self.landmark_tilt,
            "between 0 and 90 degrees",
        )

    @property
    def on_landmarks(self) -> bool:
        return bool(self.landmark_jitter or self.landmark_tilt)


class Schedule(str, Enum):
    constant = "constant"
    cosine = "cosine"


@dataclass
class OptimizerConfig:
    lr: float = 1e-3
    schedule: Schedule = Schedule.constant
    label_smoothing: float = 0.0

    def __post_init__(self) -> None:
        in_range(0.0 < self.lr <= 10.0, "optimizer.lr", self.lr, "positive (and at most 10)")
        in_range(
            0.0 <= self.label_smoothing < 1.0,
            "optimizer.label_smoothing",
            self.label_smoothing,
            "in [0, 1)",
        )


@dataclass
class AdamConfig(OptimizerConfig):
    pass


@dataclass
class AdamWConfig(OptimizerConfig):
    weight_decay: float = 1e-4

    def __post_init__(self) -> None:
        super().__post_init__()
        in_range(
            self.weight_decay >= 0.0, "optimizer.weight_decay", self.weight_decay, "non-negative"
        )


@dataclass
class SGDConfig(OptimizerConfig):
    lr: float = 1e-2
    momentum: float = 0.9
    nesterov: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        in_range(0.0 <= self.momentum < 1.0, "optimizer.momentum", self.momentum, "in [0, 1)")


@dataclass
class FinetuneConfig:
    """No stage 2 (``finetune=none``): the backbone stays frozen; only the head trains."""


@dataclass
class UnfreezeConfig(FinetuneConfig):
    """Stage 2: after the head trains on a frozen backbone, unfreeze its top ``layers`` (null:
    all of them) for ``epochs`` more, at ``lr_factor`` times the learning rate."""

    epochs: int = 8
    layers: int | None = 100
    lr_factor: float = 0.1

    def __post_init__(self) -> None:
        in_range(
            self.epochs >= 1,
            "finetune.epochs",
            self.epochs,
            "at least 1 (finetune=none has no stage 2)",
        )
        in_range(
            self.layers is None or self.layers >= 1,
            "finetune.layers",
            self.layers,
            "1 or more, or null for the whole backbone (finetune=none unfreezes nothing)",
        )
        in_range(
            0.0 < self.lr_factor <= 10.0,
            "finetune.lr_factor",
            self.lr_factor,
            "positive (and at most 10)",
        )
