"""The MLflow model every run logs: an MLflow pyfunc around the one predictor.

So ``mlflow models serve`` answers raw RGB images with class probabilities for every
backbone, the landmark one included: the run carries the Keras model, its class names and,
for ``backbone=hand_landmarks``, the two hand-model files, and reloads in a fresh process
with neither the training folder nor the network. The package itself travels as the
model's code, so a served model needs rps's dependencies, not a checkout of rps.
"""

from __future__ import annotations

import json
import os
import tempfile
import warnings
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException

from rps import hands, tracking
from rps import model as model_lib
from rps.config import ModelChoice, StoreConfig, TrackingConfig
from rps.errors import first_line
from rps.predictor import Predictor
from rps.scores import NO_HAND

MODEL_NAME = "model"
LABEL = "label"  # the served column beside the class probabilities
KERAS_ARTIFACT = "keras_model"
PACKAGE = Path(__file__).resolve().parent


class PredictorModel(mlflow.pyfunc.PythonModel):
    """Images in (a batch of one size, any size, RGB 0-255), one row per image out: the
    probability of each class and the label, ``no hand`` where the finder found none."""

    def load_context(self, context) -> None:
        artifacts = {name: Path(path) for name, path in context.artifacts.items()}
        model, class_names = model_lib.load(artifacts.pop(KERAS_ARTIFACT))
        finder = hands.HandFinder(artifacts) if artifacts else None
        self.predictor = Predictor(model, class_names, finder)

    def predict(self, context, model_input: np.ndarray, params=None) -> pd.DataFrame:
        probs = self.predictor.probabilities(list(np.asarray(model_input, np.float32)))
        names = self.predictor.class_names
        table = pd.DataFrame(np.nan_to_num(probs, nan=0.0), columns=names)
        table[LABEL] = [NO_HAND if np.isnan(row).any() else names[int(row.argmax())]
                        for row in probs]
        return table


def log(run: tracking.Run, model, class_names: list[str], example: np.ndarray,
        register: str | None) -> None:
    """Logs ``model`` (raw RGB or, for a landmark head, hands -> logits) as the run's model."""
    if not run.active:
        return
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema, TensorSpec

    signature = ModelSignature(
        inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, -1, -1, 3))]),
        outputs=Schema([*(ColSpec("double", name) for name in class_names),
                        ColSpec("string", LABEL)]),
    )
    _no_progress_bars()
    with tempfile.TemporaryDirectory() as tmp:
        artifacts = {KERAS_ARTIFACT: str(model_lib.save(model, class_names, Path(tmp)).parent)}
        if model_lib.reads_landmarks(model):
            artifacts.update({name: str(path) for name, path in hands.model_files().items()})
        mlflow.set_tracking_uri(run.uri)
        mlflow.set_experiment(experiment_id=run.experiment_id)  # where the model is filed
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="The structure of `inputs`")
            mlflow.models.Model.log(
                artifact_path=None, name=MODEL_NAME, flavor=mlflow.pyfunc, run_id=run.run_id,
                python_model=str(PACKAGE / "served_model.py"), artifacts=artifacts,
                code_paths=[str(PACKAGE)], signature=signature,
                input_example=example.astype(np.float32), registered_model_name=register,
                metadata={"class_names": class_names}, pip_requirements=_requirements(model))
    run.log_text(json.dumps(class_names), "class_names.json")


def _no_progress_bars() -> None:
    """MLflow draws a bar per artifact copied, between the callers' log lines."""
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


def _requirements(model) -> list[str]:
    """Pinned explicitly: MLflow's inference of requirements runs the model and warns."""
    from importlib.metadata import version

    names = ["tensorflow", "keras", "numpy", "pandas", "opencv-python", "pillow", "hydra-core",
             "omegaconf", "mlflow"]
    if model_lib.reads_landmarks(model):
        names.append("ai-edge-litert")
    return [f"{name}=={version(name)}" for name in names]


def load(run_id: str | None = None, *, model_uri: str | None = None,
         tracking_uri: str | None = None) -> Predictor:
    """The predictor a run logged, from a run id or any MLflow model URI (``models:/rps/3``)."""
    if (run_id is None) == (model_uri is None):
        raise tracking.TrackingError("give exactly one of run_id or model_uri")
    _no_progress_bars()
    if tracking_uri:
        mlflow.set_tracking_uri(tracking_uri)
    uri = model_uri or f"runs:/{run_id}/{MODEL_NAME}"
    try:
        if run_id is not None:
            tracking.client_for(mlflow.get_tracking_uri()).get_run(run_id)
        return mlflow.pyfunc.load_model(uri).unwrap_python_model().predictor
    except (MlflowException, OSError, AttributeError) as err:
        what = f"run {run_id}" if run_id else f"model {model_uri}"
        raise tracking.TrackingError(
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
        return Predictor.of(*model_lib.load(Path(choice.model_path).expanduser()))
    uri = tracking.store_uri(TrackingConfig(uri=store.uri), root)
    return load(choice.run_id, model_uri=choice.model_uri, tracking_uri=uri)
