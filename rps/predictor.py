"""The one predictor: raw RGB images of any size in, class probabilities out.

Every app that uses a trained model loads it here, by run id, model URI or file, so that
live.py and evaluate.py see the same model the same way. The model crops and resizes inside
(its first layer applies the training crop policy), so images go in untouched.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rps import hands, landmarks, scores, tracking
from rps.config import ModelChoice, StoreConfig, TrackingConfig
from rps.images import fit

Predict = Callable[[np.ndarray], np.ndarray]


@dataclass
class Predictor:
    """A CNN model takes raw RGB and crops it itself; a landmark head
    (``backbone=hand_landmarks``) takes the features of the hand the finder finds, and an
    image with no hand gets a row of NaN: no class, never a guess."""

    model: object  # a Keras model: raw RGB (or landmark features) in, logits out
    class_names: list[str]  # logit i is class_names[i]
    finder: hands.HandFinder | None = None

    @classmethod
    def of(cls, model, class_names: list[str]) -> Predictor:
        from rps import model as model_lib

        finder = hands.HandFinder() if model_lib.reads_landmarks(model) else None
        return cls(model, class_names, finder)

    @property
    def input_size(self) -> int:
        from rps import model as model_lib

        return model_lib.input_size(self.model)

    def probabilities(self, images, batch_size: int = 32) -> np.ndarray:
        """Class probabilities of images of any sizes, (N, classes); NaN rows: no hand."""
        if self.finder is None:
            size = self.input_size
            batch = np.stack([image if image.shape[:2] == (size, size) else fit(image, size)
                              for image in images])
            logits = self.model.predict(batch.astype(np.float32), batch_size=batch_size,
                                        verbose=0)
            return scores.softmax(np.asarray(logits, np.float64))
        points = hands.landmarks(self.finder, images)
        found = ~np.isnan(points).any(axis=(1, 2))
        probs = np.full((len(points), len(self.class_names)), np.nan)
        if found.any():
            logits = self.model.predict(landmarks.features(points[found]),
                                        batch_size=batch_size, verbose=0)
            probs[found] = scores.softmax(np.asarray(logits, np.float64))
        return probs

    def frame(self, warm_size: int) -> Predict:
        """Class probabilities of one image, through a graph traced once and frozen.

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
        # One image, or for a landmark head one hand's features.
        shape = [None, None, 3] if self.finder is None else [landmarks.SIZE]

        @tf.function(input_signature=[tf.TensorSpec(shape, tf.float32)])
        def probabilities(x):
            return tf.nn.softmax(model(x[None], training=False))[0]

        frozen = convert_variables_to_constants_v2(probabilities.get_concrete_function())

        def run(x: np.ndarray) -> np.ndarray:
            return frozen(tf.constant(x, tf.float32))[0].numpy()

        if self.finder is None:
            run(np.zeros((warm_size, warm_size, 3), dtype=np.uint8))  # optimise before timing
            return run
        run(np.zeros(landmarks.SIZE, np.float32))

        def from_hand(rgb: np.ndarray) -> np.ndarray:
            found = self.finder.hands(rgb)
            if not found:
                return np.full(len(self.class_names), np.nan)
            return run(landmarks.features(found[0].landmarks[None])[0])

        return from_hand


def load(choice: ModelChoice, store: StoreConfig, root: Path) -> Predictor:
    """The model ``choice`` names, through the loaders training wrote it for. A run id or a
    model URI is looked up in ``store`` (null: the store training uses, under ``root``)."""
    if choice.model_path:
        from rps import model as model_lib  # imports TensorFlow: only once input is valid

        return Predictor.of(*model_lib.load(Path(choice.model_path).expanduser()))
    uri = tracking.store_uri(TrackingConfig(uri=store.uri), root)
    return Predictor.of(*tracking.load_model(choice.run_id, model_uri=choice.model_uri,
                                             tracking_uri=uri))
