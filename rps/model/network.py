"""The one data path: raw RGB -> crop -> augment -> preprocess -> backbone -> head -> logits.

Everything sits in one functional Keras model, so a saved ``model.keras`` classifies raw
frames the same way in training, live inference and serving. The saved model is the
inference one, without the training-only augment stage: built-in layers only, so it reloads
with plain Keras. The class names are saved beside it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import keras

from rps.config.job import Config
from rps.data.images import square_resizer
from rps.errors import UserError, first_line
from rps.model import aug, backbone, head

BACKBONE = "backbone"
HEAD = "head"
POOL = "pool"
MODEL_FILE = "model.keras"
CLASSES_FILE = "class_names.json"


@dataclass(frozen=True)
class Classifier:
    """A config's model, and the parts of it that each stage of training works on, built
    once: all share the same layers, so the same weights."""

    train: keras.Model  # raw RGB -> logits, with the augment stage when the config has one
    inference: keras.Model  # the same without it: the model to save and serve
    backbone: keras.Model | None  # frozen in stage 1, its top unfrozen in stage 2
    head: keras.Model  # what stage 1 fits on cached features
    augment: keras.Sequential | None

    def feature_extractor(self) -> keras.Model:
        """``inference`` up to the pooled backbone features, what the cache stores. Built when
        asked, outside the trainer's distribution scope, so its passes stay on one device."""
        return keras.Model(
            self.inference.inputs, self.inference.get_layer(POOL).output, name="features"
        )


def build(cfg: Config, num_classes: int) -> Classifier:
    """The augment stage is identity at inference, and its custom layers would make a saved
    model need rps to reload: without them the inference model holds built-in layers only.
    The backbone starts frozen: stage 1 trains the head alone."""
    base = backbone.build(cfg.backbone)
    base.name = BACKBONE
    backbone.freeze(base)
    # Pooling keeps the backbone's channels: they are the head's features.
    top = head.build(cfg.head, base.output.shape[-1], num_classes)
    policy = aug.on_images(cfg.aug)
    augmentation = aug.build(policy, cfg.trainer.seed) if policy is not None else None
    resize = square_resizer(cfg.backbone.input_size)
    to_features = [
        backbone.preprocessing(cfg.backbone.name),
        base,
        keras.layers.GlobalAveragePooling2D(name=POOL),
    ]
    name = f"rps_{cfg.backbone.name.value}"
    inference = _chain([resize, *to_features, top], name)
    train = (
        inference
        if augmentation is None
        else _chain([resize, augmentation, *to_features, top], name)
    )
    return Classifier(
        train=train, inference=inference, backbone=base, head=top, augment=augmentation
    )


def _chain(stages: list[keras.Layer], name: str) -> keras.Model:
    images = keras.Input((None, None, 3), name="image")
    x = images
    for stage in stages:
        # training=False keeps BatchNorm in inference mode even when fine-tuning unfreezes it.
        x = stage(x, training=False) if stage.name == BACKBONE else stage(x)
    return keras.Model(images, x, name=name)


def mean_of(members: Sequence[keras.Model], given: keras.KerasTensor, name: str) -> keras.Model:
    """The mean of the members' logits on ``given``, what they all take."""
    logits = []
    for index, member in enumerate(members):
        member.name = f"member_{index}"  # nested models need distinct names to be saved
        logits.append(member(given))
    return keras.Model(given, keras.layers.Average(name="mean_logits")(logits), name=name)


def input_size(model: keras.Model) -> int:
    """The side of the square an image model's backbone sees; an ensemble's largest
    member's."""
    try:
        return model.get_layer(BACKBONE).input.shape[1]
    except ValueError:  # no backbone layer of its own: an ensemble of nested models
        return max(input_size(layer) for layer in model.layers if isinstance(layer, keras.Model))


def save(model: keras.Model, class_names: list[str], folder: Path) -> Path:
    """``model.keras`` and ``class_names.json`` (logit i is class_names[i]) in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    model.save(folder / MODEL_FILE)
    (folder / CLASSES_FILE).write_text(json.dumps(class_names))
    return folder / MODEL_FILE


def load(path: str | Path) -> tuple[keras.Model, list[str]]:
    """A saved classifier and its class names, from ``model.keras`` or the folder holding it.

    ``compile=False``: inference needs no optimizer.
    """
    path = Path(path)
    file = path / MODEL_FILE if path.is_dir() else path
    names = file.with_name(CLASSES_FILE)
    if not file.is_file() or not names.is_file():
        raise UserError(
            f"no saved model at {path}: expected {MODEL_FILE} with {CLASSES_FILE} beside it, "
            "as every training run writes into its output folder (outputs/runs/<time>/)."
        )
    try:
        class_names = json.loads(names.read_text())
        if not (
            isinstance(class_names, list)
            and class_names
            and all(isinstance(name, str) for name in class_names)
        ):
            raise ValueError("not a list of class names")
    except ValueError as err:
        raise UserError(
            f"{names} is not the list of class names rps writes ({first_line(err)}): it was "
            f"edited or damaged. Restore it from the run's artifacts, or train again."
        ) from None
    try:
        model = keras.models.load_model(file, compile=False)
    except Exception as err:  # Keras raises many kinds for a damaged or foreign file
        raise UserError(
            f"{file} cannot be loaded as a model ({first_line(err)}): it is cut short, "
            "damaged, or not a model that rps saved. Train again, or point at another run's "
            "output folder or run id."
        ) from None
    outputs = model.output_shape[-1]
    if outputs != len(class_names):
        raise UserError(
            f"{file} gives {outputs} scores but {names} names {len(class_names)} classes: the "
            "two files come from different runs. Keep a run's two files together."
        )
    return model, class_names
