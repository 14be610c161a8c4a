"""One Hydra job: track it, validate the config, load data, train, test, write and log outputs."""

from __future__ import annotations

import json
import logging
import re
import time
from dataclasses import dataclass, replace
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from rps import cache as cache_lib
from rps import checkpoint, config, interrupt, plots, resume, sweep, tensorboard, tracking, train
from rps import data as data_lib
from rps import model as model_lib
from rps.errors import UserError, report

log = logging.getLogger("rps")

METRICS_FILE = "metrics.json"
PLOTS_DIR = "plots"
TENSORBOARD_DIR = "tensorboard"
FAILED = float("nan")  # a sweep job's return value when it failed


@dataclass(frozen=True)
class JobContext:
    """What a job needs to know about Hydra, gathered in one place so the rest is testable."""

    output_dir: Path
    root: Path  # the project root: the folder that holds conf/, mlflow.db and mlruns/
    overrides: list[str]
    sweep_dir: Path | None = None  # set in multirun
    job_num: int | None = None

    @classmethod
    def from_hydra(cls) -> JobContext:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        hc = HydraConfig.get()
        multirun = hc.mode == RunMode.MULTIRUN
        return cls(output_dir=Path(hc.runtime.output_dir), root=project_root(hc),
                   overrides=list(hc.overrides.task),
                   sweep_dir=Path(hc.sweep.dir).absolute() if multirun else None,
                   job_num=hc.job.num if multirun else None)


def project_root(hydra_cfg) -> Path:
    """The folder above the primary config directory, whatever the working directory."""
    for source in hydra_cfg.runtime.config_sources:
        if source.provider == "main" and source.path.startswith("file://"):
            return Path(source.path.removeprefix("file://")).resolve().parent
    return Path.cwd()


def main(cfg: DictConfig) -> float:
    """The Hydra task: returns the best validation accuracy (what sweeps optimise).

    A UserError ends a single run with a paragraph and exit status 2. In a sweep a failed job
    returns NaN instead of raising, because Hydra's sweepers stop at the first exception and
    the other jobs, and the sweep's summary, must go on; its MLflow run is FAILED.
    """
    ctx = JobContext.from_hydra()
    try:
        return run(cfg, ctx).metrics["best_val_accuracy"]
    except UserError as err:
        log.error("%s", err)
        if ctx.sweep_dir is not None:
            return FAILED
        report(err)
        raise SystemExit(2) from None
    except Exception:
        if ctx.sweep_dir is None:
            raise
        log.exception("job failed")
        return FAILED


def run(cfg: DictConfig, ctx: JobContext) -> train.Result:
    """A new run, or with ``trainer.resume`` the interrupted run it names, which goes on in
    its own output folder and MLflow run."""
    started = time.perf_counter()
    resumed = resume.prepare(cfg, ctx.overrides, ctx.root) if cfg.trainer.resume else None
    if resumed is None:
        swept = sweep.info(ctx.sweep_dir)
        name = tracking.run_name(ctx.overrides, swept.varying if swept else None)
        tb_dir = ctx.output_dir / TENSORBOARD_DIR / _safe(name)
        tags = {
            "overrides": json.dumps(ctx.overrides),
            "experiment": str(cfg.get("experiment") or "none"),
            "sweep_id": swept.parent_run_id if swept else "",
            "job_num": "" if ctx.job_num is None else str(ctx.job_num),
            "output_dir": str(ctx.output_dir),
            "tensorboard_logdir": str(tb_dir),
            **tracking.git_state(ctx.root),
        }
        opened = tracking.job_run(config.tracking_of(cfg), ctx.root, name, tags,
                                  swept.parent_run_id if swept else None)
    else:
        log.info("resuming run %s into %s", resumed.run_id, resumed.output_dir)
        cfg, tb_dir = resumed.cfg, resumed.tensorboard_dir
        ctx = replace(ctx, output_dir=resumed.output_dir)
        opened = tracking.reopened_run(resumed.uri, resumed.run_id)
    # The lock comes first: a run whose process is still alive is not reopened.
    with checkpoint.lock(ctx.output_dir), opened as mlrun:
        if resumed is None:
            resolved = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
            mlrun.log_params(tracking.flatten(resolved))
            mlrun.log_text(OmegaConf.to_yaml(resolved), "config/config.yaml")
        else:
            resume.log_continuation(mlrun, resumed)
        conf = config.to_object(cfg)
        store = cache_lib.of(conf.cache)
        data = data_lib.load(conf.data, conf.backbone.input_size, conf.trainer.seed, store)
        callbacks = [tensorboard.callback(tb_dir),
                     tensorboard.AugmentedImages(data.train.images, conf.aug, tb_dir,
                                                 conf.trainer.seed)]
        ctrl_c = interrupt.CtrlC()
        with ctrl_c.installed():
            result = train.fit(conf, data, callbacks=[*callbacks, ctrl_c],
                               on_epoch=mlrun.log_epoch, cache=store,
                               checkpoints=ctx.output_dir,
                               resume=resumed.state if resumed else None)
        # After a resume, the times count the work kept, not the epochs lost to the kill.
        result.metrics["total_seconds"] = time.perf_counter() - started + (
            resumed.state.seconds if resumed else 0.0)
        _write_outputs(result, data, ctx.output_dir)
        mlrun.log_metrics(final_metrics(result.metrics))
        mlrun.log_artifact(ctx.output_dir / METRICS_FILE)
        mlrun.log_artifact(ctx.output_dir / PLOTS_DIR, PLOTS_DIR)
        mlrun.log_artifact(ctx.output_dir / ".hydra", "hydra")
        mlrun.log_model(result.model, data.class_names, data.test.images[:1, ::4, ::4],
                        conf.tracking.register)
    checkpoint.remove(ctx.output_dir)
    log.info("test accuracy %.4f (loss %.4f), best val accuracy %.4f; outputs in %s",
             result.metrics["test_accuracy"], result.metrics["test_loss"],
             result.metrics["best_val_accuracy"], ctx.output_dir)
    return result


def final_metrics(metrics: dict) -> dict[str, float]:
    images = metrics["num_train"] * metrics["epochs_run"]
    final = {
        "test/accuracy": metrics["test_accuracy"],
        "test/loss": metrics["test_loss"],
        "val/best_accuracy": metrics["best_val_accuracy"],
        "val/best_epoch": metrics["best_epoch"],
        "time/train_s": metrics["train_seconds"],
        "time/features_s": metrics["features_seconds"],
        "time/total_s": metrics["total_seconds"],
        "time/images_per_s": images / max(metrics["train_seconds"], 1e-9),
        "replicas": metrics["replicas"],
    }
    for name, scores in metrics["per_class"].items():
        final[f"test/f1/{name}"] = scores["f1"]
    return final


def _write_outputs(result: train.Result, data: data_lib.Data, out: Path) -> None:
    """Everything lands on disk before it is logged, so a tracking failure loses nothing."""
    model_lib.save(result.model, data.class_names, out)
    (out / METRICS_FILE).write_text(json.dumps(result.metrics, indent=2))
    plots.test_figures(result.metrics, data, out / PLOTS_DIR)
    plots.learning_curves(result.history, out / PLOTS_DIR / "learning_curves.png")


def _safe(name: str) -> str:
    return re.sub(r"[^\w.=,+-]", "_", name)[:120]
