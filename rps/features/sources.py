"""A feature source: what feeds the head, and the one place that knows which kind it is.

A job asks its config's source to build the classifier and compute the cached training
features; the predictor asks a saved model's source how an image becomes the model's input.
Neither asks which backbone it has. Two sources exist: images through a CNN backbone
(:mod:`rps.features.image`) and hands through MediaPipe's models (:mod:`rps.features.hand`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol

import keras
import numpy as np

from rps.cache import ArrayCache
from rps.config.job import Config
from rps.config.model import BackboneConfig, BackboneName
from rps.data.splits import Data, Split
from rps.errors import UserError
from rps.features.base import Features
from rps.features.hand import HandSource
from rps.features.image import ImageSource
from rps.hands.detect import HandFinder
from rps.model.network import Classifier

# Images, and the finder to search them with -> the landmarks of the hand found in each
# (N, 21, 3), NaN where none was.
Locate = Callable[[np.ndarray, HandFinder], np.ndarray]


class FeatureSource(Protocol):
    name: str  # what an error calls this kind of model
    input_shape: tuple[int | None, ...]  # one model input, without the batch axis
    requirements: tuple[str, ...]  # pip packages a served model needs beyond the base ones

    def prepare(self) -> None:
        """Fetch what building needs, before the job's run opens."""

    def classifier(self, cfg: Config, num_classes: int) -> Classifier: ...

    def features(
        self, cfg: Config, classifier: Classifier, data: Data, cache: ArrayCache | None
    ) -> Features | None:
        """The training and validation features stage 1 fits the head on, or None: train on
        images."""

    def made(self, model: keras.Model) -> bool:
        """Whether a saved model takes this source's inputs."""

    def finder(self, files: dict[str, Path] | None = None) -> HandFinder | None:
        """What a predictor of this source's models searches images with, if anything."""

    def inputs(
        self, model: keras.Model, images: Sequence[np.ndarray], hands: Sequence[np.ndarray | None]
    ) -> np.ndarray:
        """The model's inputs for images, each with the landmarks of its hand, if one was
        searched for and found."""

    def frame_input(self, rgb: np.ndarray, hand: np.ndarray | None) -> np.ndarray:
        """One frame's input for a graph of any input size: the model resizes it."""

    def input_size(self, model: keras.Model) -> int:
        """The square side images are loaded at for the model, 0 when any size does."""

    def artifacts(self) -> dict[str, Path]:
        """Files a logged model carries besides the Keras model."""

    def test_locator(self, test: Split, cache: ArrayCache | None) -> Locate | None:
        """How the job's test pass finds hands, cached like training's, if this source
        reads them."""

    def average(self, members: Sequence[keras.Model]) -> keras.Model: ...


HAND, IMAGE = HandSource(), ImageSource()
SOURCES: tuple[FeatureSource, ...] = (HAND, IMAGE)


def of(backbone: BackboneConfig) -> FeatureSource:
    """The one place a backbone's name decides what feeds the head."""
    return HAND if backbone.name is BackboneName.hand_landmarks else IMAGE


def of_model(model: keras.Model) -> FeatureSource:
    return next(source for source in SOURCES if source.made(model))


def classifier(cfg: Config, num_classes: int) -> Classifier:
    """The config's classifier, its backbone (if it has one) frozen."""
    return of(cfg.backbone).classifier(cfg, num_classes)


def average(members: Sequence[keras.Model]) -> keras.Model:
    """One model whose logits are the mean of the members', which must be of one kind."""
    if len(members) < 2:
        raise UserError(f"an ensemble needs two or more members, but got {len(members)}.")
    kinds = [source for source in SOURCES if any(source.made(model) for model in members)]
    if len(kinds) > 1:
        raise UserError(
            "an ensemble averages one kind of model, but these mix "
            + " with ".join(source.name for source in kinds)
            + ": list runs of one kind."
        )
    return kinds[0].average(members)
