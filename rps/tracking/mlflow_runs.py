"""MLflow tracking: one run per job that always closes, and models loaded back from runs.

All calls go through an explicit ``MlflowClient`` bound to one store, so jobs of a sweep
that share a process never see each other's active run or tracking URI.
"""

from __future__ import annotations

import json
import logging
import math
import subprocess
import tempfile
import traceback
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from rps.config.job import TrackingConfig
from rps.errors import ConfigError, UserError, first_line
from rps.tracking.backend import TrackingError, client_for, experiment_id, store_uri, ui_link

log = logging.getLogger(__name__)

PARENT_TAG = "mlflow.parentRunId"
RUN_NAME_TAG = "mlflow.runName"
# MLflow's limits: 100 params per batch call, 6000 characters per param value.
PARAMS_PER_BATCH = 100
PARAM_VALUE_CHARS = 6000
METRICS_PER_BATCH = 1000
# Keras' epoch logs, under the names the runs use.
EPOCH_METRICS = {
    "loss": "train/loss",
    "accuracy": "train/accuracy",
    "val_loss": "val/loss",
    "val_accuracy": "val/accuracy",
    "lr": "lr",
}
# Overrides that locate files rather than choose a variant: left out of run names.
DATA_KEYS = ("data.root", "data.tfds_dir")
PATH_KEYS = (*DATA_KEYS, "cache.dir", "tracking.", "hydra.")
# Where a run keeps its config: in its output folder, and logged with it.
HYDRA_CONFIG = Path(".hydra") / "config.yaml"
LOGGED_CONFIG = "config/config.yaml"


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Dotted keys (``head.units``) with string values, as MLflow stores params."""
    flat: dict[str, str] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = str(value)[:PARAM_VALUE_CHARS]
    return flat


def run_name(overrides: list[str], varying: list[str] | None = None) -> str:
    """What the job ran, e.g. ``head=deep,aug=strong``: in a sweep, the swept keys;
    otherwise, or where none varies, the overrides but those that locate files; where
    those are all there is, the data's location (``data.root=/x``)."""
    pairs = [o.lstrip("+~") for o in overrides]
    kept = (
        [p for p in pairs if p.split("=", 1)[0] in (varying or ())]
        or [p for p in pairs if not p.startswith(PATH_KEYS)]
        or [p for p in pairs if p.startswith(DATA_KEYS)]
    )
    return ",".join(kept) or "defaults"


def git_state(root: Path) -> dict[str, str]:
    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=root, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()

    try:
        return {
            "git_commit": git("rev-parse", "HEAD"),
            "git_dirty": str(bool(git("status", "--porcelain"))).lower(),
        }
    except (OSError, subprocess.SubprocessError):
        return {"git_commit": "unknown", "git_dirty": "unknown"}


@dataclass(frozen=True)
class DatasetSplit:
    digest: str  # of the split's content
    images: str  # their array's type and shape
    classes: list[str]
    counts: dict[str, int]  # images per class


DIGEST_CHARS = 12  # MLflow shows a dataset's digest in full; a short one reads as an id


