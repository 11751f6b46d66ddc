"""The one exception type a user is meant to read.

Anything raised as :class:`LightningADError` is a problem with the user's input or environment
(a missing folder, a corrupt image, a bad flag). The CLI prints its message as one line and exits
with status 2; every other exception is a bug and keeps its traceback.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class LightningADError(Exception):
    """A user-facing error: the message names the file, key or value and says what to do."""


class DataError(LightningADError):
    """A data set on disk is missing, incomplete or unreadable."""


def unknown(kind: str, value: object, valid: Iterable[str], of: str = "") -> LightningADError:
    """``unknown <kind> 'value' [for <of>] (did you mean 'x'?); valid: a, b, c``: the one way
    every name a user types (a backbone, a head, a key of a sweep file, ...) is refused."""
    valid = [str(v) for v in valid]
    hint = difflib.get_close_matches(str(value), valid, n=1)
    did_you_mean = f" (did you mean '{hint[0]}'?)" if hint else ""
    owner = f" for {of}" if of else ""
    return LightningADError(
        f"unknown {kind} '{value}'{owner}{did_you_mean}; valid: {', '.join(valid) or 'none'}"
    )


def describe(err: BaseException) -> str:
    """``Type: message``, at most 1,000 characters: how a trial records the error it died of."""
    return f"{type(err).__name__}: {err}"[:1000]
