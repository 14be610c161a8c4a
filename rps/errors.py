"""Errors a user can fix, reported as one paragraph instead of a traceback."""

from __future__ import annotations

import sys
import textwrap


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
