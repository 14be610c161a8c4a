"""Every option of every config group composes, validates and builds a model."""

import pytest
from conftest import REPO, compose_cfg, run_cli

from rps import config
from rps import model as model_lib
from rps.config import AdamWConfig, FolderDataConfig, SGDConfig
from rps.errors import ConfigError

CONF = REPO / "conf"
GROUPS = ["data", "backbone", "head", "aug", "optimizer", "finetune", "trainer", "tracking",
          "experiment", "sweep"]
CLASSES = ["paper", "rock", "scissors"]
# Options that apply to backbone=hand_landmarks (the default) alone.
LANDMARK_OPTIONS = {("backbone", "hand_landmarks"), ("aug", "landmarks")}
# Options of the image backbones alone, tried on the one the image presets use.
IMAGE_GROUPS = ("aug", "finetune")

def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def test_every_group_has_a_folder_with_options():
    for group in GROUPS:
        assert options(group), f"conf/{group}/ has no options"


@pytest.mark.parametrize(
    "group,option", [(g, o) for g in GROUPS for o in options(g)])
def test_option_composes_and_builds(group, option):
    overrides = [f"{group}={option}"]
    if group in IMAGE_GROUPS and (group, option) not in LANDMARK_OPTIONS:
        overrides.append("backbone=efficientnet_lite0")
    if group == "data" and option == "folder":
        overrides.append("data.root=/nonexistent")
    cfg = compose_cfg(*overrides)
    conf = config.to_object(cfg)
    if not conf.backbone.finds_hands:
        conf.backbone.weights = None  # random weights: the build, not the download, is tested
    if group != "data":
        # Small input keeps the parametrised builds quick; the shape logic is size-independent.
        conf.backbone.input_size = 64
        classifier = model_lib.build(conf, len(CLASSES))
        assert classifier.train.output_shape == (None, len(CLASSES))
        assert classifier.inference.output_shape == (None, len(CLASSES))


def test_schema_subclasses_survive_composition():
    conf = config.to_object(compose_cfg("data=folder", "data.root=/data", "optimizer=sgd"))
    assert isinstance(conf.data, FolderDataConfig) and conf.data.root == "/data"
    assert isinstance(conf.optimizer, SGDConfig) and conf.optimizer.momentum == 0.9
    conf = config.to_object(compose_cfg("optimizer=adamw"))
    assert isinstance(conf.optimizer, AdamWConfig)


def test_seed_experiment_is_the_course_exercise():
    conf = config.to_object(compose_cfg("experiment=seed"))
    assert conf.experiment == "seed"
    assert conf.backbone.name.value == "resnet50" and conf.backbone.input_size == 300
    assert conf.backbone.weights == "imagenet"
    assert (conf.head.depth, conf.finetune.epochs, conf.trainer.epochs) == (2, 0, 50)
    assert conf.aug.zoom_in > 0 and conf.aug.zoom_out > 0
    assert conf.aug.rotation > 0 and not conf.aug.flip


def test_overrides_reach_the_schema():
    conf = config.to_object(compose_cfg("head.units=512", "optimizer.lr=3e-4",
                                        "trainer.epochs=5"))
    assert (conf.head.units, conf.optimizer.lr, conf.trainer.epochs) == (512, 3e-4, 5)


@pytest.mark.parametrize("override,key", [
    ("head.units=-4", "head.units"),
    ("head.dropout=1.0", "head.dropout"),
    ("data.val_fraction=0", "data.val_fraction"),
    ("optimizer.lr=-1", "optimizer.lr"),
    ("trainer.batch_size=0", "trainer.batch_size"),
    ("aug.zoom_in=1", "aug.zoom_in"),
    ("aug.zoom_out=2.5", "aug.zoom_out"),
])
def test_out_of_range_values_name_the_key(override, key):
    with pytest.raises(ConfigError, match=key):
        config.to_object(compose_cfg(override))


def test_finetune_that_unfreezes_nothing_is_rejected():
    with pytest.raises(ConfigError, match="finetune.layers"):
        config.to_object(compose_cfg("finetune=top", "finetune.layers=0"))


@pytest.mark.parametrize("override", [
    "head=huge",              # unknown option
    "head.unitz=3",           # unknown key
    "head.units=many",        # wrong type
    "optimizer.momentum=0.5",  # key of another option's schema
])
def test_bad_overrides_fail_at_composition(override):
    with pytest.raises(Exception) as info:
        compose_cfg(override)
    assert override.split("=")[0].split(".")[-1] in str(info.value) or "huge" in str(info.value)


@pytest.mark.parametrize("override", ["trainer.members=2", "aug.val_backgrounds=true"])
def test_removed_keys_are_unknown(override, tmp_path):
    proc = run_cli(override, f"hydra.run.dir={tmp_path}")
    assert proc.returncode != 0 and not (tmp_path / "metrics.json").exists()
    key = override.split("=")[0].split(".")[-1]
    assert f"Key '{key}' not in" in proc.stderr and "Traceback" not in proc.stderr


def test_missing_folder_root_is_reported():
    with pytest.raises(ConfigError, match="root"):
        config.to_object(compose_cfg("data=folder"))


@pytest.mark.parametrize("preset", [p for p in options("sweep") if p in GROUPS])
def test_sweep_presets_cover_every_option_of_their_group(preset):
    cfg = config.compose(CONF, [f"sweep={preset}"], with_hydra=True)
    assert cfg.hydra.mode.name == "MULTIRUN"
    params = dict(cfg.hydra.sweeper.params)
    assert sorted(params[preset].split(",")) == [
        o for o in options(preset) if (preset, o) not in LANDMARK_OPTIONS]


def test_the_seeds_preset_sweeps_the_seed_alone():
    cfg = config.compose(CONF, ["sweep=seeds"], with_hydra=True)
    assert cfg.hydra.mode.name == "MULTIRUN"
    assert dict(cfg.hydra.sweeper.params) == {"trainer.seed": "42,1,2"}
