"""Train, validate and test one classifier; `python run.py -m ...` sweeps."""

from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from rps import config, train
from rps.errors import friendly

config.register()


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
@friendly
def main(cfg: DictConfig) -> float:
    result = train.run(cfg, Path(HydraConfig.get().runtime.output_dir))
    return result.metrics["best_val_accuracy"]


if __name__ == "__main__":
    main()
