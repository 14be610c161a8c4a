"""What a job knows of Hydra, in one place so that jobs, sweeps and tests share it."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from rps.errors import UserError

Result = TypeVar("Result")


@dataclass(frozen=True)
class JobContext:
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
        return cls(
            output_dir=Path(hc.runtime.output_dir),
            root=project_root(hc),
            overrides=list(hc.overrides.task),
            sweep_dir=Path(hc.sweep.dir).absolute() if multirun else None,
            job_num=hc.job.num if multirun else None,
        )


def project_root(hydra_cfg) -> Path:
    """The folder above the primary config directory, whatever the working directory."""
    for source in hydra_cfg.runtime.config_sources:
        if source.provider == "main" and source.path.startswith("file://"):
            return Path(source.path.removeprefix("file://")).resolve().parent
    return Path.cwd()


def validated(check: Callable[[], Result], output_dir: Path, root: Path) -> Result:
    """``check()``; where it refuses the config or its input, the output folder that Hydra
    made before the app ran is removed, while it holds only Hydra's config and the log
    (nothing of the app's), with the folders it leaves empty below ``root``: a typo leaves
    nothing behind."""
    try:
        return check()
    except UserError:
        if output_dir.is_dir() and all(
            p.name == ".hydra" or p.suffix == ".log" for p in output_dir.iterdir()
        ):
            shutil.rmtree(output_dir)
            for parent in output_dir.parents:
                if parent == root or not parent.is_relative_to(root) or any(parent.iterdir()):
                    break
                parent.rmdir()
        raise
