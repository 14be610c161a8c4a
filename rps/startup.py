"""What a process starts with: TensorFlow's import, off the console, and the cores it may use.

Importing TensorFlow and probing for GPUs prints lines from C++ (oneDNN, "Could not find cuda
drivers", "failed call to cuInit") before Python's logging or ``TF_CPP_MIN_LOG_LEVEL`` can
stop them. They came before every message of rps's, errors included, and say nothing a user
can act on, so they are logged at DEBUG, which neither the console nor the log file shows
unless asked (``hydra.verbose=rps``).
"""

from __future__ import annotations

import gc
import logging
import os
import sys
import tempfile

log = logging.getLogger(__name__)


def import_tensorflow() -> None:
    """Import TensorFlow and find its devices with file descriptor 2 sent to a file. Its
    lines are logged at DEBUG; if the import fails, they are printed as they came."""
    if "tensorflow" in sys.modules:
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as captured:
        os.dup2(captured.fileno(), 2)
        try:
            import tensorflow as tf

            tf.config.list_physical_devices()
        except BaseException:
            os.dup2(saved, 2)
            captured.seek(0)
            sys.stderr.write(captured.read().decode(errors="replace"))
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        captured.seek(0)
        for line in captured.read().decode(errors="replace").splitlines():
            log.debug("%s", line)
    # What the import made lives as long as the process; the collector need not walk it on
    # every full collection (Keras' clear_session runs one per model built).
    gc.freeze()


def cores() -> int:
    """The CPU cores this process may run on (a container or ``taskset`` may allow fewer
    than the machine has): how many workers pay for themselves on CPU-bound work."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
