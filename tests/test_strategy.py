"""trainer.strategy=mirrored on a CPU split into two logical devices: two real replicas."""

import os
import re
import subprocess
import sys

import pytest
from conftest import REPO, make_folder_dataset
from mlflow.tracking import MlflowClient

from rps.config.job import Strategy
from rps.errors import ConfigError
from rps.train.stages import check_split, distribution

# The split must happen before TensorFlow sets up its devices, so in a fresh process that
# then runs run.py as `python run.py` would.
TWO_CPUS = """
import runpy, sys
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


@pytest.mark.slow
def test_mirrored_trains_both_stages_on_two_replicas(tmp_path, mlflow_store):
    root = make_folder_dataset(tmp_path / "data", n_train=8, n_test=2)
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            TWO_CPUS,
            str(REPO / "run.py"),
            "data=folder",
            f"data.root={root}",
            "data.val_fraction=0.25",
            "backbone=efficientnet_lite0",
            "backbone.weights=null",
            "backbone.input_size=32",
            "trainer.batch_size=8",
            "trainer.epochs=2",
            "finetune=top",
            "finetune.epochs=1",
            "finetune.layers=6",
            "trainer.strategy=mirrored",
            f"hydra.run.dir={tmp_path / 'run'}",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "HYDRA_FULL_ERROR": "0"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert re.search(r"\[rps.features.base\].*train view 1/", proc.stdout)  # stage 1 on the cache
    client = MlflowClient(mlflow_store)
    (run,) = client.search_runs([client.get_experiment_by_name("rps").experiment_id])
    assert run.info.status == "FINISHED"
    assert run.data.params["trainer.strategy"] == "mirrored"
    assert run.data.metrics["replicas"] == 2
    stages = sorted(client.get_metric_history(run.info.run_id, "stage"), key=lambda m: m.step)
    assert [m.value for m in stages] == [1, 1, 2]


def test_default_strategy_is_one_replica():
    assert distribution(Strategy.default).num_replicas_in_sync == 1


def test_batches_that_do_not_split_evenly_are_refused():
    check_split(2, 8, {"train": 100, "val": 6})
    with pytest.raises(ConfigError, match=r"val \(3 images\) does not split evenly"):
        check_split(2, 8, {"train": 100, "val": 3})
    with pytest.raises(ConfigError, match="multiple of 2"):
        check_split(2, 7, {"train": 100})
