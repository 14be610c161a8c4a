"""Typed schemas for every config group.

Hydra merges each YAML option onto its schema, so a misspelt key or a wrong type fails at
composition. Range checks live in ``__post_init__`` and run in :func:`to_object`, because
OmegaConf checks types but not values.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue, OmegaConfBaseException

from rps.errors import ConfigError


def _check(ok: bool, key: str, value: Any, rule: str) -> None:
    if not ok:
        raise ConfigError(f"{key}={value!r} is out of range: it must be {rule}.")


class BadImagePolicy(str, Enum):
    skip = "skip"
    fail = "fail"


@dataclass
class DataConfig:
    """Where images come from; validation is never the test split. ``limit`` keeps the
    first n images of each class in each split (``debug=default``: a quick check).

    ``val_groups`` holds out whole groups of training files rather than single files: a
    group is the files whose names differ only in their last number (one hand model of the
    rps set, ``paper01-*``; one capture session, ``rock_3_*``), so validation sees new
    hands, as the test split does.
    """

    val_fraction: float = 0.15
    val_groups: bool = False
    on_bad_image: BadImagePolicy = BadImagePolicy.fail
    limit: int | None = None

    def __post_init__(self) -> None:
        _check(
            0.0 < self.val_fraction < 1.0,
            "data.val_fraction",
            self.val_fraction,
            "between 0 and 1 (exclusive)",
        )
        _check(
            self.limit is None or self.limit >= 2,
            "data.limit",
            self.limit,
            "at least 2 images per class, or null for all",
        )


@dataclass
class TfdsDataConfig(DataConfig):
    tfds_name: str = "rock_paper_scissors"
    tfds_dir: str | None = None


@dataclass
class FolderDataConfig(DataConfig):
    root: str = MISSING


class BackboneName(str, Enum):
    resnet50 = "resnet50"
    mobilenet_v2 = "mobilenet_v2"
    efficientnet_b0 = "efficientnet_b0"
    efficientnet_lite0 = "efficientnet_lite0"
    hand_landmarks = "hand_landmarks"


HAND_WEIGHTS = "mediapipe"


@dataclass
class BackboneConfig:
    """``weights`` is ``imagenet``, null (random init) or a path to a Keras weights file;
    for ``hand_landmarks``, ``mediapipe``: MediaPipe's hand models (rps.hands.detect). The images
    are loaded at ``input_size``: the CNN's input, or what the hand finder looks at."""

    name: BackboneName = MISSING
    input_size: int = MISSING
    weights: str | None = "imagenet"

    def __post_init__(self) -> None:
        _check(
            32 <= self.input_size <= 1024,
            "backbone.input_size",
            self.input_size,
            "between 32 and 1024 pixels",
        )
        if (self.name is BackboneName.hand_landmarks) != (self.weights == HAND_WEIGHTS):
            raise ConfigError(
                f"backbone={self.name.value} with backbone.weights={self.weights!r}: "
                f"weights={HAND_WEIGHTS} means MediaPipe's hand models, which only "
                "backbone=hand_landmarks runs, and it runs nothing else. Use "
                "backbone=hand_landmarks as it is, or a CNN backbone with imagenet, null or a "
                "weights file."
            )


@dataclass
class HeadConfig:
    """A logistic regression on the features (``head=linear``): Dropout, then the logits."""

    dropout: float = 0.2

    def __post_init__(self) -> None:
        _check(0.0 <= self.dropout < 1.0, "head.dropout", self.dropout, "in [0, 1)")


@dataclass
class DenseHeadConfig(HeadConfig):
    """``depth`` hidden Dense layers of ``units`` each, every Dense preceded by Dropout."""

    units: int = 256
    depth: int = 1

    def __post_init__(self) -> None:
        super().__post_init__()
        _check(self.units >= 1, "head.units", self.units, "a positive integer")
        _check(
            1 <= self.depth <= 16,
            "head.depth",
            self.depth,
            "between 1 and 16 (head=linear has none)",
        )


@dataclass
class AugConfig:
    """No augmentation (``aug=none``): the options below have their own schemas, so a
    config holds the keys of its kind of backbone alone."""

    @property
    def on_images(self) -> bool:
        return False

    @property
    def on_landmarks(self) -> bool:
        return False


