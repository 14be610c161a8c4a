"""``trainer.resume=<run id>``: continue an interrupted run from its last checkpoint.

The run is found in MLflow and goes on with its own config (from its output folder, else
the ``config/config.yaml`` it logged), in its own output folder and MLflow run. Overrides
given with the resume may only say where things are or how to spread the work: any other
would train something else than the run started, so it is refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig

from rps.config import compose
from rps.errors import ConfigError, UserError
from rps.tracking import backend, mlflow_runs
from rps.train import checkpoint

RESUME_KEY = "trainer.resume"
ALLOWED = (*mlflow_runs.PATH_KEYS, "trainer.strategy")


@dataclass(frozen=True)
class Resumed:
    run_id: str
    uri: str
    cfg: DictConfig  # the run's own config, with the overrides given now
    output_dir: Path
    tensorboard_dir: Path
    overrides: list[str]  # given with the resume


def prepare(cfg: DictConfig, overrides: list[str], root: Path) -> Resumed:
    """Checks everything before the run is touched: a bad id, a finished run or one without
    a checkpoint leaves it as it was."""
    run_id = cfg.trainer.resume
    given = [o for o in overrides if _key(o) != RESUME_KEY]
    refused = [o for o in given if not _key(o).startswith(ALLOWED)]
    if refused:
        raise ConfigError(
            f"trainer.resume continues run {run_id} with the config it started with, so it "
            f"takes no override that changes what is trained, but got {' '.join(refused)}. "
            f"Only these may change: {', '.join(k.rstrip('.') for k in ALLOWED)}. To train "
            "something else, start a new run."
        )
    settings = compose.tracking_of(cfg)
    if not settings.enabled:
        raise ConfigError(
            "trainer.resume finds the run in MLflow, which tracking.enabled=false "
            "turns off: drop tracking.enabled=false."
        )
    uri = backend.store_uri(settings, root)
    run = mlflow_runs.find_run(uri, run_id)
    if run.info.status == "FINISHED":
        raise UserError(
            f"run {run_id} is FINISHED: there is nothing to resume. Its model is "
            "logged with it; to train further, start a new run."
        )
    folder = run.data.tags.get("output_dir")
    if not folder or not checkpoint.resumable(Path(folder)):
        where = checkpoint.path(Path(folder)) if folder else "its output folder (no output_dir tag)"
        raise UserError(
            f"run {run_id} ({run.info.status}) has no checkpoint: {where} does not exist. A "
            "run saves one after every epoch, so this run stopped before its first epoch "
            "ended, or its output folder was moved or deleted: start it again."
        )
    cfg = mlflow_runs.run_config(run, uri, given, "start it again instead of resuming it")
    cfg.trainer.resume = run_id
    return Resumed(
        run_id=run_id,
        uri=uri,
        cfg=cfg,
        output_dir=Path(folder),
        tensorboard_dir=Path(run.data.tags.get("tensorboard_logdir", Path(folder) / "tensorboard")),
        overrides=given,
    )


def log_continuation(mlrun: mlflow_runs.Run, state: checkpoint.State) -> None:
    """Tags where the run resumed, and logs the checkpointed epochs that tracking missed:
    those that ended after the last write to the store and before the kill."""
    mlrun.set_tags({"resumed_after_epoch": str(state.epoch + 1)})
    logged = mlrun.logged_epochs()
    for record in state.history:
        if record["epoch"] not in logged:
            mlrun.log_epoch(record)


def _key(override: str) -> str:
    return override.lstrip("+~").split("=", 1)[0]
