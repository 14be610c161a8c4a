"""A dataset in memory: its splits, decoded once, and the photos a model is scored on."""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from rps.cache import digest

SPLITS = ("train", "val", "test")


class Split:
    """A split's images (uint8 (N, S, S, 3): decoded RGB, crop policy applied at size S),
    labels (int32 (N,), indices into class_names) and sources (a file path per image, or a
    tfds id, for error reports and grids).

    Its images may be the decoded-image cache mapped from disk, and a subset keeps its rows
    of them rather than a copy: so a job whose features are cached reads only the pixels it
    uses. ``key`` names the pixels for the caches built on them.
    """

    def __init__(
        self,
        images: np.ndarray,
        labels: np.ndarray,
        sources: list[str],
        key: str | None = None,
        rows: np.ndarray | None = None,
    ) -> None:
        self._base, self._rows, self._key = images, rows, key
        self.labels, self.sources = labels, sources

    def __len__(self) -> int:
        return len(self.labels)

    @functools.cached_property
    def images(self) -> np.ndarray:
        return self._base if self._rows is None else self._base[self._rows]

    @functools.cached_property
    def key(self) -> str:
        """A digest of the pixels: given by the loader when it knows one without reading
        them (the files' digests), else computed."""
        return self._key or digest(self.images)

    @property
    def image_shape(self) -> tuple[int, ...]:
        return (len(self), *self._base.shape[1:])

    def take(self, index: np.ndarray) -> np.ndarray:
        """Some of its images, reading those alone."""
        return self._base[index if self._rows is None else self._rows[index]]

    def subset(self, index: np.ndarray) -> Split:
        rows = np.arange(len(self))[index]
        return Split(
            self._base,
            self.labels[index],
            [self.sources[i] for i in rows],
            key=None if self._key is None else digest(self._key, rows),
            rows=rows if self._rows is None else self._rows[rows],
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
    # When val was held out of train: the split both were dealt from, and which of its
    # images went to val. What is cached of its images outlasts a change of seed.
    pool: Split | None = None
    is_val: np.ndarray | None = None


def first_of_each(labels: np.ndarray, limit: int | None) -> np.ndarray:
    """The indices of the first ``limit`` items of each label, in order; all without one."""
    if limit is None:
        return np.arange(len(labels))
    rank = np.zeros(len(labels), dtype=np.int64)
    for label in np.unique(labels):
        rank[labels == label] = np.arange(np.sum(labels == label))
    return np.flatnonzero(rank < limit)