@dataclass
class ImageAugConfig(AugConfig):
    """Random transforms of the image backbones' training images; 0 turns one off.

    Factors follow the Keras preprocessing layers: ``rotation`` is a fraction of a full
    turn, ``translation`` a fraction of the image side, ``zoom_in`` and ``zoom_out`` the most
    the view narrows or widens, as a fraction of the side (``zoom_out=0.8`` shows up to 1.8
    times the side, the hand shrunk to 1/1.8: hands far from a webcam). ``background`` is the
    share of images whose white background is replaced, ``background_photos`` the share of
    those new backgrounds cut from bundled photos rather than generated,
    ``background_recolour`` the share of those photo crops redrawn in two random colours (their
    shapes in colours the photos lack), ``background_dir`` a folder of the user's own photos
    (the room the camera will see) to crop from besides the bundled ones, ``skin_tone`` the
    most a hand is darkened or lightened, ``white_balance`` the most a channel's gain moves
    from 1, and ``blur`` the largest Gaussian sigma, in pixels of the backbone input.
    """

    flip: bool = False
    rotation: float = 0.0
    zoom_in: float = 0.0
    zoom_out: float = 0.0
    translation: float = 0.0
    brightness: float = 0.0
    contrast: float = 0.0
    saturation: float = 0.0
    hue: float = 0.0
    background: float = 0.0
    background_photos: float = 0.0
    background_recolour: float = 0.0
    background_dir: str | None = None
    skin_tone: float = 0.0
    white_balance: float = 0.0
    blur: float = 0.0

    def __post_init__(self) -> None:
        for key in (
            "rotation",
            "translation",
            "brightness",
            "contrast",
            "saturation",
            "hue",
            "background",
            "background_photos",
            "background_recolour",
            "skin_tone",
            "white_balance",
        ):
            value = getattr(self, key)
            _check(0.0 <= value <= 1.0, f"aug.{key}", value, "between 0 and 1")
        _check(0.0 <= self.zoom_in < 1.0, "aug.zoom_in", self.zoom_in, "at least 0 and below 1")
        _check(0.0 <= self.zoom_out <= 2.0, "aug.zoom_out", self.zoom_out, "between 0 and 2")
        _check(0.0 <= self.blur <= 5.0, "aug.blur", self.blur, "between 0 and 5 pixels")
        if self.background_dir is not None and not (self.background and self.background_photos):
            raise ConfigError(
                f"aug.background_dir={self.background_dir!r} would never be used: photos are "
                "cropped only for the share aug.background of images that get a new "
                "background, times aug.background_photos. Set both above 0 (aug=background "
                "does), or drop aug.background_dir."
            )

    @property
    def on_images(self) -> bool:
        """Whether any image transform is on: answered from the values, without building
        layers (which can mean loading photos)."""
        return any(
            getattr(self, key)
            for key in (
                "flip",
                "rotation",
                "zoom_in",
                "zoom_out",
                "translation",
                "brightness",
                "contrast",
                "saturation",
                "hue",
                "background",
                "skin_tone",
                "white_balance",
                "blur",
            )
        )


@dataclass
class LandmarkAugConfig(AugConfig):
    """``backbone=hand_landmarks``'s augmentation: ``landmark_jitter`` moves each landmark by
    noise (a share of the palm's size), ``landmark_tilt`` turns the hand out of the image
    plane (degrees)."""

    landmark_jitter: float = 0.0
    landmark_tilt: float = 0.0

    def __post_init__(self) -> None:
        _check(
            0.0 <= self.landmark_jitter <= 0.5,
            "aug.landmark_jitter",
            self.landmark_jitter,
            "between 0 and 0.5 (of the hand's size)",
        )
        _check(
            0.0 <= self.landmark_tilt <= 90.0,
            "aug.landmark_tilt",
            self.landmark_tilt,
            "between 0 and 90 degrees",
        )

    @property
    def on_landmarks(self) -> bool:
        return bool(self.landmark_jitter or self.landmark_tilt)


class Schedule(str, Enum):
    constant = "constant"
    cosine = "cosine"


@dataclass
class OptimizerConfig:
    lr: float = 1e-3
    schedule: Schedule = Schedule.constant
    label_smoothing: float = 0.0

    def __post_init__(self) -> None:
        _check(0.0 < self.lr <= 10.0, "optimizer.lr", self.lr, "positive (and at most 10)")
        _check(
            0.0 <= self.label_smoothing < 1.0,
            "optimizer.label_smoothing",
            self.label_smoothing,
            "in [0, 1)",
        )


@dataclass
class AdamConfig(OptimizerConfig):
    pass


