"""Train the comparison that chooses the default: each aug option, with and without fine-tuning.

Every config is one ``python run.py data=folder data.root=<data> aug=<a> finetune=<f> ...``
process (``data=rps`` on a ``tfds_copy`` of the data with ``--source tfds``), tracked in the
MLflow experiment ``robustness`` (``--experiment``) of the store training uses by default
(``--tracking-uri`` for another). rps tags each run with its
command-line overrides and logs its whole config, so a config with a FINISHED run of the very
same overrides and the same whole config is reused instead of retrained: an interrupted
comparison resumes where it stopped, and a later call with more ``--configs`` trains only
what is new. An edited YAML changes the whole config, so it trains again. Every finished
run is then scored on the test split and each proxy set. With ``--seeds``, each config is
trained once per seed, and rows of the mean and the worst over its seeds follow: one
fine-tuned run moves by several points, so one seed can pass or fail a goal by luck.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from benchmarks.robustness import evaluate

log = logging.getLogger("rps")

REPO = Path(__file__).resolve().parents[2]
AUGS = ("none", "light", "strong", "background")
FINETUNES = ("none", "top")
CONFIGS = tuple(f"{aug}/{finetune}" for aug in AUGS for finetune in FINETUNES)
EXPERIMENT = "robustness"
OVERRIDES_TAG = "overrides"  # set by rps.job: the job's command-line overrides, as JSON
LOG_TAIL = 15  # lines of a failed job's output shown in the terminal


@dataclass(frozen=True)
class Job:
    config: str  # "<aug>/<finetune>"
    seed: int | None  # trainer.seed, or None for the config's own
    overrides: list[str]

    @property
    def slug(self) -> str:
        seed = "" if self.seed is None else f"-seed{self.seed}"
        return self.config.replace("/", "-") + seed


def jobs(configs: Sequence[str], data: Path, experiment: str, extra: Sequence[str],
         seeds: Sequence[int | None] = (None,), tfds_dir: Path | None = None) -> list[Job]:
    """With ``tfds_dir`` (a prepared ``tfds_copy``), the jobs train on ``data=rps``, the
    default data source, rather than on ``data``'s folders."""
    source = (["data=folder", f"data.root={data.resolve()}"] if tfds_dir is None else
              ["data=rps", f"data.tfds_dir={tfds_dir.resolve()}"])
    result = []
    for config in configs:
        aug, finetune = config.split("/")
        for seed in seeds:
            result.append(Job(config, seed, [
                *source, f"aug={aug}",
                f"finetune={finetune}", f"tracking.experiment={experiment}",
                *extra,
                *([] if seed is None else [f"trainer.seed={seed}"])]))
    return result


def finished_run(client, experiment: str, job: Job):
    """The newest FINISHED run of ``experiment`` with exactly ``job``'s overrides and the
    config they compose to today, or None."""
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return None
    wanted = json.dumps(job.overrides)
    runs = client.search_runs([found.experiment_id], "attributes.status = 'FINISHED'",
                              order_by=["attributes.start_time DESC"])
    same = [r for r in runs if r.data.tags.get(OVERRIDES_TAG) == wanted]
    params = composed_params(job.overrides) if same else {}
    match = next((r for r in same if r.data.params == params), None)
    if same and match is None:
        log.info("compare: %s: the config files changed since run %s, so it trains again",
                 job.slug, same[0].info.run_id)
    return match


def composed_params(overrides: list[str]) -> dict[str, str]:
    """The params ``python run.py <overrides>`` would log, from the config files as they are."""
    from omegaconf import OmegaConf

    from rps import config
    from rps.tracking import flatten

    cfg = config.compose(REPO / "conf", overrides)
    return flatten(OmegaConf.to_container(cfg, resolve=True, enum_to_str=True))


