"""Every option of every config group composes, validates and builds a model."""

import dataclasses

import pytest
from conftest import REPO, compose_cfg, run_cli
from omegaconf import OmegaConf

from rps.config import compose
from rps.config.data import FolderDataConfig
from rps.config.model import AdamWConfig, BackboneName, ImageAugConfig, SGDConfig
from rps.errors import ConfigError
from rps.features import sources

CONF = REPO / "conf"
GROUPS = [
    "data",
    "backbone",
    "head",
    "aug",
    "optimizer",
    "finetune",
    "trainer",
    "tracking",
    "experiment",
    "sweep",
]
CLASSES = ["paper", "rock", "scissors"]
IMAGE_AUG_KEYS = {f.name for f in dataclasses.fields(ImageAugConfig)} - {"flip", "background_dir"}
# Options that apply to backbone=hand_landmarks (the default) alone.
LANDMARK_OPTIONS = {("backbone", "hand_landmarks"), ("aug", "landmarks")}
# Options of the image backbones alone, tried on the one the image presets use.
IMAGE_GROUPS = ("aug", "finetune")


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def test_every_group_has_a_folder_with_options():
    for group in GROUPS:
        assert options(group), f"conf/{group}/ has no options"


@pytest.mark.parametrize("group,option", [(g, o) for g in GROUPS for o in options(g)])
def test_option_composes_and_builds(group, option):
    overrides = [f"{group}={option}"]
    if group in IMAGE_GROUPS and (group, option) not in LANDMARK_OPTIONS:
        overrides.append("backbone=efficientnet_lite0")
    if group == "data" and option == "folder":
        overrides.append("data.root=/nonexistent")
    cfg = compose_cfg(*overrides)
    conf = compose.to_object(cfg)
    if conf.backbone.name is not BackboneName.hand_landmarks:
        conf.backbone.weights = None  # random weights: the build, not the download, is tested
    if group != "data":
        # Small input keeps the parametrised builds quick; the shape logic is size-independent.
        conf.backbone.input_size = 64
        classifier = sources.classifier(conf, len(CLASSES))
        assert classifier.train.output_shape == (None, len(CLASSES))
        assert classifier.inference.output_shape == (None, len(CLASSES))


@pytest.mark.parametrize("experiment", options("experiment"))
def test_an_experiment_takes_any_option_of_any_group(experiment):
    """An experiment chooses options and sets only keys that every option of their group
    has, so `experiment=cnn aug=none` composes: what does not apply is refused in words."""
    for group in GROUPS[: GROUPS.index("experiment")]:
        for option in options(group):
            cfg = compose_cfg(f"experiment={experiment}", f"{group}={option}")
            assert cfg.experiment == experiment
            try:
                compose.to_object(cfg)
            except ConfigError as refused:
                said = str(refused)  # a backbone and an option that do not go together
                assert "backbone=" in said or "data.root" in said, said


def test_schema_subclasses_survive_composition():
    conf = compose.to_object(compose_cfg("data=folder", "data.root=/data", "optimizer=sgd"))
    assert isinstance(conf.data, FolderDataConfig) and conf.data.root == "/data"
    assert isinstance(conf.optimizer, SGDConfig) and conf.optimizer.momentum == 0.9
    conf = compose.to_object(compose_cfg("optimizer=adamw"))
    assert isinstance(conf.optimizer, AdamWConfig)


@pytest.mark.parametrize("override", ["head=dense", "head=schema_dense", "optimizer=sgd_schema"])
def test_a_schema_is_no_option_of_its_group(override):
    """Schemas live in Hydra's ``schema/`` group, which a user never picks from."""
    from hydra.errors import MissingConfigException

    with pytest.raises(MissingConfigException) as refused:
        compose_cfg(override)
    options = str(refused.value).split("Available options")[-1].split("Config search path")[0]
    assert options.split()[2:] and "schema" not in options and "dense" not in options.split()