@dataclass
class AdamWConfig(OptimizerConfig):
    weight_decay: float = 1e-4

    def __post_init__(self) -> None:
        super().__post_init__()
        _check(
            self.weight_decay >= 0.0, "optimizer.weight_decay", self.weight_decay, "non-negative"
        )


@dataclass
class SGDConfig(OptimizerConfig):
    lr: float = 1e-2
    momentum: float = 0.9
    nesterov: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        _check(0.0 <= self.momentum < 1.0, "optimizer.momentum", self.momentum, "in [0, 1)")


@dataclass
class FinetuneConfig:
    """No stage 2 (``finetune=none``): the backbone stays frozen; only the head trains."""


@dataclass
class UnfreezeConfig(FinetuneConfig):
    """Stage 2: after the head trains on a frozen backbone, unfreeze its top ``layers`` (null:
    all of them) for ``epochs`` more, at ``lr_factor`` times the learning rate."""

    epochs: int = 8
    layers: int | None = 100
    lr_factor: float = 0.1

    def __post_init__(self) -> None:
        _check(
            self.epochs >= 1,
            "finetune.epochs",
            self.epochs,
            "at least 1 (finetune=none has no stage 2)",
        )
        _check(
            self.layers is None or self.layers >= 1,
            "finetune.layers",
            self.layers,
            "1 or more, or null for the whole backbone (finetune=none unfreezes nothing)",
        )
        _check(
            0.0 < self.lr_factor <= 10.0,
            "finetune.lr_factor",
            self.lr_factor,
            "positive (and at most 10)",
        )


class Strategy(str, Enum):
    default = "default"
    mirrored = "mirrored"


@dataclass
class TrainerConfig:
    """``batch_size`` is global: ``strategy=mirrored`` splits each batch across its replicas.
    ``resume`` is the MLflow run id of an interrupted run to continue."""

    epochs: int = 10
    batch_size: int = 32
    patience: int | None = 30
    seed: int = 42
    strategy: Strategy = Strategy.default
    resume: str | None = None

    def __post_init__(self) -> None:
        _check(self.epochs >= 1, "trainer.epochs", self.epochs, "at least 1")
        _check(
            1 <= self.batch_size <= 4096,
            "trainer.batch_size",
            self.batch_size,
            "between 1 and 4096",
        )
        _check(
            self.patience is None or self.patience >= 1,
            "trainer.patience",
            self.patience,
            "at least 1, or null to never stop early",
        )
        _check(self.seed >= 0, "trainer.seed", self.seed, "non-negative")


@dataclass
class TrackingConfig:
    """MLflow tracking; ``uri: null`` means the SQLite store ``mlflow.db`` at the project root."""

    enabled: bool = True
    uri: str | None = None
    experiment: str = "rps"
    register: str | None = None

    def __post_init__(self) -> None:
        _check(
            bool(self.experiment.strip()),
            "tracking.experiment",
            self.experiment,
            "a non-empty name",
        )


@dataclass
class CacheConfig:
    """Work that jobs reuse: decoded images, and backbone features while it is frozen.

    ``views`` is how many augmented views of each training image are cached (each epoch
    samples one); null picks 1 without augmentation and ``AUTO_VIEWS`` with it.
    """

    enabled: bool = True
    dir: str | None = None
    views: int | None = None

    def __post_init__(self) -> None:
        _check(
            self.views is None or 1 <= self.views <= 64,
            "cache.views",
            self.views,
            "between 1 and 64, or null for automatic",
        )


@dataclass
class Config:
    data: DataConfig = MISSING
    backbone: BackboneConfig = MISSING
    head: HeadConfig = MISSING
    aug: AugConfig = MISSING
    optimizer: OptimizerConfig = MISSING
    finetune: FinetuneConfig = MISSING
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    cache: CacheConfig = field(default_factory=CacheConfig)
    experiment: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.backbone, BackboneConfig):
            return  # a schema with MISSING groups: nothing to check yet
        hands = self.backbone.name is BackboneName.hand_landmarks
        if hands and (
            isinstance(self.aug, ImageAugConfig) or isinstance(self.finetune, UnfreezeConfig)
        ):
            raise ConfigError(
                "backbone=hand_landmarks reads hands with a fixed pretrained model and trains "
                "its head on their landmarks, so image augmentation and fine-tuning do not "
                "apply: use aug=landmarks (or aug=none) and finetune=none."
            )
        if not hands and isinstance(self.aug, LandmarkAugConfig):
            raise ConfigError(
                f"aug=landmarks moves hand landmarks, which only backbone=hand_landmarks "
                f"reads, but backbone={self.backbone.name.value}: use an image option (aug=none, "
                "light, any_angle, strong or background), or backbone=hand_landmarks."
            )