def train(job: Job, uri: str, out: Path) -> bool:
    """One run.py process, its output in ``out/logs/``; False when it failed."""
    logs = out / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    run_dir = out / "runs" / job.slug / time.strftime("%Y-%m-%d_%H-%M-%S")
    command = [sys.executable, str(REPO / "run.py"), *job.overrides, f"hydra.run.dir={run_dir}"]
    log_file = logs / f"{job.slug}.log"
    started = time.perf_counter()
    with open(log_file, "w") as sink:
        status = subprocess.run(command, stdout=sink, stderr=subprocess.STDOUT, cwd=REPO,
                                env={**os.environ, "MLFLOW_TRACKING_URI": uri},
                                check=False).returncode
    if status != 0:
        tail = "\n".join(log_file.read_text().splitlines()[-LOG_TAIL:])
        log.error("compare: %s failed (exit status %d; log %s):\n%s", job.config, status,
                  log_file, tail)
        return False
    log.info("compare: %s trained in %.0f s (log %s)", job.config,
             time.perf_counter() - started, log_file)
    return True


Row = dict[str, object]


def compare(todo: list[Job], uri: str, experiment: str, out: Path, sets: dict[str, Path],
            rerun: bool = False) -> tuple[list[Row], dict[str, list[Row]]]:
    """Train what has no finished run (every job with ``rerun``), then score each run.

    Returns the table of accuracies per set, and for each set that records kinds a table of
    accuracies per kind (see ``evaluate.by_kind``), both with summary rows over seeds.
    """
    from rps.tracking import client_for

    client = client_for(uri)
    rows, kind_rows = [], {}
    for number, job in enumerate(todo, 1):
        run = None if rerun else finished_run(client, experiment, job)
        if run is not None:
            log.info("compare: [%d/%d] %s: reusing run %s", number, len(todo), job.config,
                     run.info.run_id)
        else:
            log.info("compare: [%d/%d] %s: training", number, len(todo), job.config)
            if train(job, uri, out):
                run = finished_run(client, experiment, job)
        label = _label(job, run)
        hits = ({} if run is None else
                evaluate.evaluate([evaluate.from_run(run.info.run_id, uri)],
                                  sets)[run.info.run_id])
        rows.append(label | _scores(run, hits, sets))
        if run is None:  # its row stays, empty; the kind tables have nothing to show
            continue
        for name, accuracies in evaluate.by_kind(hits, sets).items():
            kind_rows.setdefault(name, []).append(label | accuracies)
    return summarised(rows), {name: summarised(r) for name, r in kind_rows.items()}


def _label(job: Job, run) -> Row:
    aug, finetune = job.config.split("/")
    seed = {} if job.seed is None else {"seed": job.seed}
    return {"aug": aug, "finetune": finetune, **seed,
            "run": "failed" if run is None else run.info.run_id}


def _scores(run, hits: dict, sets: dict[str, Path]) -> Row:
    """Validation accuracy, training time and the accuracy per set; a failed config keeps
    its row, empty, so the table shows what is missing."""
    if run is None:
        return {"val": None, "train s": None, **dict.fromkeys(sets), "worst proxy": None}
    accuracies = evaluate.accuracies(hits)
    return {"val": run.data.metrics["val/best_accuracy"],
            "train s": round(run.data.metrics["time/train_s"]), **accuracies,
            "worst proxy": min(v for name, v in accuracies.items() if name != evaluate.TEST)}


def summarised(rows: list[Row]) -> list[Row]:
    """Each config's rows, then, for a config with several seeds, the mean of every figure
    and the worst (the minimum) of every accuracy over the seeds whose runs finished."""
    result = []
    for config in dict.fromkeys((r["aug"], r["finetune"]) for r in rows):
        mine = [r for r in rows if (r["aug"], r["finetune"]) == config]
        result += mine
        done = [r for r in mine if r["run"] != "failed"]
        if "seed" not in mine[0] or len(done) < 2:
            continue
        columns = [k for k, v in done[0].items() if isinstance(v, float | int) and k != "seed"]
        mean = {k: np.mean([r[k] for r in done]) for k in columns}
        result.append({**mine[0], "seed": "mean", "run": f"{len(done)} runs",
                       **{k: round(v) if isinstance(done[0][k], int) else float(v)
                          for k, v in mean.items()}})
        result.append({**mine[0], "seed": "worst", "run": f"{len(done)} runs",
                       **{k: float(min(r[k] for r in done)) if isinstance(done[0][k], float)
                          else None for k in columns}})
    return result
