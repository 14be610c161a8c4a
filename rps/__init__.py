"""rps: Hydra-configured transfer learning on images."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("rps")  # written once, in pyproject.toml
except PackageNotFoundError:  # a checkout run without installing
    __version__ = "unknown"
