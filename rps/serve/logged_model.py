"""The MLflow model every run logs: an MLflow pyfunc around the one predictor.

So ``mlflow models serve`` answers raw RGB images with class probabilities for every
backbone, the landmark one included: the run carries the Keras model, its class names and,
for ``backbone=hand_landmarks``, the two hand-model files, and reloads in a fresh process
with neither the training folder nor the network. The package itself travels as the
model's code, so a served model needs rps's dependencies, not a checkout of rps.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import os
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.pyfunc import PythonModel

from rps.config.apps import ModelChoice, StoreConfig
from rps.config.job import TrackingConfig
from rps.data.images import BadImage, read_rgb
from rps.errors import first_line
from rps.features import sources
from rps.model import network
from rps.serve.predictor import Predictor
from rps.serve.scores import NO_HAND
from rps.tracking import backend, mlflow_runs

MODEL_NAME = "model"
LABEL = "label"  # the served column beside the class probabilities
IMAGE_COLUMN = "image"  # a request's base64-encoded image files, when it names its column
KERAS_ARTIFACT = "keras_model"
PACKAGE = Path(__file__).resolve().parent.parent  # rps/, which a logged model carries


class PredictorModel(PythonModel):
    """Images in, one row per image out: the probability of each class and the label,
    ``no hand`` where the finder found none. An image is an image file (JPEG, PNG, ...),
    base64-encoded, or its RGB pixels 0-255 (a batch of one size)."""

    # No type hint names both image files and pixels, and without one MLflow warns on every
    # job that it cannot validate requests; images_of does. MLflow's own opt-out.
    _skip_type_hint_validation = True

    def load_context(self, context) -> None:
        artifacts = {name: Path(path) for name, path in context.artifacts.items()}
        model, class_names = network.load(artifacts.pop(KERAS_ARTIFACT))
        self.predictor = Predictor.of(model, class_names, files=artifacts or None)

    def predict(self, context, model_input, params=None) -> pd.DataFrame:
        probs = self.predictor.probabilities(images_of(model_input))
        names = self.predictor.class_names
        table = pd.DataFrame(np.nan_to_num(probs, nan=0.0), columns=names)
        table[LABEL] = [
            NO_HAND if np.isnan(row).any() else names[int(row.argmax())] for row in probs
        ]
        return table


def images_of(model_input: Any) -> list[np.ndarray]:
    """The RGB images of a request: ``{"inputs": ["<base64 JPEG>", ...]}`` (or a column
    ``image`` of them), or ``{"inputs": <N x H x W x 3 pixels, 0-255>}``."""
    if isinstance(model_input, pd.DataFrame):
        model_input = (
            model_input[IMAGE_COLUMN] if IMAGE_COLUMN in model_input else model_input.iloc[:, 0]
        ).to_numpy()
    elif isinstance(model_input, dict):
        model_input = model_input.get(IMAGE_COLUMN, next(iter(model_input.values()), []))
    given = np.asarray(model_input)
    if given.dtype.kind in "USO":
        return [_decoded(i, item) for i, item in enumerate(given.reshape(-1))]
    pixels = given.astype(np.float32)
    if pixels.ndim != 4 or pixels.shape[-1] != 3:
        raise _bad_request(
            f"pixels must be N x H x W x 3 RGB, not an array of shape "
            f"{given.shape}; or send base64-encoded image files"
        )
    if pixels.size and pixels.max() <= 1.0 and np.any(pixels != np.round(pixels)):
        raise _bad_request(
            "the pixels are scaled to 0..1; the model takes RGB 0-255, as "
            "an image file decodes: multiply by 255, or send the image files "
            "base64-encoded"
        )
    return list(pixels)


def _decoded(index: int, item: Any) -> np.ndarray:
    data = item if isinstance(item, bytes) else str(item)
    try:
        raw = data if isinstance(data, bytes) else base64.b64decode(data, validate=True)
        return read_rgb(io.BytesIO(raw))
    except (binascii.Error, ValueError, BadImage) as err:
        reason = err.reason if isinstance(err, BadImage) else "not valid base64"
        raise _bad_request(
            f"image {index} is not a base64-encoded image file ({reason}); "
            "send each JPEG or PNG file's bytes base64-encoded"
        ) from None


def _bad_request(message: str) -> MlflowException:
    """What the server answers with HTTP 400 and the message."""
    from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

    return MlflowException(message, error_code=INVALID_PARAMETER_VALUE)


def log(
    run: mlflow_runs.Run, model, class_names: list[str], saved: Path, register: str | None
) -> None:
    """Logs ``model`` (raw RGB or, for a landmark head, hands -> logits) as the run's model,
    from ``saved``, the file network.save wrote of it: saving it again costs a second.

    Without an input example: MLflow checks one by reloading the model and running it, which
    costs every job seconds."""
    if not run.active:
        return
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    # No input schema: MLflow would hold every request to one type, and the model takes
    # both image files and pixels (images_of).
    signature = ModelSignature(
        inputs=None,
        outputs=Schema(
            [*(ColSpec("double", name) for name in class_names), ColSpec("string", LABEL)]
        ),
    )
    _no_progress_bars()
    with tempfile.TemporaryDirectory() as tmp:
        for file in (saved, saved.with_name(network.CLASSES_FILE)):
            shutil.copy2(file, tmp)
        source_files = sources.of_model(model).artifacts()
        artifacts = {KERAS_ARTIFACT: tmp, **{k: str(v) for k, v in source_files.items()}}
        mlflow.set_tracking_uri(run.uri)
        mlflow.set_experiment(experiment_id=run.experiment_id)  # where the model is filed
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="The structure of `inputs`")
            # MLflow colours its warnings, so their text starts with an escape code.
            warnings.filterwarnings("ignore", message=".*An input example was not provided")
            mlflow.models.Model.log(
                artifact_path=None,
                name=MODEL_NAME,
                flavor=mlflow.pyfunc,
                run_id=run.run_id,
                python_model=str(Path(__file__).with_name("served_model.py")),
                artifacts=artifacts,
                code_paths=[str(PACKAGE)],
                signature=signature,
                registered_model_name=register,
                metadata={"class_names": class_names},
                pip_requirements=_requirements(model),
            )
    run.log_text(json.dumps(class_names), "class_names.json")


def _no_progress_bars() -> None:
    """MLflow draws a bar per artifact copied, between the callers' log lines."""
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


