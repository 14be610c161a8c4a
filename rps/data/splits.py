"""A dataset in memory: its splits, decoded once, and the photos a model is scored on."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class Split:
    images: np.ndarray  # uint8 (N, S, S, 3): decoded RGB, crop policy applied at size S
    labels: np.ndarray  # int32 (N,), indices into class_names
    sources: list[str]  # file path per image (or a tfds id), for error reports and grids

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, index: np.ndarray) -> Split:
        return Split(
            self.images[index],
            self.labels[index],
            [self.sources[i] for i in np.arange(len(self))[index]],
        )


@dataclass(frozen=True)
class Photos:
    """Labelled images to score a model on, each decoded at its own size: the predictor
    crops them as the model needs, and the hand finder looks at the whole image."""

    images: list[np.ndarray]  # uint8 (H, W, 3) RGB
    labels: np.ndarray  # int32 (N,), indices into the model's class names
    sources: list[str]

    def __len__(self) -> int:
        return len(self.labels)


@dataclass(frozen=True)
class Data:
    class_names: list[str]  # sorted
    train: Split
    val: Split
    test: Split


def first_of_each(labels: np.ndarray, limit: int | None) -> np.ndarray:
    """The indices of the first ``limit`` items of each label, in order; all without one."""
    if limit is None:
        return np.arange(len(labels))
    rank = np.zeros(len(labels), dtype=np.int64)
    for label in np.unique(labels):
        rank[labels == label] = np.arange(np.sum(labels == label))
    return np.flatnonzero(rank < limit)
