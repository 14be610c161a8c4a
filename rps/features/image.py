"""Images through a CNN backbone: the source of every backbone but ``hand_landmarks``.

The model takes raw RGB and crops, resizes and preprocesses inside, so the predictor hands
it images as they are, or the square around a hand when it searches for one
(``roi.find=hand``). Stage 1 fits the head on the pooled backbone features of each image
and augmented view, computed once and cached; the augmentation is drawn here, outside the
model, with each view's own seed.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Sequence
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from rps.cache import ArrayCache, derived_seed, digest
from rps.config.job import Config
from rps.data.crop import cut, hand_square
from rps.data.images import fit_square
from rps.data.splits import Data, Split
from rps.features.base import FEATURES_VERSION, Features, cached, views
from rps.hands.detect import HandFinder
from rps.model import aug, backgrounds, network
from rps.model.network import Classifier

log = logging.getLogger(__name__)

FEATURES_KIND = "features"  # the cache's name for these entries
_PROGRESS_SECONDS = 5.0


class ImageSource:
    name = "image runs"
    input_shape: tuple[int | None, ...] = (None, None, 3)
    requirements: tuple[str, ...] = ()

    def prepare(self) -> None:
        """The ImageNet weights are fetched as the backbone is built."""

    def classifier(self, cfg: Config, num_classes: int) -> Classifier:
        return network.build(cfg, num_classes)

    def features(
        self, cfg: Config, classifier: Classifier, data: Data, cache: ArrayCache | None
    ) -> Features | None:
        """Each (split, view) read from the cache, or computed and stored; None without a
        cache, where training reads the images.

        The key covers everything that determines a feature: the backbone and a digest of
        its weights, the input size, the images' bytes, and for training views the
        augmentation policy, the seed and the view index.
        """
        if cache is None or classifier.backbone is None:
            return None
        backbone = digest(
            FEATURES_VERSION,
            keras.__version__,
            cfg.backbone.name.value,
            cfg.backbone.input_size,
            *classifier.backbone.get_weights(),
        )
        n_views = views(cfg)
        image_aug = aug.on_images(cfg.aug)
        policy = image_aug is not None and {
            "aug": vars(cfg.aug),
            "version": aug.POLICY_VERSION,
            "seed": cfg.trainer.seed,
            "photos": image_aug.background_dir
            and digest(backgrounds.photos(image_aug.background_dir)[0]),
        }
        extractor = classifier.feature_extractor()
        spent = saved = 0.0
        train = []
        for view in range(n_views):
            key = digest(backbone, "train", data.train.key, policy, view)
            seed = derived_seed(cfg.trainer.seed, view)
            augmentation = aug.build(image_aug, seed) if image_aug is not None else None
            array, cost, hit = cached(
                cache,
                key,
                f"train view {view + 1}/{n_views}",
                functools.partial(
                    _passes, extractor, data.train.images, augmentation, cfg.trainer.batch_size
                ),
                FEATURES_KIND,
            )
            train.append(array)
            spent, saved = (spent, saved + cost) if hit else (spent + cost, saved)
        val, cost, hit = cached(
            cache,
            digest(backbone, "val", data.val.key),
            "val",
            lambda: _passes(extractor, data.val.images, None, cfg.trainer.batch_size),
            FEATURES_KIND,
        )
        spent, saved = (spent, saved + cost) if hit else (spent + cost, saved)
        if saved:
            log.info("cache hit saved %.0f s of backbone passes", saved)
        return Features(np.stack(train), val, spent, saved, data.train.labels, data.val.labels)

    def made(self, model: keras.Model) -> bool:
        return len(model.input_shape) == 4 and model.input_shape[-1] == 3

    def finder(self, files: dict[str, Path] | None = None) -> HandFinder | None:
        return None

    def inputs(
        self, model: keras.Model, images: Sequence[np.ndarray], hands: Sequence[np.ndarray | None]
    ) -> np.ndarray:
        """Images at the model's input size, which it then crops as it trained; where a hand
        was found, the square around it instead."""
        size = network.input_size(model)
        crops = [
            np.asarray(image) if points is None else cut(np.asarray(image), *hand_square(points))
            for image, points in zip(images, hands, strict=True)
        ]
        return np.stack(
            [crop if crop.shape[:2] == (size, size) else fit_square(crop, size) for crop in crops]
        ).astype(np.float32)

    def frame_input(self, rgb: np.ndarray, hand: np.ndarray | None) -> np.ndarray:
        return rgb if hand is None else cut(rgb, *hand_square(hand))

    def input_size(self, model: keras.Model) -> int:
        return network.input_size(model)

    def artifacts(self) -> dict[str, Path]:
        return {}

    def test_locator(self, test: Split, cache: ArrayCache | None) -> None:
        return None

    def average(self, members: Sequence[keras.Model]) -> keras.Model:
        """Each member nests whole, with its own crop, preprocessing and backbone, so members
        may differ in backbone and input size."""
        return network.mean_of(members, keras.Input((None, None, 3), name="image"), "rps_ensemble")


def _passes(
    features: keras.Model, images: np.ndarray, augmentation: keras.Layer | None, batch_size: int
) -> np.ndarray:
    """Backbone passes in batches, with progress (images/s and ETA) every few seconds."""
    # Traced: aug=background runs faster as one graph than op by op
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
