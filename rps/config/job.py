"""Schemas of how a job runs (``trainer``, ``tracking``, ``cache``), and of the whole job
config, which checks that its groups fit together."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from omegaconf import MISSING

from rps.config.data import DataConfig
from rps.config.model import (
    AugConfig,
    BackboneConfig,
    BackboneName,
    FinetuneConfig,
    HeadConfig,
    ImageAugConfig,
    LandmarkAugConfig,
    OptimizerConfig,
    UnfreezeConfig,
)
from rps.config.ranges import in_range
from rps.errors import ConfigError


class Strategy(str, Enum):
    default = "default"
    mirrored = "mirrored"


@dataclass
class TrainerConfig:
    """``batch_size`` is global: ``strategy=mirrored`` splits each batch across its replicas.
    ``resume`` is the MLflow run id of an interrupted run to continue."""

    epochs: int = 10
    batch_size: int = 32
    patience: int | None = 30
    seed: int = 42
    strategy: Strategy = Strategy.default
    resume: str | None = None

    def __post_init__(self) -> None:
        in_range(self.epochs >= 1, "trainer.epochs", self.epochs, "at least 1")
        in_range(
            1 <= self.batch_size <= 4096,
            "trainer.batch_size",
            self.batch_size,
            "between 1 and 4096",
        )
        in_range(
            self.patience is None or self.patience >= 1,
            "trainer.patience",
            self.patience,
            "at least 1, or null to never stop early",
        )
        in_range(self.seed >= 0, "trainer.seed", self.seed, "non-negative")


@dataclass
class TrackingConfig:
    """MLflow tracking; ``uri: null`` means the SQLite store ``mlflow.db`` at the project root."""

    enabled: bool = True
    uri: str | None = None
    experiment: str = "rps"
    register: str | None = None

    def __post_init__(self) -> None:
        in_range(
            bool(self.experiment.strip()),
            "tracking.experiment",
            self.experiment,
            "a non-empty name",
        )


@dataclass
class CacheConfig:
    """Work that jobs reuse: decoded images, and backbone features while it is frozen.

    ``views`` is how many augmented views of each training image are cached (each epoch
    samples one); null picks 1 without augmentation and ``AUTO_VIEWS`` with it.
    """

    enabled: bool = True
    dir: str | None = None
    views: int | None = None

    def __post_init__(self) -> None:
        in_range(
            self.views is None or 1 <= self.views <= 64,
            "cache.views",
            self.views,
            "between 1 and 64, or null for automatic",
        )


@dataclass
class Config:
    data: DataConfig = MISSING
    backbone: BackboneConfig = MISSING
    head: HeadConfig = MISSING
    aug: AugConfig = MISSING
    optimizer: OptimizerConfig = MISSING
    finetune: FinetuneConfig = MISSING
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    cache: CacheConfig = field(default_factory=CacheConfig)
    experiment: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.backbone, BackboneConfig):
            return  # a schema with MISSING groups: nothing to check yet
        hands = self.backbone.name is BackboneName.hand_landmarks
        if hands and (
            isinstance(self.aug, ImageAugConfig) or isinstance(self.finetune, UnfreezeConfig)
        ):
            raise ConfigError(
                "backbone=hand_landmarks reads hands with a fixed pretrained model and trains "
                "its head on their landmarks, so image augmentation and fine-tuning do not "
                "apply: use aug=landmarks (or aug=none) and finetune=none."
            )
        if not hands and isinstance(self.aug, LandmarkAugConfig):
            raise ConfigError(
                f"aug=landmarks moves hand landmarks, which only backbone=hand_landmarks "
                f"reads, but backbone={self.backbone.name.value}: use an image option (aug=none, "
                "light, any_angle, strong or background), or backbone=hand_landmarks."
            )


# Schemas a YAML option extends through its defaults list: one per group, or per subclass.
