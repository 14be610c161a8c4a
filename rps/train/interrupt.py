"""Ctrl-C that always stops training.

Python raises KeyboardInterrupt wherever the main thread is when SIGINT arrives. When that
is a destructor, and TensorFlow frees iterators and functions all the time, Python prints
"Exception ignored" and training goes on as if nothing happened.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator

import keras


class CtrlC(keras.callbacks.Callback):
    """Remembers a Ctrl-C and raises it again at the end of the next batch or epoch, in case
    the first KeyboardInterrupt was swallowed."""

    def __init__(self) -> None:
        super().__init__()
        self.received = False

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        """Takes over SIGINT inside the block, unless Python's own handler is not in charge
        (a background job that ignores SIGINT, a worker thread)."""
        if (
            threading.current_thread() is not threading.main_thread()
            or signal.getsignal(signal.SIGINT) is not signal.default_int_handler
        ):
            yield
            return

        def handler(signum, frame):
            self.received = True
            raise KeyboardInterrupt

        signal.signal(signal.SIGINT, handler)
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, signal.default_int_handler)

    def _check(self, *args, **kwargs) -> None:
        if self.received:
            raise KeyboardInterrupt

    on_train_batch_end = on_test_batch_end = on_predict_batch_end = on_epoch_end = _check
