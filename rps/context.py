"""What a job knows of Hydra, in one place so that jobs, sweeps and tests share it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


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