def _requirements(model) -> list[str]:
    """Pinned explicitly: MLflow's inference of requirements runs the model and warns."""
    from importlib.metadata import version

    names = [
        "tensorflow",
        "keras",
        "numpy",
        "pandas",
        "opencv-python",
        "pillow",
        "hydra-core",
        "omegaconf",
        "mlflow",
    ]
    names += sources.of_model(model).requirements
    return [f"{name}=={version(name)}" for name in names]


def load(
    run_id: str | None = None, *, model_uri: str | None = None, tracking_uri: str | None = None
) -> Predictor:
    """The predictor a run logged, from a run id or any MLflow model URI (``models:/rps/3``)."""
    if (run_id is None) == (model_uri is None):
        raise backend.TrackingError("give exactly one of run_id or model_uri")
    _no_progress_bars()
    if tracking_uri:
        mlflow.set_tracking_uri(tracking_uri)
    uri = model_uri or f"runs:/{run_id}/{MODEL_NAME}"
    try:
        if run_id is not None:
            backend.client_for(mlflow.get_tracking_uri()).get_run(run_id)
        return mlflow.pyfunc.load_model(uri).unwrap_python_model().predictor
    except (MlflowException, OSError, AttributeError) as err:
        what = f"run {run_id}" if run_id else f"model {model_uri}"
        raise backend.TrackingError(
            f"cannot load the model of {what} from the tracking store "
            f"{mlflow.get_tracking_uri()}: {first_line(err)}. Check the id in `mlflow ui` "
            "(started in the project root); if the run lives in another store, point "
            "tracking.uri (or MLFLOW_TRACKING_URI) at it; and make sure the run finished "
            "(a failed run has no model)."
        ) from None


def chosen(choice: ModelChoice, store: StoreConfig, root: Path) -> Predictor:
    """The model ``choice`` names: a saved folder, or a run id or model URI looked up in
    ``store`` (null: the store training uses, under ``root``)."""
    if choice.model_path:
        return Predictor.of(*network.load(Path(choice.model_path).expanduser()))
    uri = backend.store_uri(TrackingConfig(uri=store.uri), root)
    return load(choice.run_id, model_uri=choice.model_uri, tracking_uri=uri)
