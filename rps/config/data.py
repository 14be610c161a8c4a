"""Schemas of the ``data`` group: where images come from."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from omegaconf import MISSING

from rps.config.ranges import in_range


class BadImagePolicy(str, Enum):
    skip = "skip"
    fail = "fail"


@dataclass
class DataConfig:
    """Where images come from; validation is never the test split. ``limit`` keeps the
    first n images of each class in each split (``debug=default``: a quick check).

    ``val_groups`` holds out whole groups of training files rather than single files: a
    group is the files whose names differ only in their last number (one hand model of the
    rps set, ``paper01-*``; one capture session, ``rock_3_*``), so validation sees new
    hands, as the test split does.
    """

    val_fraction: float = 0.15
    val_groups: bool = False
    on_bad_image: BadImagePolicy = BadImagePolicy.fail
    limit: int | None = None

    def __post_init__(self) -> None:
        in_range(
            0.0 < self.val_fraction < 1.0,
            "data.val_fraction",
            self.val_fraction,
            "between 0 and 1 (exclusive)",
        )
        in_range(
            self.limit is None or self.limit >= 2,
            "data.limit",
            self.limit,
            "at least 2 images per class, or null for all",
        )


@dataclass
class TfdsDataConfig(DataConfig):
    tfds_name: str = "rock_paper_scissors"
    tfds_dir: str | None = None


@dataclass
class FolderDataConfig(DataConfig):
    root: str = MISSING
