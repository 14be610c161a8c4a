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


def reported(task: Callable[[], T]) -> T:
    """``task()``, for an app's Hydra task: a UserError ends it with its paragraph (in the
    log, and on stderr) and exit status 2, as run.py's."""
    try:
        return task()
    except UserError as err:
        logging.getLogger("rps").error("%s", err)
        report(err)
        raise SystemExit(2) from None
