"""The Hydra task of live.py, evaluate.py and ensemble.py, which differ only in what runs."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from omegaconf import DictConfig

from rps import config
from rps.context import validated
from rps.errors import reported, task_started

T = TypeVar("T")


def main(cfg: DictConfig, root: Path, run: Callable[[Any, Path, Path], T]) -> T:
    """``run(conf, output_dir, root)`` on the validated config; a UserError ends it with its
    paragraph and exit status 2. A refusal before the app wrote anything (a config, a model
    or a folder it cannot use) leaves no output folder."""
    from hydra.core.hydra_config import HydraConfig

    task_started()
    output_dir = Path(HydraConfig.get().runtime.output_dir)
    return reported(lambda: validated(lambda: run(config.to_object(cfg), output_dir, root),
                                      output_dir, root))
