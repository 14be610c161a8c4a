"""Errors a user can fix, reported as one paragraph instead of a traceback."""

from __future__ import annotations

import logging
import sys
import textwrap
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


class UserError(Exception):
    """Bad input: the message names the problem and the fix."""


class ConfigError(UserError):
    pass


class DataError(UserError):
    pass


class WeightsError(UserError):
    pass


def first_line(err: Exception) -> str:
    """An exception's first line, short enough for a paragraph that names the fix."""
    lines = str(err).strip().splitlines()
    return lines[0][:300] if lines else type(err).__name__


def report(err: UserError) -> str:
    text = textwrap.fill(f"error: {err}", width=100, break_long_words=False,
                         break_on_hyphens=False)
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
        logging.getLogger("rps").error("%s", err, extra={PARAGRAPH: True})
        report(err)
        raise SystemExit(2) from None
