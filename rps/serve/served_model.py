"""The file MLflow runs to rebuild a logged model ("models from code"): no pickle in a run."""

import mlflow

from rps.serve.logged_model import PredictorModel

mlflow.models.set_model(PredictorModel())
