"""A Hydra callback that gives each sweep one MLflow parent run and a comparison at the end.

The parent's id and the swept keys are written to a file in the sweep folder, so jobs find
them whatever launcher runs them (in this process, in joblib workers, or elsewhere on a
shared file system). For the same reason each job appends its outcome to a log in that
folder: a launcher runs ``on_job_end`` on a copy of this callback, in the job's process.
"""

from __future__ import annotations

import atexit
import csv
import io
import json
import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from rps.config import compose
from rps.config.context import project_root
from rps.errors import SweepFailed, UserError, report
from rps.tracking import backend, mlflow_runs, plots

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

log = logging.getLogger(__name__)

STATE_FILE = ".rps_sweep.json"
JOBS_FILE = ".rps_jobs.jsonl"  # one line per finished job: its overrides and whether it failed
OPTUNA_RESULTS = "optimization_results.yaml"  # the Optuna sweeper's best params and value
SUMMARY = "summary"


@dataclass(frozen=True)
class SweepInfo:
    parent_run_id: str
    varying: list[str]  # the override keys the sweep varies: what names its jobs


def info(sweep_dir: Path | None) -> SweepInfo | None:
    path = None if sweep_dir is None else sweep_dir / STATE_FILE
    if path is None or not path.exists():
        return None
    state = json.loads(path.read_text())
    return SweepInfo(state["parent_run_id"], state["varying"])


def task_overrides(config: DictConfig) -> list[str]:
    """The overrides given on the command line, from a config with its ``hydra`` node."""
    return [str(override) for override in config.hydra.overrides.task]


def varying_keys(config: DictConfig) -> list[str]:
    """Keys swept on the command line (``head.units=8,16``) or by the sweeper's params."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    overrides = OverridesParser.create().parse_overrides(task_overrides(config))
    keys = [o.key_or_group for o in overrides if o.is_sweep_override()]
    params = OmegaConf.select(config, "hydra.sweeper.params") or {}
    return sorted(set(keys) | set(params))


@dataclass
class Row:
    job: str
    name: str
    status: str
    val_accuracy: float | None
    test_accuracy: float | None
    train_s: float | None
    run_id: str
    overrides: dict[str, str]


def _pairs(overrides: list[str]) -> dict[str, str]:
    pairs = [o.lstrip("+~").split("=", 1) for o in overrides]
    return {p[0]: p[1] if len(p) > 1 else "" for p in pairs}


def rows_of(runs: list[Any], jobs: Sequence[dict[str, Any]] = ()) -> list[Row]:
    """A row per run, and per recorded job that failed before it opened one (its config
    did not validate)."""
    rows = []
    for run in runs:
        tags, metrics = run.data.tags, run.data.metrics
        rows.append(
            Row(
                job=tags.get("job_num", ""),
                name=run.info.run_name,
                status=run.info.status,
                val_accuracy=metrics.get("val/best_accuracy"),
                test_accuracy=metrics.get("test/accuracy"),
                train_s=metrics.get("time/train_s"),
                run_id=run.info.run_id,
                overrides=_pairs(json.loads(tags.get("overrides", "[]"))),
            )
        )
    tracked = {row.job for row in rows}
    rows += [
        Row(
            job=str(job["num"]),
            name=mlflow_runs.run_name(job["overrides"]),
            status="FAILED",
            val_accuracy=None,
            test_accuracy=None,
            train_s=None,
            run_id="",
            overrides=_pairs(job["overrides"]),
        )
        for job in jobs
        if job["failed"] and str(job["num"]) not in tracked
    ]
    return sorted(rows, key=lambda r: (int(r.job) if r.job.isdigit() else 1 << 30, r.run_id))


def varying(rows: list[Row]) -> list[str]:
    """Override keys whose value differs between jobs: what the sweep compares."""
    keys = sorted({k for r in rows for k in r.overrides})
    return [k for k in keys if len({r.overrides.get(k) for r in rows}) > 1]


def best(rows: list[Row]) -> Row | None:
    """Chosen on validation accuracy: test accuracy must never pick a model."""
    done = [r for r in rows if r.status == "FINISHED" and r.val_accuracy is not None]
    return max(done, key=lambda r: r.val_accuracy or 0.0, default=None)


def table(rows: list[Row]) -> tuple[list[str], list[list[str]]]:
    keys = varying(rows)
    header = ["job", *keys, "status", "val_accuracy", "test_accuracy", "train_s"]

    def num(value: float | None, digits: int) -> str:
        return "" if value is None else f"{value:.{digits}f}"

    body = [
        [
            r.job,
            *(r.overrides.get(k, "") for k in keys),
            r.status,
            num(r.val_accuracy, 4),
            num(r.test_accuracy, 4),
            num(r.train_s, 1),
        ]
        for r in rows
    ]
    return header, body


def markdown(header: list[str], body: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in body]
    return "\n".join(lines) + "\n"


def csv_text(header: list[str], body: list[list[str]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(header)
    writer.writerows(body)
    return out.getvalue()


def failed(job_return: JobReturn) -> bool:
    """Jobs report failure as NaN (see rps.train.job.main); an exception is a failure too. Only a
    completed job's value is read: for any other, ``return_value`` re-raises its error."""
    if job_return.status != JobStatus.COMPLETED:
        return True
    value = job_return.return_value
    return value is None or isinstance(value, float) and math.isnan(value)


