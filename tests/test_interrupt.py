"""Ctrl-C stops training even when Python swallows the first KeyboardInterrupt."""

import signal
import subprocess
import sys

from conftest import REPO

# Run in a fresh interpreter whose SIGINT is Python's own, whatever the test runner's is.
SCRIPT = """
import os, signal, time
from rps.interrupt import CtrlC

class Freed:
    def __del__(self):  # as TensorFlow's iterators are freed: Python drops what this raises
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.5)

guard = CtrlC()
with guard.installed():
    Freed()
    print("went on", flush=True)
    try:
        guard.on_train_batch_end(0)
    except KeyboardInterrupt:
        print("raised at the next batch", flush=True)
assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
ignored = signal.signal(signal.SIGINT, signal.SIG_IGN)
with CtrlC().installed():
    assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN  # a background job stays as is
print("done", flush=True)
"""


def test_a_swallowed_ctrl_c_is_raised_again_at_the_next_batch():
    proc = subprocess.run([sys.executable, "-c", SCRIPT], cwd=REPO, capture_output=True,
                          text=True, timeout=120, check=False,
                          preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split("\n")[:3] == ["went on", "raised at the next batch", "done"]
    assert "KeyboardInterrupt" in proc.stderr  # Python's "Exception ignored in __del__"