# Schemas a YAML option extends through its defaults list: one per group, or per subclass.
SCHEMAS: dict[str, dict[str, type]] = {
    "data": {"tfds": TfdsDataConfig, "folder": FolderDataConfig},
    "backbone": {"backbone": BackboneConfig},
    "head": {"linear": HeadConfig, "dense": DenseHeadConfig},
    "aug": {"none": AugConfig, "images": ImageAugConfig, "landmarks": LandmarkAugConfig},
    "optimizer": {"adam": AdamConfig, "adamw": AdamWConfig, "sgd": SGDConfig},
    "finetune": {"frozen": FinetuneConfig, "unfreeze": UnfreezeConfig},
    "trainer": {"trainer": TrainerConfig},
    "tracking": {"tracking": TrackingConfig},
    "cache": {"cache": CacheConfig},
}


def register() -> None:
    """Make the schemas visible to Hydra as ``<group>/schema_<name>``, and run.py's help."""
    OmegaConf.register_new_resolver("rps_groups", _groups_help, replace=True)
    store = ConfigStore.instance()
    store.store(name="schema_config", node=Config)
    for group, schemas in SCHEMAS.items():
        for name, node in schemas.items():
            store.store(group=group, name=f"schema_{name}", node=node)


def _groups_help() -> str:
    """``--help``'s list of config groups: each option, the chosen one first; the schemas,
    which are no option of their own, left out."""
    from hydra.core.hydra_config import HydraConfig

    from rps.config.context import project_root

    hc = HydraConfig.get()
    conf = project_root(hc) / "conf"
    lines = []
    for group in sorted(p.name for p in conf.iterdir() if p.is_dir() and p.name != "hydra"):
        options = sorted(p.stem for p in (conf / group).glob("*.yaml"))
        chosen = hc.runtime.choices.get(group)
        first = [chosen] if chosen in options else []
        rest = [o for o in options if o != chosen]
        lines.append(
            f"  {group:<15} "
            + " | ".join(part for part in (", ".join(first), ", ".join(rest)) if part)
        )
    return "\n".join(lines) + "\n"


def compose(
    conf_dir: Path, overrides: Sequence[str] = (), name: str = "config", with_hydra: bool = False
) -> DictConfig:
    """The config that ``python run.py <overrides>`` composes from ``conf_dir`` (``name``
    "live", "evaluate" or "ensemble": that app's), for code outside the apps: benchmarks and
    tests. ``with_hydra`` keeps the ``hydra`` node (launcher, sweeper, sweep params)."""
    from hydra import compose as compose_config
    from hydra import initialize_config_dir

    register()
    register_live()
    register_evaluate()
    register_ensemble()
    with initialize_config_dir(config_dir=str(conf_dir), version_base="1.3"):
        return compose_config(name, overrides=list(overrides), return_hydra_config=with_hydra)


def to_object(cfg: DictConfig) -> Config:
    """Resolve and instantiate the schema dataclasses, running their range checks."""
    _refuse_unknown(cfg)
    return _instantiate(cfg)


def _refuse_unknown(node: DictConfig, prefix: str = "") -> None:
    """A key that no schema has, added with Hydra's ``+``, would be dropped unread: refused."""
    schema = OmegaConf.get_type(node)
    known = (
        {f.name for f in dataclasses.fields(schema)} if dataclasses.is_dataclass(schema) else None
    )
    for key in node.keys():
        name = f"{prefix}{key!s}"
        if known is not None and key not in known:
            where = prefix.rstrip(".") or "the config"
            raise ConfigError(
                f"{name} is not a key of {where}, whose keys are {', '.join(sorted(known))}: "
                "nothing would read it (a leading + adds a key, it does not make one used). "
                "Spell it as one of those keys, without the +."
            )
        if not OmegaConf.is_missing(node, key) and isinstance(child := node[key], DictConfig):
            _refuse_unknown(child, f"{name}.")


def tracking_of(cfg: DictConfig) -> TrackingConfig:
    """The tracking settings alone: what a sweep's parent and a resume need before a job's
    own config is known."""
    return _instantiate(cfg.tracking)


