"""Train, validate and test one classifier; `python run.py -m ...` sweeps."""

from pathlib import Path

import hydra
from omegaconf import DictConfig

from rps import errors
from rps.config import compose, helptext

compose.register()


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> float:
    from rps.train import job  # which checks the config before TensorFlow loads

    return job.main(cfg)


if __name__ == "__main__":
    helptext.answer(Path(__file__).resolve().parent / "conf", "config")
    errors.exit_status(main)
