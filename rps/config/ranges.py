"""The range check every schema's ``__post_init__`` runs: OmegaConf checks types, not values."""

from typing import Any

from rps.errors import ConfigError


def in_range(ok: bool, key: str, value: Any, rule: str) -> None:
    if not ok:
        raise ConfigError(f"{key}={value!r} is out of range: it must be {rule}.")
