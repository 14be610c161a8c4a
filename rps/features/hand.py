"""Hands through MediaPipe's models: the source of ``backbone=hand_landmarks``.

The hand finder (:mod:`rps.hands.detect`) runs outside Keras, so the model is a head alone
on landmark features (:mod:`rps.hands.landmarks`), and the predictor finds the hands and
hands the model their features. An image with no hand has no features: training leaves it
out, and the predictor answers "no hand" for it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import keras
import numpy as np

from rps.cache import ArrayCache, derived_seed, digest
from rps.config.job import Config
from rps.data.splits import Data, Split
from rps.errors import DataError
from rps.features.base import FEATURES_VERSION, Features, cached, views
from rps.hands import detect, landmarks, models
from rps.model import aug, head, network
from rps.model.network import Classifier

log = logging.getLogger(__name__)

LANDMARKS_KIND = "landmarks"  # the cache's name for these entries
LANDMARK_HEAD = "rps_hand_landmarks"  # what marks a saved model as a landmark head


class HandSource:
    name = "landmark runs (backbone=hand_landmarks)"
    input_shape: tuple[int | None, ...] = (landmarks.SIZE,)
    requirements: tuple[str, ...] = ("ai-edge-litert",)

    def prepare(self) -> None:
        """The hand models are fetched here, where being offline is refused before the run."""
        models.model_files()

    def classifier(self, cfg: Config, num_classes: int) -> Classifier:
        top = head.build(cfg.head, landmarks.SIZE, num_classes)
        features = keras.Input(self.input_shape, name="landmark_features")
        model = keras.Model(features, top(features), name=LANDMARK_HEAD)
        return Classifier(train=model, inference=model, backbone=None, head=top, augment=None)

    def features(
        self, cfg: Config, classifier: Classifier, data: Data, cache: ArrayCache | None
    ) -> Features:
        """Each image's landmarks, found once and cached; then, per view, their features,
        from landmarks moved by the landmark augmentation with the view's seed. Images
        without a hand are left out."""
        points, spent, saved = {}, 0.0, 0.0
        if data.pool is not None and data.is_val is not None:  # one entry for any seed
            pooled, cost, hit = cached_landmarks(data.pool, "train and val", cache)
            points = {"train": pooled[~data.is_val], "val": pooled[data.is_val]}
            spent, saved = (0.0, cost) if hit else (cost, 0.0)
        else:
            for name in ("train", "val"):
                points[name], cost, hit = cached_landmarks(getattr(data, name), name, cache)
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
        moves = aug.on_landmarks(cfg.aug)
        drawn = []
        for view in range(views(cfg)):
            rng = np.random.default_rng(derived_seed(cfg.trainer.seed, view))
            moved = (
                landmarks.augmented(train, moves.landmark_jitter, moves.landmark_tilt, rng)
                if moves is not None
                else train
            )
            drawn.append(landmarks.features(moved))
        return Features(
            np.stack(drawn),
            landmarks.features(points["val"][found["val"]]),
            spent,
            saved,
            data.train.labels[found["train"]],
            data.val.labels[found["val"]],
            no_hand,
        )

    def made(self, model: keras.Model) -> bool:
        return model.name == LANDMARK_HEAD

    def finder(self, files: dict[str, Path] | None = None) -> detect.HandFinder:
        return detect.HandFinder(files)

    def inputs(
        self, model: keras.Model, images: Sequence[np.ndarray], hands: Sequence[np.ndarray | None]
    ) -> np.ndarray:
        found = [points for points in hands if points is not None]
        if len(found) != len(hands):
            raise ValueError("a landmark head reads found hands only")
        return landmarks.features(np.stack(found))

    def frame_input(self, rgb: np.ndarray, hand: np.ndarray | None) -> np.ndarray:
        if hand is None:
            raise ValueError("a landmark head reads found hands only")
        return landmarks.features(hand[None])[0]

    def input_size(self, model: keras.Model) -> int:
        return 0  # the hand finder takes images of any size as they are

    def artifacts(self) -> dict[str, Path]:
        return models.model_files()

    def test_locator(
        self, test: Split, cache: ArrayCache | None
    ) -> Callable[[np.ndarray, detect.HandFinder], np.ndarray]:
        """The test split's landmarks, found once (by the predictor's finder) and cached as
        training's are."""

        def locate(images: np.ndarray, finder: detect.HandFinder) -> np.ndarray:
            if images is not test.images:
                raise ValueError("this locator finds the hands of its own test split only")
            return cached_landmarks(test, "test", cache, finder)[0]

        return locate

    def average(self, members: Sequence[keras.Model]) -> keras.Model:
        """The members are landmark heads on the same features."""
        given = keras.Input(self.input_shape, name="landmark_features")
        return network.mean_of(members, given, LANDMARK_HEAD)


def cached_landmarks(
    split: Split, name: str, cache: ArrayCache | None, finder: detect.HandFinder | None = None
) -> tuple[np.ndarray, float, bool]:
    """The landmarks of a split's images (NaN: no hand), found once and cached: the finder's
    models, its version and the images' bytes key them. Also the seconds the search took,
    and whether it came from the cache."""
    key = digest(
        FEATURES_VERSION,
        detect.FINDER_VERSION,
        [sha for _, sha in models.MODELS.values()],
        name,
        split.key,
    )
    return cached(
        cache,
        key,
        f"{name} landmarks",
        lambda: detect.first_landmarks(finder or detect.HandFinder(), split.images),
        LANDMARKS_KIND,
    )
