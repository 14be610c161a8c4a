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

from rps.cache import ArrayCache, derived_seed, digest
from rps.config.schema import Config, ImageAugConfig, LandmarkAugConfig
from rps.data.dataset import Data
from rps.errors import DataError
from rps.hands import detect as hands
from rps.hands import landmarks
from rps.model import augment
from rps.model.network import Classifier

log = logging.getLogger(__name__)

AUTO_VIEWS = 2  # augmented views per training image when cache.views is null
KIND = "features"
HAND_KIND = "landmarks"
VERSION = 1  # bump when what a cached feature means changes
_PROGRESS_SECONDS = 5.0


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


def build(cfg: Config, classifier: Classifier, data: Data, cache: ArrayCache | None) -> Features:
    """Read each (split, view) from the cache, or compute and store it.

    The key covers everything that determines a feature: the backbone and a digest of its
    weights, the input size, the images' bytes, and for training views the augmentation
    policy, the seed and the view index.
    """
    if cfg.backbone.finds_hands:
        return _hand_features(cfg, data, cache)
    if classifier.backbone is None or cache is None:
        raise TypeError(
            "image features are computed once only to be cached: with no cache, "
            "training reads the images"
        )
    backbone = digest(
        VERSION,
        keras.__version__,
        cfg.backbone.name.value,
        cfg.backbone.input_size,
        *classifier.backbone.get_weights(),
    )
    n_views = views(cfg)
    image_aug = cfg.aug if isinstance(cfg.aug, ImageAugConfig) and cfg.aug.on_images else None
    policy = image_aug is not None and {
        "aug": vars(cfg.aug),
        "version": augment.VERSION,
        "seed": cfg.trainer.seed,
        "photos": image_aug.background_dir and digest(augment.photos(image_aug.background_dir)[0]),
    }
    train_images, val_images = digest(data.train.images), digest(data.val.images)
    extractor = classifier.feature_extractor()
    spent = saved = 0.0
    train = []
    for view in range(n_views):
        key = digest(backbone, "train", train_images, policy, view)
        seed = derived_seed(cfg.trainer.seed, view)
        augmentation = augment.build(image_aug, seed) if image_aug is not None else None
        array, cost, hit = _cached(
            cache,
            key,
            f"train view {view + 1}/{n_views}",
            lambda a=augmentation: _compute(
                extractor, data.train.images, a, cfg.trainer.batch_size
            ),
        )
        train.append(array)
        spent, saved = (spent, saved + cost) if hit else (spent + cost, saved)
    val, cost, hit = _cached(
        cache,
        digest(backbone, "val", val_images),
        "val",
        lambda: _compute(extractor, data.val.images, None, cfg.trainer.batch_size),
    )
    spent, saved = (spent, saved + cost) if hit else (spent + cost, saved)
    if saved:
        log.info("cache hit saved %.0f s of backbone passes", saved)
    return Features(np.stack(train), val, spent, saved, data.train.labels, data.val.labels)


def _hand_features(cfg: Config, data: Data, cache: ArrayCache | None) -> Features:
    """Each image's landmarks, found once and cached; then, per view, their features, from
    landmarks moved by the landmark augmentation with the view's seed. Images without a hand
    are left out."""
    points, spent, saved = {}, 0.0, 0.0
    for name in ("train", "val"):
        points[name], cost, hit = cached_landmarks(getattr(data, name).images, name, cache)
        spent, saved = (spent, saved + cost) if hit else (spent + cost, saved)
    found = {name: ~np.isnan(p).any(axis=(1, 2)) for name, p in points.items()}
    no_hand = {name: int((~f).sum()) for name, f in found.items()}
    log.info(
        "no hand found in %d of %d training and %d of %d validation images; they are left out",
        no_hand["train"],
        len(found["train"]),
        no_hand["val"],
        len(found["val"]),
    )
    if not found["train"].any() or not found["val"].any():
        raise DataError(
            "no hand was found in any "
            + ("training" if not found["train"].any() else "validation")
            + " image, so backbone="
            "hand_landmarks has nothing to learn from: check that the images show hands, "
            "or use a CNN backbone (backbone=efficientnet_lite0)."
        )
    train = points["train"][found["train"]]
    views_ = []
    for view in range(views(cfg)):
        rng = np.random.default_rng(derived_seed(cfg.trainer.seed, view))
        moved = (
            landmarks.augmented(train, cfg.aug.landmark_jitter, cfg.aug.landmark_tilt, rng)
            if isinstance(cfg.aug, LandmarkAugConfig) and cfg.aug.on_landmarks
            else train
        )
        views_.append(landmarks.features(moved))
    return Features(
        np.stack(views_),
        landmarks.features(points["val"][found["val"]]),
        spent,
        saved,
        data.train.labels[found["train"]],
        data.val.labels[found["val"]],
        no_hand,
    )


def cached_landmarks(
    images: np.ndarray, name: str, cache: ArrayCache | None, finder: hands.HandFinder | None = None
) -> tuple[np.ndarray, float, bool]:
    """The landmarks of a split's images (NaN: no hand), found once and cached: the finder's
    models, its version and the images' bytes key them. Also the seconds the search took,
    and whether it came from the cache."""
    key = digest(
        VERSION, hands.VERSION, [sha for _, sha in hands.MODELS.values()], name, digest(images)
    )
    return _cached(
        cache,
        key,
        f"{name} landmarks",
        lambda: hands.first_landmarks(finder or hands.HandFinder(), images),
        HAND_KIND,
    )


def _cached(
    cache: ArrayCache | None, key: str, label: str, compute, kind: str = KIND
) -> tuple[np.ndarray, float, bool]:
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


def _compute(
    features: keras.Model, images: np.ndarray, augmentation: keras.Layer | None, batch_size: int
) -> np.ndarray:
    """Backbone passes in batches, with progress (images/s and ETA) every few seconds."""
    # Traced: aug=background runs ~2.5x faster as one graph than op by op.
    augment_batch = (
        None
        if augmentation is None
        else tf.function(lambda batch: augmentation(batch, training=True), reduce_retracing=True)
    )
    started = last = time.perf_counter()
    out = []
    for start in range(0, len(images), batch_size):
        batch = images[start : start + batch_size].astype("float32")
        if augment_batch is not None:
            batch = augment_batch(batch)
        out.append(np.asarray(features.predict_on_batch(batch)))
        now = time.perf_counter()
        if now - last > _PROGRESS_SECONDS:
            last = now
            done = start + len(batch)
            rate = done / (now - started)
            log.info(
                "%d/%d images, %.0f images/s, ETA %.0f s",
                done,
                len(images),
                rate,
                (len(images) - done) / rate,
            )
    seconds = time.perf_counter() - started
    log.info(
        "%d images in %.1f s (%.0f images/s)",
        len(images),
        seconds,
        len(images) / max(seconds, 1e-9),
    )
    return np.concatenate(out).astype("float32")
