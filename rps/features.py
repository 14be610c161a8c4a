"""Frozen-backbone features, computed once per image and view, and cached on disk.

While the backbone is frozen an image's pooled features never change, so the backbone pass,
which is nearly all the compute of a job, is paid once and shared by every epoch and by
every later job with the same backbone, data and augmentation (a head or optimizer sweep).

The cached training views are augmented here, outside the model: each view draws the
config's augmentation with its own seed, then passes through the model's feature extractor.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import keras
import numpy as np
import tensorflow as tf

from rps import augment
from rps.cache import ArrayCache, derived_seed, digest
from rps.config import Config
from rps.data import Data
from rps.model import Classifier

log = logging.getLogger("rps")

AUTO_VIEWS = 2  # augmented views per training image when cache.views is null
KIND = "features"
VERSION = 1  # bump when what a cached feature means changes
_PROGRESS_SECONDS = 5.0


@dataclass(frozen=True)
class Features:
    train: np.ndarray  # (views, N, D): one augmented draw of every training image per view
    val: np.ndarray  # (N, D): un-augmented
    seconds: float  # spent computing; 0 when every entry was a cache hit
    saved_seconds: float  # what the hits had cost when they were computed


def views(cfg: Config) -> int:
    if cfg.cache.views is not None:
        return cfg.cache.views
    return AUTO_VIEWS if cfg.aug.on_images else 1


def build(cfg: Config, classifier: Classifier, data: Data, cache: ArrayCache) -> Features:
    """Read each (split, view) from the cache, or compute and store it.

    The key covers everything that determines a feature: the backbone and a digest of its
    weights, the input size, the images' bytes, and for training views the augmentation
    policy, the seed and the view index.
    """
    backbone = digest(VERSION, keras.__version__, cfg.backbone.name.value,
                      cfg.backbone.input_size, *classifier.backbone.get_weights())
    n_views = views(cfg)
    policy = cfg.aug.on_images and {
        "aug": vars(cfg.aug), "version": augment.VERSION, "seed": cfg.trainer.seed,
        "photos": cfg.aug.background_dir and digest(augment.photos(cfg.aug.background_dir)[0])}
    train_images, val_images = digest(data.train.images), digest(data.val.images)
    extractor = classifier.feature_extractor()
    spent = saved = 0.0
    train = []
    for view in range(n_views):
        key = digest(backbone, "train", train_images, policy, view)
        seed = derived_seed(cfg.trainer.seed, view)
        augmentation = augment.build(cfg.aug, seed) if policy else None
        array, cost, hit = _cached(cache, key, f"train view {view + 1}/{n_views}",
                                   lambda a=augmentation: _compute(extractor,
                                                                   data.train.images, a,
                                                                   cfg.trainer.batch_size))
        train.append(array)
        spent, saved = (spent, saved + cost) if hit else (spent + cost, saved)
    val, cost, hit = _cached(cache, digest(backbone, "val", val_images), "val",
                             lambda: _compute(extractor, data.val.images, None,
                                              cfg.trainer.batch_size))
    spent, saved = (spent, saved + cost) if hit else (spent + cost, saved)
    if saved:
        log.info("features: cache hit saved %.0f s of backbone passes", saved)
    return Features(np.stack(train), val, spent, saved)


def _cached(cache: ArrayCache, key: str, label: str, compute) -> tuple[np.ndarray, float, bool]:
    stored = cache.get(KIND, key)
    if stored is not None:
        log.info("features: %s from the cache", label)
        return stored["features"], float(stored["seconds"]), True
    log.info("features: computing %s", label)
    started = time.perf_counter()
    array = compute()
    seconds = time.perf_counter() - started
    cache.put(KIND, key, {"features": array, "seconds": np.array(seconds)})
    return array, seconds, False


def _compute(features: keras.Model, images: np.ndarray, augmentation: keras.Layer | None,
             batch_size: int) -> np.ndarray:
    """Backbone passes in batches, with progress (images/s and ETA) every few seconds."""
    # Traced: aug=background runs ~2.5x faster as one graph than op by op.
    augment_batch = None if augmentation is None else tf.function(
        lambda batch: augmentation(batch, training=True), reduce_retracing=True)
    started = last = time.perf_counter()
    out = []
    for start in range(0, len(images), batch_size):
        batch = images[start:start + batch_size].astype("float32")
        if augment_batch is not None:
            batch = augment_batch(batch)
        out.append(np.asarray(features.predict_on_batch(batch)))
        now = time.perf_counter()
        if now - last > _PROGRESS_SECONDS:
            last = now
            done = start + len(batch)
            rate = done / (now - started)
            log.info("features: %d/%d images, %.0f images/s, ETA %.0f s", done, len(images),
                     rate, (len(images) - done) / rate)
    seconds = time.perf_counter() - started
    log.info("features: %d images in %.1f s (%.0f images/s)", len(images), seconds,
             len(images) / max(seconds, 1e-9))
    return np.concatenate(out).astype("float32")
