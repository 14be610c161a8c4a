"""Features computed once per image and view, and cached on disk, whatever their source.

While what feeds the head is fixed (a frozen backbone, a pretrained hand model), an image's
features never change, so that pass, nearly all the compute of a job, is paid once and
shared by every epoch and by every later job with the same source, data and augmentation (a
head or optimizer sweep).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from rps.cache import ArrayCache
from rps.config.job import Config

log = logging.getLogger(__name__)

AUTO_VIEWS = 2  # augmented views per training image when cache.views is null
FEATURES_VERSION = 1  # bump when what a cached feature means changes


@dataclass(frozen=True)
class Features:
    train: np.ndarray  # (views, N, D): one augmented draw of every training image per view
    val: np.ndarray  # (N, D): un-augmented
    seconds: float  # spent computing; 0 when every entry was a cache hit
    saved_seconds: float  # what the hits had cost when they were computed
    train_labels: np.ndarray  # of the images that have features: for hand_landmarks, those
    val_labels: np.ndarray  # in which a hand was found
    no_hand: dict[str, int] | None = None  # hand_landmarks: images left out, per split


def views(cfg: Config) -> int:
    if cfg.cache.views is not None:
        return cfg.cache.views
    return AUTO_VIEWS if cfg.aug.on_images or cfg.aug.on_landmarks else 1


def cached(
    cache: ArrayCache | None, key: str, label: str, compute: Callable[[], np.ndarray], kind: str
) -> tuple[np.ndarray, float, bool]:
    """The array under ``key``, or ``compute()`` stored there; also the seconds it cost when
    it was computed, and whether it came from the cache."""
    stored = cache.get(kind, key) if cache is not None else None
    if stored is not None:
        log.info("%s from the cache", label)
        return stored["features"], float(stored["seconds"]), True
    log.info("computing %s", label)
    started = time.perf_counter()
    array = compute()
    seconds = time.perf_counter() - started
    if cache is not None:
        cache.put(kind, key, {"features": array, "seconds": np.array(seconds)})
    return array, seconds, False
