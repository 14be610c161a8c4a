"""The Hydra task of live.py, evaluate.py and ensemble.py, which differ only in what runs."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from rps import startup
from rps.config import compose
from rps.config.context import validated
from rps.errors import reported, task_started


def main(cfg: DictConfig, root: Path, app: str) -> Any:
    """``rps.apps.<app>.run(conf, output_dir, root)`` on the validated config; a UserError ends it
    with its paragraph and exit status 2. The config is checked before TensorFlow loads, and
    a refusal before the app wrote anything (a config, a model or a folder it cannot use)
    leaves no output folder."""
    from hydra.core.hydra_config import HydraConfig

    task_started()
    output_dir = Path(HydraConfig.get().runtime.output_dir)
    conf = reported(lambda: validated(lambda: compose.to_object(cfg), output_dir, root))
    startup.import_tensorflow()
    run = importlib.import_module(f"rps.apps.{app}").run
    return reported(lambda: validated(lambda: run(conf, output_dir, root), output_dir, root))
