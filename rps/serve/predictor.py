"""The one predictor: raw RGB images of any size in, class probabilities out.

The job's test pass, evaluate.py, live.py, ensemble.py and the logged MLflow model
(rps.serve.logged_model) all classify through it, so they see a model the same way. The model
crops and resizes inside (its first layer applies the training crop policy), so images go
in untouched.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from rps.features import sources
from rps.features.sources import FeatureSource, Locate
from rps.hands import detect
from rps.model import network
from rps.serve import scores

# One image, and the hand found in it if the predictor reads hands -> class probabilities.
Predict = Callable[[np.ndarray, "detect.Hand | None"], np.ndarray]


def surety(presence: float, probabilities: np.ndarray) -> float:
    """How sure a reading of one hand is: that it is a hand (the landmark model's presence
    score), times the probability of its likeliest class. With two hands in view, an idle
    hand reads as no clear gesture, the one shown to the camera as one."""
    return presence * float(np.max(probabilities))


@dataclass
class Predictor:
    """The model's feature source (rps.features) says how an image becomes its input: an
    image model takes raw RGB and crops it itself, a landmark head the features of the hand
    the finder finds. With a finder, an image model sees the square around the hand instead
    (``roi.find=hand``). Whenever a finder is used, an image with no hand gets a row of NaN:
    no class, never a guess."""

    model: Any  # a Keras model: its source's inputs in, logits out
    class_names: list[str]  # logit i is class_names[i]
    source: FeatureSource
    finder: detect.HandFinder | None = None
    # Images, finder -> their landmarks (N, 21, 3), NaN where no hand: the finder's search
    # unless the source has them cached (the training job's test pass).
    locate: Locate | None = None

    @classmethod
    def of(
        cls,
        model,
        class_names: list[str],
        files: dict[str, Path] | None = None,
        locate: Locate | None = None,
    ) -> Predictor:
        """The predictor of a model: its source from the model itself; ``files`` are the
        hand models a logged model carries."""
        source = sources.of_model(model)
        return cls(model, class_names, source, source.finder(files), locate)

    def finding_hands(self) -> Predictor:
        """This predictor with a hand finder, for ``roi.find=hand``."""
        return self if self.finder else replace(self, finder=detect.HandFinder())

    @property
    def input_size(self) -> int:
        return self.source.input_size(self.model)

    def probabilities(self, images, batch_size: int = 32) -> np.ndarray:
        """Class probabilities of images of any sizes, (N, classes); NaN rows: no hand.
        Where an image shows several hands, each is read and the surest reading kept."""
        if self.finder is None:
            inputs = self.source.inputs(self.model, images, [None] * len(images))
            return self._logits_to_probs(inputs, batch_size)
        if self.locate is not None:  # one hand per image, found already
            located = self.locate(images, self.finder)
            seen = [[] if np.isnan(p).any() else [(p, 1.0)] for p in located]
        else:
            seen = [
                [(hand.landmarks, hand.score) for hand in found]
                for found in detect.every_hand(self.finder, images)
            ]
        read = [
            (i, points, presence)
            for i, hands_seen in enumerate(seen)
            for points, presence in hands_seen
        ]
        probs = np.full((len(seen), len(self.class_names)), np.nan)
        if not read:
            return probs
        inputs = self.source.inputs(
            self.model, [images[i] for i, _, _ in read], [points for _, points, _ in read]
        )
        best = np.zeros(len(seen))
        for (i, _, presence), row in zip(
            read, self._logits_to_probs(inputs, batch_size), strict=True
        ):
            sure = surety(presence, row)
            if sure > best[i]:
                best[i], probs[i] = sure, row
        return probs

    def _logits_to_probs(self, inputs: np.ndarray, batch_size: int) -> np.ndarray:
        logits = self.model.predict(inputs, batch_size=batch_size, verbose=0)
        return scores.softmax(np.asarray(logits, np.float64))

    def frame(self, warm_size: int) -> Predict:
        """Class probabilities of one image and the hand the caller found in it (with a
        finder; without one the hand is ignored), through a graph traced once and frozen.

        ``model.predict`` builds a dataset and an iterator on every call, which costs more
        than the network itself on one frame; an eager ``model(x)`` still runs Python per
        layer. A ``tf.function`` with a shape-free signature costs only the network, for any
        crop size. Freezing its weights into constants lets TensorFlow's graph optimiser fold
        and fuse across them, as benchmarks/live.py shows.

        TensorFlow has no public way to freeze a function's variables: the private
        ``convert_variables_to_constants_v2`` does it, guarded by the pin tensorflow>=2.21,<2.22
        (pyproject.toml), and this method is its only caller.
        """
        import tensorflow as tf
        from tensorflow.python.framework.convert_to_constants import (
            convert_variables_to_constants_v2,
        )

        model, source = self.model, self.source
        shape = list(source.input_shape)

        @tf.function(input_signature=[tf.TensorSpec(shape, tf.float32)])
        def probabilities(x):
            return tf.nn.softmax(model(x[None], training=False))[0]

        frozen = convert_variables_to_constants_v2(probabilities.get_concrete_function())

        def run(x: np.ndarray) -> np.ndarray:
            return frozen(tf.constant(x, tf.float32))[0].numpy()

        run(np.zeros([warm_size if side is None else side for side in shape], np.float32))
        missing = np.full(len(self.class_names), np.nan)

        def predict(rgb: np.ndarray, hand: detect.Hand | None) -> np.ndarray:
            if self.finder is None:
                return run(source.frame_input(rgb, None))
            if hand is None:
                return missing
            return run(source.frame_input(rgb, hand.landmarks))

        return predict


def load(folder: str | Path) -> Predictor:
    """The predictor of a saved model: a run's output folder, or its ``model.keras``."""
    return Predictor.of(*network.load(Path(folder).expanduser()))
