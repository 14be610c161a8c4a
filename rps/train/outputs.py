"""What a finished model leaves behind, for a training job and an ensemble alike: its files
in the output folder, then the same files, its scores and the model in its MLflow run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from rps.model import network
from rps.serve import logged_model, scores
from rps.tracking import plots

if TYPE_CHECKING:
    import keras

    from rps.data.splits import Data
    from rps.tracking.mlflow_runs import Run

METRICS_FILE = "metrics.json"
PLOTS_DIR = "plots"
# metrics.json's keys under the names MLflow shows, where a model has them.
FINAL_NAMES = {
    "test_accuracy": "test/accuracy",
    "test_loss": "test/loss",
    "best_val_accuracy": "val/best_accuracy",
    "best_epoch": "val/best_epoch",
    "train_seconds": "time/train_s",
    "features_seconds": "time/features_s",
    "total_seconds": "time/total_s",
    "replicas": "replicas",
}


def final_metrics(metrics: dict) -> dict[str, float]:
    """A model's scores as its run logs them; an ensemble's also its members' mean and worst."""
    final = {name: metrics[key] for key, name in FINAL_NAMES.items() if key in metrics}
    if "train_seconds" in metrics:
        images = metrics["num_train"] * metrics["epochs_run"]
        final["time/images_per_s"] = images / max(metrics["train_seconds"], 1e-9)
    for name, per_class in metrics["per_class"].items():
        final[f"test/f1/{name}"] = per_class["f1"]
    final.update(scores.members_scores(metrics.get("members_test_accuracy", [])))
    return final


def publish(
    folder: Path,
    mlrun: Run,
    model: keras.Model,
    metrics: dict,
    data: Data,
    register: str | None,
    history: list[dict] | None = None,
) -> None:
    """Everything lands on disk before it is logged, so a tracking failure loses nothing."""
    saved = network.save(model, data.class_names, folder)
    (folder / METRICS_FILE).write_text(json.dumps(metrics, indent=2))
    plots.test_figures(metrics, data, folder / PLOTS_DIR)
    if history:
        plots.learning_curves(history, folder / PLOTS_DIR / "learning_curves.png")
    mlrun.log_metrics(final_metrics(metrics))
    mlrun.log_artifact(folder / METRICS_FILE)
    mlrun.log_artifact(folder / PLOTS_DIR, PLOTS_DIR)
    logged_model.log(mlrun, model, data.class_names, saved, register)
