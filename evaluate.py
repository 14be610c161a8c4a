"""Score a trained model on a labelled folder of images, such as real photos."""

from pathlib import Path

import hydra
from omegaconf import DictConfig

from rps import errors
from rps.config import compose, helptext

compose.register()


@hydra.main(version_base="1.3", config_path="conf", config_name="evaluate")
def main(cfg: DictConfig) -> None:
    from rps.apps import app  # imports TensorFlow after the config checks

    # The project root holds conf/ and mlflow.db: the tracking store that training uses.
    app.main(cfg, Path(__file__).resolve().parent, "evaluate")


if __name__ == "__main__":
    helptext.answer(Path(__file__).resolve().parent / "conf", "evaluate")
    errors.exit_status(main)