def _instantiate(node: DictConfig):
    try:
        return OmegaConf.to_object(node)
    except MissingMandatoryValue as err:
        key = getattr(err, "full_key", "") or "a required value"
        raise ConfigError(
            f"{key} has no value: set it on the command line, e.g. `python run.py ... {key}=...`."
        ) from None
    except OmegaConfBaseException as err:
        cause = err.__cause__ if isinstance(err.__cause__, ConfigError) else None
        if cause is not None:
            raise cause from None
        raise ConfigError(f"invalid config: {err}") from None


# --- live.py ---------------------------------------------------------------------------------


class LiveMode(str, Enum):
    classify = "classify"
    capture = "capture"


class CaptureSplit(str, Enum):
    train = "train"
    val = "val"
    test = "test"


class RoiFind(str, Enum):
    hand = "hand"  # the hand finder places the square around the hand, anywhere in the image
    fixed = "fixed"  # live.py: the roi.size square; evaluate.py: the model's own crop


@dataclass
class FindConfig:
    """Where the model looks. ``hand``: an image model sees the square around the hand the
    palm detector finds, and an image with no hand reads ``no hand``; a landmark model reads
    that hand. ``fixed``: the fixed square, in which a landmark model still finds the hand."""

    find: RoiFind = RoiFind.hand


@dataclass
class RoiConfig(FindConfig):
    """The fixed square (``find=fixed``), in frame pixels; ``x``/``y`` (its top-left corner)
    null centre it. In a frame it does not fit, the frame's largest centred square is used
    instead: the crop policy of training (rps/data/crop.py).
    """

    size: int = 300
    x: int | None = None
    y: int | None = None

    def __post_init__(self) -> None:
        _check(self.size >= 16, "roi.size", self.size, "at least 16 pixels")
        _check(self.x is None or self.x >= 0, "roi.x", self.x, "0 or more, or null to centre")
        _check(self.y is None or self.y >= 0, "roi.y", self.y, "0 or more, or null to centre")


@dataclass
class CaptureConfig:
    """Capture mode keeps one crop every ``every`` frames (consecutive frames are near
    copies), until ``limit`` crops if set, into ``data.root/<split>/<label>/``."""

    every: int = 5
    limit: int | None = None
    split: CaptureSplit = CaptureSplit.train

    def __post_init__(self) -> None:
        _check(self.every >= 1, "capture.every", self.every, "at least 1 (every frame)")
        _check(
            self.limit is None or self.limit >= 1,
            "capture.limit",
            self.limit,
            "at least 1, or null for no limit",
        )


@dataclass
class RootConfig:
    """``data.root`` of the apps besides training: live.py's capture folder, evaluate.py's
    labelled folder, and where an ensemble's members' data folder is now, when it has moved
    since they trained."""

    root: str | None = None

    @property
    def folder(self) -> Path:
        """``root``, for an app that needs it: their schemas refuse a config without it."""
        if self.root is None:
            raise ConfigError("data.root has no value: set data.root=<folder>.")
        return Path(self.root).expanduser()


@dataclass
class StoreConfig:
    """The tracking store the apps besides training read runs from: null is the one
    training uses."""

    uri: str | None = None


@dataclass
class ModelChoice:
    """The model an app uses: exactly one of an MLflow run id (looked up in
    ``tracking.uri``), any MLflow model URI (``models:/rps/3``), or a saved ``model.keras``
    (or the run output folder that holds it)."""

    run_id: str | None = None
    model_uri: str | None = None
    model_path: str | None = None

    def chosen(self) -> list[str]:
        return [key for key in ("run_id", "model_uri", "model_path") if getattr(self, key)]

    def check_one(self, what: str) -> None:
        given = self.chosen()
        if len(given) != 1:
            raise ConfigError(
                f"{what} needs exactly one model, but {len(given)} of run_id, "
                f"model_uri and model_path are set{': ' + ', '.join(given) if given else ''}. "
                "Pass run_id=<MLflow run id>, model_uri=models:/<name>/<version>, or "
                "model_path=<model.keras or a run's output folder>."
            )


