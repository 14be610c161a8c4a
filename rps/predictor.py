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

from rps import scores, tracking
from rps.config import ModelChoice, StoreConfig, TrackingConfig

Predict = Callable[[np.ndarray], np.ndarray]


@dataclass
class Predictor:
    model: object  # a Keras model: raw RGB in, logits out
    class_names: list[str]  # logit i is class_names[i]

    @property
    def input_size(self) -> int:
        from rps import model as model_lib

        return model_lib.input_size(self.model)

    def probabilities(self, images: np.ndarray, batch_size: int = 32) -> np.ndarray:
        """Class probabilities of a batch of equal-size images (N, H, W, 3)."""
        logits = self.model.predict(np.asarray(images, np.float32), batch_size=batch_size,
                                    verbose=0)
        return scores.softmax(np.asarray(logits, np.float64))

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

        @tf.function(input_signature=[tf.TensorSpec([None, None, 3], tf.float32)])
        def probabilities(rgb):
            return tf.nn.softmax(model(rgb[None], training=False))[0]

        frozen = convert_variables_to_constants_v2(probabilities.get_concrete_function())

        def predict(rgb: np.ndarray) -> np.ndarray:
            return frozen(tf.constant(rgb, tf.float32))[0].numpy()

        predict(np.zeros((warm_size, warm_size, 3), dtype=np.uint8))  # optimise before timing
        return predict


def load(choice: ModelChoice, store: StoreConfig, root: Path) -> Predictor:
    """The model ``choice`` names, through the loaders training wrote it for. A run id or a
    model URI is looked up in ``store`` (null: the store training uses, under ``root``)."""
    if choice.model_path:
        from rps import model as model_lib  # imports TensorFlow: only once input is valid

        return Predictor(*model_lib.load(Path(choice.model_path).expanduser()))
    uri = tracking.store_uri(TrackingConfig(uri=store.uri), root)
    return Predictor(*tracking.load_model(choice.run_id, model_uri=choice.model_uri,
                                          tracking_uri=uri))
