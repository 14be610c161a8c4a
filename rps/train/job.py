"""One Hydra job: validate the config, load the data, build the model, then open its run, train,
test and write."""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any, cast

from omegaconf import DictConfig, OmegaConf

from rps import startup
from rps.config import compose
from rps.config.context import JobContext, validated
from rps.config.job import Config
from rps.data import dataset
from rps.errors import PARAGRAPH, Interrupted, UserError, reported, task_started
from rps.tracking import mlflow_runs, sweep
from rps.train import checkpoint, resume

log = logging.getLogger(__name__)

TENSORBOARD_DIR = "tensorboard"
FAILED = float("nan")  # a sweep job's return value when it failed


def main(cfg: DictConfig) -> float:
    """The Hydra task: returns the best validation accuracy (what sweeps optimise).

    A UserError ends a single run with a paragraph and exit status 2. In a sweep a failed job
    returns NaN instead of raising, because Hydra's sweepers stop at the first exception and
    the other jobs, and the sweep's summary, must go on; its MLflow run is FAILED.
    """
    task_started()
    ctx = JobContext.from_hydra()
    if ctx.sweep_dir is None:
        return reported(lambda: run(cfg, ctx)["best_val_accuracy"])
    try:
        return run(cfg, ctx)["best_val_accuracy"]
    except UserError as err:
        log.error("%s", err)
    except Exception:
        log.exception("job failed")
    return FAILED


def run(cfg: DictConfig, ctx: JobContext) -> dict:
    """A new run, or with ``trainer.resume`` the interrupted run it names, which goes on in
    its own output folder and MLflow run. Returns what ``metrics.json`` holds."""
    started = time.perf_counter()
    mlrun = mlflow_runs.Run()
    try:
        resumed = (
            validated(
                lambda: resume.prepare(cfg, ctx.overrides, ctx.root), ctx.output_dir, ctx.root
            )
            if cfg.trainer.resume
            else None
        )
        if resumed is not None:
            log.info("resuming run %s into %s", resumed.run_id, resumed.output_dir)
            cfg, ctx = resumed.cfg, replace(ctx, output_dir=resumed.output_dir)
        conf = validated(lambda: _checked(cfg), ctx.output_dir, ctx.root)
        startup.import_tensorflow()
        from rps.train import pipeline  # TensorFlow's, after the checks that need none

        # Whatever can refuse the input (the data, downloads, the hand models, the weights)
        # comes before the run opens: a refusal leaves no run and no output folder.
        ready = validated(lambda: pipeline.ready(conf), ctx.output_dir, ctx.root)
        # The lock comes first: a run whose process is still alive is not reopened.
        with checkpoint.lock(ctx.output_dir), _tracked(cfg, conf, ctx, resumed) as (mlrun, tb_dir):
            metrics = pipeline.trained(
                conf, ready, ctx, mlrun, tb_dir, resumed is not None, started
            )
    except KeyboardInterrupt:
        message = _interrupted(mlrun, ctx.output_dir, swept=ctx.sweep_dir is not None)
        log.warning("%s", message, extra={PARAGRAPH: True})
        raise Interrupted(message) from None
    checkpoint.remove(ctx.output_dir)
    log.info(
        "test accuracy %.4f (loss %.4f), best val accuracy %.4f; outputs in %s",
        metrics["test_accuracy"],
        metrics["test_loss"],
        metrics["best_val_accuracy"],
        ctx.output_dir,
    )
    return metrics


def _interrupted(mlrun: mlflow_runs.Run, output_dir: Path, swept: bool) -> str:
    """What Ctrl-C kept, and the command that goes on from it."""
    if swept:
        return _interrupted(mlrun, output_dir, swept=False) + (
            " The sweep stopped there: its later jobs did not run."
        )
    state = checkpoint.load(output_dir) if checkpoint.path(output_dir).exists() else None
    if state is None:
        return (
            "interrupted before the first epoch ended, so there is no checkpoint to "
            "resume from"
            + (f"; run {mlrun.run_id} is marked KILLED" if mlrun.active else "")
            + ". Start the job again."
        )
    kept = (
        f"interrupted: the checkpoint of epoch {state.epoch + 1} is kept in "
        f"{checkpoint.path(output_dir)}"
    )
    if not mlrun.active:
        return (
            f"{kept}, but trainer.resume finds runs in MLflow, which tracking.enabled=false "
            "turned off: start the job again to train it."
        )
    return (
        f"{kept} and run {mlrun.run_id} is marked KILLED. To go on from there: "
        f"python run.py trainer.resume={mlrun.run_id}"
    )


def _checked(cfg: DictConfig) -> Config:
    """The config, refused (before any run opens) where a value is out of range or the data
    folder is not a dataset."""
    conf = compose.to_object(cfg)
    dataset.check(conf.data)
    return conf


@contextmanager
def _tracked(
    cfg: DictConfig, conf: Config, ctx: JobContext, resumed: resume.Resumed | None
) -> Iterator[tuple[mlflow_runs.Run, Path]]:
    """The job's MLflow run, opened with its params and config (a resumed run is reopened
    as it was), and its TensorBoard folder."""
    if resumed is not None:
        with mlflow_runs.reopened_run(resumed.uri, resumed.run_id) as mlrun:
            mlrun.set_tags({"resume_overrides": json.dumps(resumed.overrides)})
            yield mlrun, resumed.tensorboard_dir
        return
    swept = sweep.info(ctx.sweep_dir)
    name = mlflow_runs.run_name(ctx.overrides, swept.varying if swept else None)
    tb_dir = ctx.output_dir / TENSORBOARD_DIR / re.sub(r"[^\w.=,+-]", "_", name)[:120]
    tags = {
        "overrides": json.dumps(ctx.overrides),
        "experiment": str(cfg.get("experiment") or "none"),
        "sweep_id": swept.parent_run_id if swept else "",
        "job_num": "" if ctx.job_num is None else str(ctx.job_num),
        "output_dir": str(ctx.output_dir),
        "tensorboard_logdir": str(tb_dir),
        **mlflow_runs.git_state(ctx.root),
    }
    with mlflow_runs.job_run(
        conf.tracking, ctx.root, name, tags, swept.parent_run_id if swept else None
    ) as mlrun:
        resolved = cast(
            dict[str, Any],  # a DictConfig's container is a dict
            OmegaConf.to_container(cfg, resolve=True, enum_to_str=True),
        )
        params = mlflow_runs.flatten(resolved)
        for key in mlflow_runs.DATA_KEYS:  # where the files are, whatever the working directory
            if params.get(key) not in (None, "None"):
                params[key] = str(Path(params[key]).expanduser().resolve())
        mlrun.log_params(params)
        mlrun.log_text(OmegaConf.to_yaml(resolved), mlflow_runs.LOGGED_CONFIG)
        yield mlrun, tb_dir