def test_seed_experiment_is_the_course_exercise_value_by_value():
    cfg = compose_cfg("experiment=seed")
    recipe = {
        group: OmegaConf.to_container(cfg[group], resolve=True)
        for group in ("backbone", "head", "aug", "optimizer", "finetune")
    }
    assert recipe == {
        "backbone": {"name": "resnet50", "input_size": 300, "weights": "imagenet"},
        "head": {"dropout": 0.3, "units": 512, "depth": 2},  # 3 Dropout + Dense, logits last
        "aug": {
            **{key: 0.0 for key in IMAGE_AUG_KEYS},
            "flip": False,
            "background_dir": None,
            "rotation": 0.1,
            "zoom_in": 0.2,
            "zoom_out": 0.2,
        },
        "optimizer": {"lr": 1e-3, "schedule": "constant", "label_smoothing": 0.0},
        "finetune": {},  # frozen
    }
    assert (cfg.trainer.epochs, cfg.trainer.patience) == (50, None)  # best epoch restored
    assert compose.to_object(cfg).experiment == "seed"


def test_options_that_do_not_apply_are_absent():
    assert set(compose_cfg("head=linear").head) == {"dropout"}
    assert set(compose_cfg("finetune=none", "backbone=resnet50").finetune) == set()
    assert set(compose_cfg().aug) == {"landmark_jitter", "landmark_tilt"}  # hand_landmarks
    assert "landmark_tilt" not in compose_cfg("backbone=resnet50").aug
    with pytest.raises(Exception, match="units"):
        compose_cfg("head=linear", "head.units=8")
    with pytest.raises(Exception, match="rotation"):
        compose_cfg("aug.rotation=0.5")  # the default backbone reads landmarks


@pytest.mark.parametrize("override", ["+head.unit=128", "+foo=1", "+trainer.epoch=3"])
def test_keys_added_with_plus_are_refused(override):
    key = override.lstrip("+").split("=")[0]
    with pytest.raises(ConfigError, match=f"{key} is not a key of"):
        compose.to_object(compose_cfg(override))


def test_overrides_reach_the_schema():
    conf = compose.to_object(compose_cfg("head.units=512", "optimizer.lr=3e-4", "trainer.epochs=5"))
    assert (conf.head.units, conf.optimizer.lr, conf.trainer.epochs) == (512, 3e-4, 5)


@pytest.mark.parametrize(
    "override,key",
    [
        ("head.units=-4", "head.units"),
        ("head.dropout=1.0", "head.dropout"),
        ("data.val_fraction=0", "data.val_fraction"),
        ("optimizer.lr=-1", "optimizer.lr"),
        ("trainer.batch_size=0", "trainer.batch_size"),
        ("aug.zoom_in=1", "aug.zoom_in"),
        ("aug.zoom_out=2.5", "aug.zoom_out"),
        ("aug.landmark_tilt=91", "aug.landmark_tilt"),
    ],
)
def test_out_of_range_values_name_the_key(override, key):
    image = key.startswith("aug.") and "landmark" not in key
    with pytest.raises(ConfigError, match=key):
        compose.to_object(compose_cfg(override, *(["backbone=resnet50"] if image else [])))


def test_finetune_that_unfreezes_nothing_is_rejected():
    with pytest.raises(ConfigError, match="finetune.layers"):
        compose.to_object(compose_cfg("backbone=resnet50", "finetune=top", "finetune.layers=0"))


@pytest.mark.parametrize(
    "override",
    [
        "head=huge",  # unknown option
        "head.unitz=3",  # unknown key
        "head.units=many",  # wrong type
        "optimizer.momentum=0.5",  # key of another option's schema
    ],
)
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
        compose.to_object(compose_cfg("data=folder"))


@pytest.mark.parametrize("preset", [p for p in options("sweep") if p in GROUPS])
def test_sweep_presets_cover_every_option_of_their_group(preset):
    cfg = compose.config(CONF, [f"sweep={preset}"], with_hydra=True)
    assert cfg.hydra.mode.name == "MULTIRUN"
    params = dict(cfg.hydra.sweeper.params)
    assert sorted(params[preset].split(",")) == [
        o for o in options(preset) if (preset, o) not in LANDMARK_OPTIONS
    ]


def test_the_seeds_preset_sweeps_the_seed_alone():
    cfg = compose.config(CONF, ["sweep=seeds"], with_hydra=True)
    assert cfg.hydra.mode.name == "MULTIRUN"
    assert dict(cfg.hydra.sweeper.params) == {"trainer.seed": "42,1,2"}
