"""``--help`` from the app's own ``hydra/help`` template, without going through Hydra's
help, which lists every config group (its own and ours) whether the template shows them
or not, deep-copying its config repository once per group: 4 of a 5 s answer."""

from __future__ import annotations

import string
import sys
from collections.abc import Sequence
from pathlib import Path

from omegaconf import OmegaConf, open_dict

from rps.config import compose

HELP_FLAGS = {"--help", "-h"}


def answer(conf_dir: Path, name: str, argv: Sequence[str] | None = None) -> None:
    """Print the help and exit when the arguments ask for plain ``--help`` (with any
    overrides); any other flag beside it, or overrides that do not compose, are Hydra's to
    answer, as without this."""
    args = list(sys.argv[1:] if argv is None else argv)
    flags = {a for a in args if a.startswith("-")}
    if not flags & HELP_FLAGS or flags - HELP_FLAGS:
        return
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    try:
        help_text = text(conf_dir, name, [a for a in args if not a.startswith("-")])
    except (HydraException, OmegaConfBaseException):
        return
    print(help_text)
    sys.exit(0)


def text(conf_dir: Path, name: str, overrides: Sequence[str]) -> str:
    """The help of the app whose primary config is ``conf_dir/<name>.yaml``, as Hydra's
    ``--help`` prints it: the template, with ``$CONFIG`` the composed config."""
    from hydra.core.hydra_config import HydraConfig

    cfg = compose.config(conf_dir, overrides, name=name, with_hydra=True)
    HydraConfig.instance().set_config(cfg)  # what ${rps_groups:} reads the choices from
    template = cfg.hydra.help.template
    with open_dict(cfg):
        del cfg["hydra"]
    return string.Template(template).substitute(CONFIG=OmegaConf.to_yaml(cfg))
