"""One Hydra job: track it, validate the config, load data, train, test, write and log outputs."""

from __future__ import annotations

import functools
import json
import logging
import re
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from omegaconf import DictConfig, OmegaConf

from rps import cache as cache_lib
from rps import (
    checkpoint,
    config,
    evaluate,
    interrupt,
    plots,
    resume,
    sweep,
    tensorboard,
    tracking,
    train,
)
from rps import data as data_lib
from rps import model as model_lib
from rps.config import Config
from rps.errors import UserError, report

log = logging.getLogger("rps")

METRICS_FILE = "metrics.json"
PLOTS_DIR = "plots"
TENSORBOARD_DIR = "tensorboard"
FAILED = float("nan")  # a sweep job's return value when it failed
# What an average of several members keeps of each, and what it sums over them.
MEMBER_KEYS = ("seed", "test_accuracy", "best_val_accuracy", "best_epoch", "epochs_run",
               "total_seconds")
SUMMED_KEYS = ("epochs_run", "train_seconds", "features_seconds", "total_seconds")


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
            mlrun.set_tags({"resume_overrides": json.dumps(resumed.overrides)})
        conf = config.to_object(cfg)
        store = cache_lib.of(conf.cache)
        ctrl_c = interrupt.CtrlC()
        results = []
        with ctrl_c.installed():
            for member in members(conf, ctx.output_dir, tb_dir):
                # Only the last member's data is kept: every member's test split is the same.
                member_result, data = _train(member, store, mlrun, resumed is not None, ctrl_c)
                results.append(member_result)
        result = results[0] if len(results) == 1 else _average(results, data, conf)
        _write_outputs(result, results, data, ctx.output_dir)
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


@dataclass(frozen=True)
class Member:
    """One model a job trains: its only one, or member ``index`` of ``trainer.members``."""

    index: int
    conf: Config  # member i trains with trainer.seed + i
    folder: Path  # where it checkpoints; of several, where it saves its model and metrics
    tensorboard_dir: Path
    prefix: str  # of its metric names in MLflow


def members(conf: Config, output_dir: Path, tb_dir: Path) -> list[Member]:
    count = conf.trainer.members
    if count == 1:
        return [Member(0, conf, output_dir, tb_dir, "")]
    return [Member(i, replace(conf, trainer=replace(conf.trainer, seed=conf.trainer.seed + i)),
                   output_dir / checkpoint.MEMBERS_DIR / str(i), tb_dir / f"member{i}",
                   f"member{i}/")
            for i in range(count)]


def _train(member: Member, store: cache_lib.ArrayCache | None, mlrun: tracking.Run,
           resuming: bool, ctrl_c: interrupt.CtrlC) -> tuple[train.Result, data_lib.Data]:
    """Trains one member exactly as a job of one model with its seed would. Resuming, a
    finished member is reloaded, and an interrupted one goes on from its checkpoint."""
    started = time.perf_counter()
    conf = member.conf
    data = data_lib.load(conf.data, conf.backbone.input_size, conf.trainer.seed, store)
    if resuming and checkpoint.finished(member.folder):
        log.info("member %d finished before the interruption: keeping its model", member.index)
        model, _ = model_lib.load(member.folder)
        metrics = json.loads((member.folder / METRICS_FILE).read_text())
        logits = model.predict(data.test.images, batch_size=conf.trainer.batch_size, verbose=0)
        return train.Result(model, metrics, logits, metrics["history"]), data
    state = checkpoint.load(member.folder) if resuming else None
    if state is not None:
        resume.log_continuation(mlrun, state, member.prefix)
    callbacks = [tensorboard.callback(member.tensorboard_dir),
                 tensorboard.AugmentedImages(data.train.images, conf.aug,
                                             member.tensorboard_dir, conf.trainer.seed),
                 ctrl_c]
    result = train.fit(conf, data, callbacks=callbacks,
                       on_epoch=functools.partial(mlrun.log_epoch, prefix=member.prefix),
                       cache=store, checkpoints=member.folder, resume=state)
    # After a resume, the times count the work kept, not the epochs lost to the kill.
    result.metrics["total_seconds"] = time.perf_counter() - started + (
        state.seconds if state is not None else 0.0)
    result.metrics["seed"] = conf.trainer.seed
    if conf.trainer.members > 1:
        model_lib.save(result.model, data.class_names, member.folder)
        (member.folder / METRICS_FILE).write_text(json.dumps(result.metrics, indent=2))
        checkpoint.finish(member.folder)
    return result, data


def _average(results: list[train.Result], data: data_lib.Data, conf: Config) -> train.Result:
    """The members' average logits as one model, tested like a single one: on the mean of
    the test logits each member already computed, which is what the model outputs. Its
    validation accuracy is the members' mean: each member validated on its own seed's slice."""
    started = time.perf_counter()
    model = model_lib.average([r.model for r in results],
                              f"rps_{conf.backbone.name.value}_x{len(results)}")
    logits = np.mean([r.test_logits for r in results], axis=0)
    each = [r.metrics for r in results]
    metrics = {
        **evaluate.report(logits, data),
        "best_val_accuracy": float(np.mean([m["best_val_accuracy"] for m in each])),
        "members": [{key: m[key] for key in MEMBER_KEYS} for m in each],
        "members_test_accuracy": [m["test_accuracy"] for m in each],
        **{key: sum(m[key] for m in each) for key in SUMMED_KEYS},
        **{key: each[0][key] for key in ("num_train", "num_val", "num_test", "replicas")},
    }
    metrics["total_seconds"] += time.perf_counter() - started
    return train.Result(model, metrics, logits)


def final_metrics(metrics: dict) -> dict[str, float]:
    """A job's scores; of several members, the average's, with each member's beside."""
    images = metrics["num_train"] * metrics["epochs_run"]
    final = {
        "test/accuracy": metrics["test_accuracy"],
        "test/loss": metrics["test_loss"],
        "val/best_accuracy": metrics["best_val_accuracy"],
        "time/train_s": metrics["train_seconds"],
        "time/features_s": metrics["features_seconds"],
        "time/total_s": metrics["total_seconds"],
        "time/images_per_s": images / max(metrics["train_seconds"], 1e-9),
        "replicas": metrics["replicas"],
    }
    if "best_epoch" in metrics:
        final["val/best_epoch"] = metrics["best_epoch"]
    for name, scores in metrics["per_class"].items():
        final[f"test/f1/{name}"] = scores["f1"]
    for i, member in enumerate(metrics.get("members", [])):
        final.update({f"member{i}/test/accuracy": member["test_accuracy"],
                      f"member{i}/val/best_accuracy": member["best_val_accuracy"],
                      f"member{i}/val/best_epoch": member["best_epoch"]})
    final.update(evaluate.members_scores(metrics.get("members_test_accuracy", [])))
    return final


def _write_outputs(result: train.Result, trained: list[train.Result], data: data_lib.Data,
                   out: Path) -> None:
    """Everything lands on disk before it is logged, so a tracking failure loses nothing."""
    model_lib.save(result.model, data.class_names, out)
    (out / METRICS_FILE).write_text(json.dumps(result.metrics, indent=2))
    plots.test_figures(result.metrics, data, out / PLOTS_DIR)
    for i, member in enumerate(trained):
        name = "learning_curves" + (f"_member{i}" if len(trained) > 1 else "")
        plots.learning_curves(member.history, out / PLOTS_DIR / f"{name}.png")


def _safe(name: str) -> str:
    return re.sub(r"[^\w.=,+-]", "_", name)[:120]
