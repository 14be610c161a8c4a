"""The configs of all four apps: their schemas registered with Hydra, composed outside the
apps (tests, benchmarks), and turned into typed objects with every range checked.

Hydra merges each YAML option onto its schema, so a misspelt key or a wrong type fails at
composition. Range checks live in the schemas' ``__post_init__`` and run in
:func:`to_object`, because OmegaConf checks types but not values.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue, OmegaConfBaseException

from rps.config.apps import EnsembleConfig, EvaluateConfig, LiveConfig
from rps.config.data import FolderDataConfig, TfdsDataConfig
from rps.config.job import CacheConfig, Config, TrackingConfig, TrainerConfig
from rps.config.model import (
    AdamConfig,
    AdamWConfig,
    AugConfig,
    BackboneConfig,
    DenseHeadConfig,
    FinetuneConfig,
    HeadConfig,
    ImageAugConfig,
    LandmarkAugConfig,
    SGDConfig,
    UnfreezeConfig,
)
from rps.errors import ConfigError

# The schema of each app's whole config.
APPS: dict[str, type] = {
    "config": Config,
    "live": LiveConfig,
    "evaluate": EvaluateConfig,
    "ensemble": EnsembleConfig,
}
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
    """Make the schemas visible to Hydra in a group of their own, ``schema/``, which a YAML
    option extends (``- /schema/head/dense@_here_``) and no user picks; and the help's list
    of groups."""
    OmegaConf.register_new_resolver("rps_groups", _groups_help, replace=True)
    store = ConfigStore.instance()
    for name, node in APPS.items():
        store.store(group="schema", name=name, node=node)
    for group, schemas in SCHEMAS.items():
        for name, node in schemas.items():
            store.store(group=f"schema/{group}", name=name, node=node)


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


def config(
    conf_dir: Path, overrides: Sequence[str] = (), name: str = "config", with_hydra: bool = False
) -> DictConfig:
    """The config that ``python run.py <overrides>`` composes from ``conf_dir`` (``name``
    "live", "evaluate" or "ensemble": that app's), for code outside the apps: benchmarks and
    tests. ``with_hydra`` keeps the ``hydra`` node (launcher, sweeper, sweep params)."""
    from hydra import compose as compose_config
    from hydra import initialize_config_dir

    register()
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
