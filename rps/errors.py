"""Errors a user can fix, reported as one paragraph instead of a traceback."""

from __future__ import annotations

import functools
import logging
import sys
import textwrap
from collections.abc import Callable
from typing import TypeVar

log = logging.getLogger("rps")

F = TypeVar("F", bound=Callable)


class UserError(Exception):
    """Bad input: the message names the problem and the fix."""


class ConfigError(UserError):
    pass


class DataError(UserError):
    pass


class WeightsError(UserError):
    pass


def report(err: UserError) -> str:
    text = textwrap.fill(f"error: {err}", width=100, break_long_words=False,
                         break_on_hyphens=False)
    print(text, file=sys.stderr)
    return text


def friendly(task: F) -> F:
    """Turn a UserError raised by ``task`` into a paragraph on stderr and exit status 2."""

    @functools.wraps(task)
    def wrapper(*args, **kwargs):
        try:
            return task(*args, **kwargs)
        except UserError as err:
            log.error("%s", err)
            report(err)
            raise SystemExit(2) from None

    return wrapper
