"""rps: Hydra-configured transfer learning on images.

Importing the package registers the custom Keras layers, so a saved ``model.keras``
loads in a fresh process after ``import rps``.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from rps import model as _model  # noqa: E402,F401  (registers the serializable layers)

__version__ = "0.1.0"
