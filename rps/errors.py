"""Errors a user can fix, reported as one paragraph instead of a traceback."""

from __future__ import annotations

import atexit
import logging
import os
import sys
import textwrap
import threading
from collections.abc import Callable
from typing import NoReturn, TypeVar

T = TypeVar("T")


class UserError(Exception):
    """Bad input: the message names the problem and the fix."""


class ConfigError(UserError):
    pass


class DataError(UserError):
    pass


class WeightsError(UserError):
    pass


class SweepFailed(SystemExit):
    """A sweep that ran to its end with some jobs failed: the one exit status 1."""

    def __init__(self) -> None:
        super().__init__(1)


class Interrupted(SystemExit):
    """Ctrl-C in a job: its run is KILLED and its checkpoint kept. Exit status 130, a
    shell's for SIGINT; ``message`` says how to go on."""

    def __init__(self, message: str) -> None:
        super().__init__(130)
        self.message = message


_task_started = False


def task_started() -> None:
    """Called first by every app's Hydra task: Hydra composed the config."""
    global _task_started
    _task_started = True


def exit_status(main: Callable[[], object]) -> None:
    """``main()``, an app's ``hydra.main`` function. Hydra ends a config it cannot compose
    (an unknown option, ``head.units=abc``) with exit status 1 and its own message, before
    any task starts; that is a problem the user can fix, so it exits 2, and 1 stays a
    sweep's with failed jobs. Hydra's ``--help`` composes the config without its own report,
    so its refusal is reported here, without the traceback. When Python was started with
    nothing but the app and its arguments (``python run.py ...``), the app ends the process
    itself (:func:`_leave`); under another program (a test, a profiler, ``python -X ...``)
    it raises SystemExit, and that program ends the process its own way."""
    own_process = sys.orig_argv[1:] == sys.argv
    try:
        _run(main)
    except SystemExit as done:
        if own_process and (done.code is None or isinstance(done.code, int)):
            _leave(done.code or 0)
        raise
    if own_process:
        _leave(0)


def _run(main: Callable[[], object]) -> None:
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    global _task_started
    _task_started = False  # this entry point's task, not one run before it in this process
    try:
        main()
    except SweepFailed:
        raise
    except Interrupted as stopped:
        print(_filled(stopped.message), file=sys.stderr)
        raise SystemExit(stopped.code) from None
    except SystemExit as done:
        if done.code == 1 and not _task_started:
            raise SystemExit(2) from None
        raise
    except (HydraException, OmegaConfBaseException) as err:
        if _task_started:
            raise
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None


def _leave(code: int) -> NoReturn:
    """Ends an app's own process as Python would, but without tearing down every module and
    object it holds: TensorFlow's take seconds, after the app has written all it writes.
    First, as at any exit, Python's own steps before the teardown: threads are told to stop
    (a process pool's, a sweep launcher's) and joined, and exit handlers (MLflow's,
    logging's) run."""
    threading._shutdown()  # type: ignore[attr-defined]
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def first_line(err: Exception) -> str:
    """An exception's first line, short enough for a paragraph that names the fix."""
    lines = str(err).strip().splitlines()
    return lines[0][:300] if lines else type(err).__name__


def _filled(text: str) -> str:
    return textwrap.fill(text, width=100, break_long_words=False, break_on_hyphens=False)


def report(err: UserError) -> str:
    text = _filled(f"error: {err}")
    print(text, file=sys.stderr)
    return text


PARAGRAPH = "rps_paragraph"  # a log record's flag: the user reads it as a paragraph


class NotOnConsole(logging.Filter):
    """Keeps off the console a log record that the user reads as a paragraph on stderr, so
    each error is printed once (the apps' console log handler: conf/hydra/job_logging)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not getattr(record, PARAGRAPH, False)


def reported(task: Callable[[], T]) -> T:
    """``task()``, for an app's Hydra task: a UserError ends it with its paragraph (on
    stderr, and in the run's log file) and exit status 2."""
    try:
        return task()
    except UserError as err:
        logging.getLogger(__name__).error("%s", err, extra={PARAGRAPH: True})
        report(err)
        raise SystemExit(2) from None