@dataclass
class Run:
    """One MLflow run of one job; with no client, tracking is off and every call is a no-op."""

    client: Any = None
    run_id: str | None = None
    uri: str = ""
    experiment_id: str = ""

    @property
    def active(self) -> bool:
        return self.client is not None

    def set_tags(self, tags: Mapping[str, str]) -> None:
        if self.active:
            from mlflow.entities import RunTag

            self.client.log_batch(self.run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def log_params(self, params: Mapping[str, str]) -> None:
        if not self.active:
            return
        from mlflow.entities import Param

        items = [Param(k, v) for k, v in sorted(params.items())]
        for start in range(0, len(items), PARAMS_PER_BATCH):
            self.client.log_batch(self.run_id, params=items[start : start + PARAMS_PER_BATCH])

    def log_metrics(self, metrics: Mapping[str, float], step: int = 0) -> None:
        if not self.active:
            return
        from mlflow.entities import Metric

        now = _now_ms()
        items = [
            Metric(k, float(v), now, step)
            for k, v in metrics.items()
            if v is not None and math.isfinite(float(v))
        ]
        for start in range(0, len(items), METRICS_PER_BATCH):
            self.client.log_batch(self.run_id, metrics=items[start : start + METRICS_PER_BATCH])

    def log_epoch(self, record: Mapping[str, Any]) -> None:
        """Per-epoch hook for training; the epoch number is the step, across both stages."""
        metrics = {name: record[key] for key, name in EPOCH_METRICS.items() if key in record}
        metrics["stage"] = record.get("stage", 1)
        self.log_metrics(metrics, step=int(record["epoch"]))

    def logged_epochs(self) -> set[int]:
        """The epochs the run holds: each epoch's metrics are one batch, written whole."""
        if not self.active:
            return set()
        return {m.step for m in self.client.get_metric_history(self.run_id, "stage")}

    def log_artifact(self, path: Path, folder: str | None = None) -> None:
        if self.active and path.exists():
            if path.is_dir():
                self.client.log_artifacts(self.run_id, str(path), folder)
            else:
                self.client.log_artifact(self.run_id, str(path), folder)

    def log_datasets(self, name: str, source: str, splits: Mapping[str, DatasetSplit]) -> None:
        """Each split as an input of the run, which MLflow's UI lists under Datasets."""
        if not self.active:
            return
        from mlflow.entities import Dataset, DatasetInput, InputTag

        self.client.log_inputs(
            self.run_id,
            datasets=[
                DatasetInput(
                    Dataset(
                        name=f"{name} {split}",
                        digest=info.digest[:DIGEST_CHARS],
                        source_type="local" if source.startswith("/") else "tfds",
                        source=json.dumps({"uri": source}),
                        schema=json.dumps({"images": info.images, "classes": info.classes}),
                        profile=json.dumps(
                            {"num_rows": sum(info.counts.values()), "per_class": info.counts}
                        ),
                    ),
                    tags=[InputTag("mlflow.data.context", split)],
                )
                for split, info in splits.items()
            ],
        )

    def log_text(self, text: str, name: str) -> None:
        if self.active:
            self.client.log_text(self.run_id, text, name)

    def finish(self, status: str) -> None:
        if self.active:
            self.client.set_terminated(self.run_id, status=status)


def _now_ms() -> int:
    import time

    return int(time.time() * 1000)


@contextmanager
def job_run(
    cfg: TrackingConfig,
    root: Path,
    name: str,
    tags: Mapping[str, str],
    parent_run_id: str | None = None,
) -> Iterator[Run]:
    """Open one run and close it whatever happens: FINISHED, FAILED (with the error as an
    artifact) or KILLED on Ctrl-C. Metrics are logged as they come, so a failure loses
    nothing already logged."""
    if not cfg.enabled:
        yield Run()
        return
    uri = store_uri(cfg, root)
    client = client_for(uri)
    tags = {RUN_NAME_TAG: name, **tags, **({PARENT_TAG: parent_run_id} if parent_run_id else {})}
    experiment = experiment_id(client, cfg.experiment, uri)
    run = client.create_run(experiment, run_name=name, tags=dict(tags))
    tracked = Run(client=client, run_id=run.info.run_id, uri=uri, experiment_id=experiment)
    log.info(
        "run %s (%s) in %s; in mlflow ui: %s",
        tracked.run_id,
        name,
        uri,
        ui_link(uri, experiment, tracked.run_id),
    )
    with _closing(tracked):
        yield tracked


def find_run(uri: str, run_id: str):
    from mlflow.exceptions import MlflowException

    try:
        return client_for(uri).get_run(run_id)
    except MlflowException as err:
        raise TrackingError(
            f"no run {run_id} in the tracking store {uri}: {first_line(err)}. Check the id "
            "in `mlflow ui` (started in the project root); if the run lives in another "
            "store, point tracking.uri (or MLFLOW_TRACKING_URI) at it."
        ) from None


@contextmanager
def reopened_run(uri: str, run_id: str) -> Iterator[Run]:
    """An interrupted run, RUNNING again and closed as ``job_run`` closes a new one. Its
    name, tags (a sweep's parent among them), params and metrics stay as they were."""
    client = client_for(uri)
    run = client.get_run(run_id)
    if "error" in run.data.tags:  # what stopped it before is no longer its state
        client.delete_tag(run_id, "error")
    client.update_run(run_id, status="RUNNING")
    tracked = Run(client=client, run_id=run_id, uri=uri, experiment_id=run.info.experiment_id)
    log.info("run %s reopened in %s", run_id, uri)
    with _closing(tracked):
        yield tracked


@contextmanager
def _closing(tracked: Run) -> Iterator[None]:
    try:
        yield
    except KeyboardInterrupt:
        tracked.finish("KILLED")
        raise
    except BaseException as err:
        tracked.log_text("".join(traceback.format_exception(err)), "error.txt")
        tracked.set_tags({"error": f"{type(err).__name__}: {err}"[:5000]})
        tracked.finish("FAILED")
        raise
    else:
        tracked.finish("FINISHED")


def run_config(run, uri: str, given: Sequence[str], fix: str) -> DictConfig:
    """The config a run trained with: its stored values, typed by the schema of its own
    choices (data and optimizer options pick subclasses), then the overrides ``given`` now.
    Needs Hydra initialised with rps's conf/. ``fix`` ends the error when it fails."""
    from hydra import compose
    from hydra.errors import HydraException

    run_id = run.info.run_id
    original = json.loads(run.data.tags.get("overrides", "[]"))
    folder = run.data.tags.get("output_dir")
    try:
        typed = compose(config_name="config", overrides=original)
        stored = _stored(run_id, Path(folder) if folder else None, uri, fix)
        return _mapping(
            OmegaConf.merge(typed, stored, OmegaConf.from_dotlist([o.lstrip("+") for o in given])),
            f"run {run_id}'s config",
        )
    except (HydraException, OmegaConfBaseException) as err:
        raise ConfigError(
            f"run {run_id}'s config no longer composes with this version of rps "
            f"({first_line(err)}): {fix}."
        ) from None


def _stored(run_id: str, folder: Path | None, uri: str, fix: str) -> DictConfig:
    if folder is not None and (folder / HYDRA_CONFIG).is_file():
        return _mapping(OmegaConf.load(folder / HYDRA_CONFIG), str(folder / HYDRA_CONFIG))
    from mlflow.exceptions import MlflowException

    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = client_for(uri).download_artifacts(run_id, LOGGED_CONFIG, tmp)
        except MlflowException as err:
            local = folder / HYDRA_CONFIG if folder is not None else "an output_dir tag"
            raise UserError(
                f"run {run_id} has neither {local} nor a logged {LOGGED_CONFIG} "
                f"({first_line(err)}), so its config is unknown: {fix}."
            ) from None
        return _mapping(OmegaConf.load(path), f"run {run_id}'s {LOGGED_CONFIG}")


def _mapping(cfg: DictConfig | ListConfig, what: str) -> DictConfig:
    if not isinstance(cfg, DictConfig):
        raise ConfigError(
            f"{what} is a list, not a config of keys and values: it was edited "
            "or damaged. Start the run again."
        )
    return cfg