def record_job(sweep_dir: Path, num: int, overrides: list[str], job_failed: bool) -> None:
    """One line, appended in a single write: safe with jobs finishing at once."""
    line = json.dumps({"num": num, "overrides": overrides, "failed": job_failed}) + "\n"
    fd = os.open(sweep_dir / JOBS_FILE, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


def recorded_jobs(sweep_dir: Path) -> list[dict[str, Any]]:
    path = sweep_dir / JOBS_FILE
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


class SweepCallback(Callback):
    def __init__(self) -> None:
        self.client: MlflowClient | None = None
        self.parent: str | None = None

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir).absolute()
        sweep_dir.mkdir(parents=True, exist_ok=True)
        (sweep_dir / JOBS_FILE).unlink(missing_ok=True)
        settings = compose.tracking_of(config)
        if not settings.enabled:
            return
        root = project_root(config.hydra)
        uri = backend.store_uri(settings, root)
        try:
            # Also creates the store, once, before parallel jobs open it.
            self.client = backend.client_for(uri)
            experiment = backend.experiment_id(self.client, settings.experiment, uri)
        except UserError as err:
            report(err)
            raise SystemExit(2) from None
        overrides = task_overrides(config)
        run = self.client.create_run(
            experiment,
            run_name=f"sweep {mlflow_runs.run_name(overrides)}",
            tags={
                "sweep_dir": str(sweep_dir),
                "overrides": json.dumps(overrides),
                "experiment": str(config.get("experiment") or "none"),
                **mlflow_runs.git_state(root),
            },
        )
        self.parent = run.info.run_id
        state = {"parent_run_id": self.parent, "varying": varying_keys(config)}
        (sweep_dir / STATE_FILE).write_text(json.dumps(state))
        atexit.register(self._close, "KILLED")
        log.info(
            "sweep parent run %s in %s; in mlflow ui: %s",
            self.parent,
            uri,
            backend.ui_link(uri, experiment, self.parent),
        )

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        if config.hydra.mode != RunMode.MULTIRUN:
            return
        job_failed = failed(job_return)
        if job_failed and job_return.status == JobStatus.COMPLETED:
            # Optuna marks a trial that returns None as failed and searches on; a NaN stops
            # the whole search. Other sweepers ignore the value.
            job_return.return_value = None
        record_job(
            Path(config.hydra.sweep.dir).absolute(),
            config.hydra.job.num,
            list(job_return.overrides or []),
            job_failed,
        )

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir).absolute()
        jobs = recorded_jobs(sweep_dir)
        failures = [job for job in jobs if job["failed"]]
        if self.client is not None and self.parent is not None:
            self._summarise(self.client, self.parent, sweep_dir, jobs, len(failures))
            self._close("FAILED" if jobs and len(failures) == len(jobs) else "FINISHED")
        if failures:
            print(
                f"{len(failures)} of {len(jobs)} sweep jobs failed; see the log above "
                "and each failed run's error.txt in MLflow."
            )
            raise SweepFailed()

    @staticmethod
    def _summarise(
        client: MlflowClient,
        parent: str,
        sweep_dir: Path,
        jobs: list[dict[str, Any]],
        failures: int,
    ) -> None:
        runs = client.search_runs(
            [client.get_run(parent).info.experiment_id],
            filter_string=f"tags.`{mlflow_runs.PARENT_TAG}` = '{parent}'",
            max_results=5000,
        )
        rows = rows_of(runs, jobs)
        header, body = table(rows)
        text = markdown(header, body)
        winner = best(rows)
        if winner is not None and winner.val_accuracy is not None:
            text += (
                f"\nBest by validation accuracy: job {winner.job}, {winner.name} "
                f"(val_accuracy {winner.val_accuracy:.4f}, run {winner.run_id})\n"
            )
        print(f"\nSweep {sweep_dir} ({len(rows)} jobs):\n{text}")
        (sweep_dir / f"{SUMMARY}.md").write_text(text)
        (sweep_dir / f"{SUMMARY}.csv").write_text(csv_text(header, body))
        labels = [
            ",".join(f"{k}={r.overrides.get(k, '')}" for k in varying(rows)) or r.name for r in rows
        ]
        plots.comparison_bars(
            labels,
            {
                "val_accuracy": [r.val_accuracy for r in rows],
                "test_accuracy": [r.test_accuracy for r in rows],
            },
            sweep_dir / f"{SUMMARY}.png",
        )
        for name in (f"{SUMMARY}.md", f"{SUMMARY}.csv", f"{SUMMARY}.png", OPTUNA_RESULTS):
            if (sweep_dir / name).exists():
                client.log_artifact(parent, str(sweep_dir / name))
        tags = {"jobs": str(len(rows)), "failed_jobs": str(failures)}
        if winner is not None and winner.val_accuracy is not None:
            tags |= {"best_run_id": winner.run_id, "best_run_name": winner.name}
            client.set_tag(winner.run_id, "best_in_sweep", "true")
            from mlflow.entities import Param

            state = info(sweep_dir)  # its keys: also those that took one value in every job
            swept = state.varying if state is not None else []
            client.log_batch(
                parent,
                params=[
                    Param(f"best/{key}", winner.overrides[key])
                    for key in swept
                    if key in winner.overrides
                ],
            )
            client.log_metric(parent, "best/val_accuracy", winner.val_accuracy)
            if winner.test_accuracy is not None:
                client.log_metric(parent, "best/test_accuracy", winner.test_accuracy)
        for key, value in tags.items():
            client.set_tag(parent, key, value)

    def _close(self, status: str) -> None:
        """Also runs at exit, so a sweep stopped by Ctrl-C leaves no parent RUNNING."""
        if self.client is not None and self.parent is not None:
            if self.client.get_run(self.parent).info.status == "RUNNING":
                self.client.set_terminated(self.parent, status=status)
            self.parent = None
