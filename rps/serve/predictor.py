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

from rps.data.crop import cut, hand_square
from rps.data.images import fit
from rps.hands import detect as hands
from rps.hands import landmarks
from rps.serve import scores

# One image, and the hand found in it if the predictor reads hands -> class probabilities.
Predict = Callable[[np.ndarray, "hands.Hand | None"], np.ndarray]


def surety(presence: float, probabilities: np.ndarray) -> float:
    """How sure a reading of one hand is: that it is a hand (the landmark model's presence
    score), times the probability of its likeliest class. With two hands in view, an idle
    hand reads as no clear gesture, the one shown to the camera as one."""
    return presence * float(np.max(probabilities))


@dataclass
class Predictor:
    """An image model takes raw RGB and crops it itself; a landmark head
    (``backbone=hand_landmarks``) takes the features of the hand the finder finds. With a
    finder, an image model sees the square around the hand instead (``roi.find=hand``).
    Whenever a finder is used, an image with no hand gets a row of NaN: no class, never a
    guess."""

    model: Any  # a Keras model: raw RGB (or landmark features) in, logits out
    class_names: list[str]  # logit i is class_names[i]
    finder: hands.HandFinder | None = None
    # Images -> their landmarks (N, 21, 3), NaN where no hand: the finder's search unless a
    # caller has them cached (the training job's test pass).
    locate: Callable[[np.ndarray], np.ndarray] | None = None

    @classmethod
    def of(cls, model, class_names: list[str]) -> Predictor:
        from rps.model import network as model_lib

        finder = hands.HandFinder() if model_lib.reads_landmarks(model) else None
        return cls(model, class_names, finder)

    def finding_hands(self) -> Predictor:
        """This predictor with a hand finder, for ``roi.find=hand``."""
        return self if self.finder else replace(self, finder=hands.HandFinder())

    @property
    def reads_landmarks(self) -> bool:
        from rps.model import network as model_lib

        return model_lib.reads_landmarks(self.model)

    @property
    def input_size(self) -> int:
        from rps.model import network as model_lib

        return model_lib.input_size(self.model)

    def probabilities(self, images, batch_size: int = 32) -> np.ndarray:
        """Class probabilities of images of any sizes, (N, classes); NaN rows: no hand.
        Where an image shows several hands, each is read and the surest reading kept."""
        if self.finder is None:
            return self._logits_to_probs(self._fitted(images), batch_size)
        if self.locate is not None:  # one hand per image, found already
            seen = [[] if np.isnan(p).any() else [(p, 1.0)] for p in self.locate(images)]
        else:
            seen = [
                [(hand.landmarks, hand.score) for hand in found]
                for found in hands.every_hand(self.finder, images)
            ]
        read = [
            (i, points, presence)
            for i, hands_seen in enumerate(seen)
            for points, presence in hands_seen
        ]
        probs = np.full((len(seen), len(self.class_names)), np.nan)
        if not read:
            return probs
        inputs = (
            landmarks.features(np.stack([points for _, points, _ in read]))
            if self.reads_landmarks
            else self._fitted(
                [cut(np.asarray(images[i]), *hand_square(points)) for i, points, _ in read]
            )
        )
        best = np.zeros(len(seen))
        for (i, _, presence), row in zip(
            read, self._logits_to_probs(inputs, batch_size), strict=True
        ):
            sure = surety(presence, row)
            if sure > best[i]:
                best[i], probs[i] = sure, row
        return probs

    def _fitted(self, images) -> np.ndarray:
        size = self.input_size
        return np.stack(
            [image if image.shape[:2] == (size, size) else fit(image, size) for image in images]
        ).astype(np.float32)

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
        and fuse across them: another fifth (efficientnet_lite0) to third (ResNet50) off each
        frame on CPU, as benchmarks/live.py shows.

        TensorFlow has no public way to freeze a function's variables: the private
        ``convert_variables_to_constants_v2`` does it, guarded by the pin tensorflow>=2.21,<2.22
        (pyproject.toml), and this method is its only caller.
        """
        import tensorflow as tf
        from tensorflow.python.framework.convert_to_constants import (
            convert_variables_to_constants_v2,
        )

        model = self.model
        reads_landmarks = self.reads_landmarks
        # One image, or for a landmark head one hand's features.
        shape: list[int | None] = [landmarks.SIZE] if reads_landmarks else [None, None, 3]

        @tf.function(input_signature=[tf.TensorSpec(shape, tf.float32)])
        def probabilities(x):
            return tf.nn.softmax(model(x[None], training=False))[0]

        frozen = convert_variables_to_constants_v2(probabilities.get_concrete_function())

        def run(x: np.ndarray) -> np.ndarray:
            return frozen(tf.constant(x, tf.float32))[0].numpy()

        # Optimise before timing.
        run(
            np.zeros(
                (landmarks.SIZE,) if reads_landmarks else (warm_size, warm_size, 3), np.float32
            )
        )
        missing = np.full(len(self.class_names), np.nan)

        def predict(rgb: np.ndarray, hand: hands.Hand | None) -> np.ndarray:
            if self.finder is None:
                return run(rgb)
            if hand is None:
                return missing
            if reads_landmarks:
                return run(landmarks.features(hand.landmarks[None])[0])
            return run(cut(rgb, *hand_square(hand.landmarks)))

        return predict


def load(folder: str | Path) -> Predictor:
    """The predictor of a saved model: a run's output folder, or its ``model.keras``."""
    from rps.model import network as model_lib

    return Predictor.of(*model_lib.load(Path(folder).expanduser()))
