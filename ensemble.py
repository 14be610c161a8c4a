"""Average the logits of finished runs in one model, test it, and log it as a run."""

from pathlib import Path

import hydra
from omegaconf import DictConfig

from rps import errors
from rps.config import compose, helptext

compose.register()


@hydra.main(version_base="1.3", config_path="conf", config_name="ensemble")
def main(cfg: DictConfig) -> None:
    from rps.apps import app  # imports TensorFlow after the config checks

    # The project root holds conf/ and mlflow.db: the tracking store that training uses.
    app.main(cfg, Path(__file__).resolve().parent, "ensemble")


if __name__ == "__main__":
    helptext.answer(Path(__file__).resolve().parent / "conf", "ensemble")
    errors.exit_status(main)