@dataclass
class LiveConfig(ModelChoice):
    """``live.py``: classify a camera, video file or image folder, or capture a dataset."""

    source: str = "0"
    roi: RoiConfig = field(default_factory=RoiConfig)
    smooth: int = 1
    threshold: float = 0.5
    headless: bool = False
    output: str | None = None
    predictions: str | None = None
    mode: LiveMode = LiveMode.classify
    label: str | None = None
    data: RootConfig = field(default_factory=RootConfig)
    capture: CaptureConfig = field(default_factory=CaptureConfig)
    tracking: StoreConfig = field(default_factory=StoreConfig)

    def __post_init__(self) -> None:
        _check(self.smooth >= 1, "smooth", self.smooth, "at least 1 (1 = no smoothing)")
        _check(0.0 <= self.threshold <= 1.0, "threshold", self.threshold, "between 0 and 1")
        if self.mode == LiveMode.capture:
            self._check_capture(self.chosen())
        else:
            self.check_one("classify mode")

    def _check_capture(self, given: list[str]) -> None:
        if given:
            raise ConfigError(
                f"mode=capture records images and uses no model, but {', '.join(given)} is "
                "set: drop it, or use mode=classify to run the model."
            )
        if (
            not self.label
            or self.label != self.label.strip()
            or "/" in self.label
            or "\\" in self.label
            or self.label.startswith(".")
        ):
            raise ConfigError(
                "mode=capture needs label=<class name>, a folder name such as label=rock "
                "(no slashes, no leading dot), but "
                + ("no label is set." if self.label is None else f"label is {self.label!r}.")
            )
        if not self.data.root:
            raise ConfigError(
                "mode=capture needs data.root=<folder>: crops go to "
                f"<data.root>/{self.capture.split.value}/{self.label}/, ready for "
                "`python run.py data=folder data.root=<folder>`."
            )


def register_live() -> None:
    """The schema of ``conf/live.yaml``, as ``schema_live``."""
    ConfigStore.instance().store(name="schema_live", node=LiveConfig)


# --- evaluate.py -----------------------------------------------------------------------------


@dataclass
class EvaluateConfig(ModelChoice):
    """``evaluate.py``: score a model on a labelled folder, ``data.root/<class>/<image>``.
    ``log`` adds the scores to the model's run, when ``run_id`` names it."""

    data: RootConfig = field(default_factory=RootConfig)
    tracking: StoreConfig = field(default_factory=StoreConfig)
    roi: FindConfig = field(default_factory=FindConfig)
    batch_size: int = 32
    log: bool = True

    def __post_init__(self) -> None:
        self.check_one("evaluate.py")
        if not self.data.root:
            raise ConfigError(
                "evaluate.py needs data.root=<folder>: a folder with one subfolder of images "
                "per class (rock/, paper/, scissors/), such as a dataset's test/ folder."
            )
        _check(1 <= self.batch_size <= 4096, "batch_size", self.batch_size, "between 1 and 4096")


def register_evaluate() -> None:
    """The schema of ``conf/evaluate.yaml``, as ``schema_evaluate``."""
    ConfigStore.instance().store(name="schema_evaluate", node=EvaluateConfig)


# --- ensemble.py -----------------------------------------------------------------------------


@dataclass
class EnsembleTrackingConfig(StoreConfig):
    """Where the ensemble's run is filed: ``experiment`` null is the first member's
    experiment; ``register`` a registered model name to file the ensemble's model under."""

    experiment: str | None = None
    register: str | None = None


@dataclass
class EnsembleConfig:
    """``ensemble.py``: one model averaging the logits of finished runs, given as ``runs``
    (MLflow run ids) or as ``sweep_id`` (a sweep's parent run id: its finished jobs)."""

    runs: list[str] = field(default_factory=list)
    sweep_id: str | None = None
    data: RootConfig = field(default_factory=RootConfig)
    tracking: EnsembleTrackingConfig = field(default_factory=EnsembleTrackingConfig)

    def __post_init__(self) -> None:
        if bool(self.runs) == bool(self.sweep_id):
            raise ConfigError(
                "ensemble.py needs its members as exactly one of runs=[<run id>,<run id>,...] "
                "(MLflow run ids, two or more) or sweep_id=<the parent run id of a sweep>, but "
                f"got {'both' if self.runs else 'neither'}."
            )
        if self.runs and len(set(self.runs)) != len(self.runs):
            raise ConfigError(
                f"runs={list(self.runs)} names a run twice: each member counts "
                "once in the average, so list each run once."
            )


def register_ensemble() -> None:
    """The schema of ``conf/ensemble.yaml``, as ``schema_ensemble``."""
    ConfigStore.instance().store(name="schema_ensemble", node=EnsembleConfig)
