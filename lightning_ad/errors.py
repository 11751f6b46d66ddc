"""The one exception type a user is meant to read.

Anything raised as :class:`LightningADError` is a problem with the user's input or environment
(a missing folder, a corrupt image, a bad flag). The CLI prints its message as one line and exits
with status 2; every other exception is a bug and keeps its traceback.
"""

from __future__ import annotations

import difflib
import logging
import re
from collections.abc import Iterable

# ``scheme://user:secret@host`` and ``password=secret`` (a URL's query, libpq's key=value
# strings): the two ways a password travels in the URLs and error texts this tool handles.
_URL_PASSWORD = re.compile(r"(\w[\w+.-]*://[^:/@\s]*:)[^@\s]+(@)")
_KEY_PASSWORD = re.compile(r"(\w*password['\"]?\s*[=:]\s*['\"]?)[^&\s'\",}]+", re.IGNORECASE)


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


def redact(text: str) -> str:
    """``text`` with every password in it replaced by ``***``: what any URL or error text
    goes through before it is printed, logged, or stored in MLflow or Optuna."""
    return _KEY_PASSWORD.sub(r"\1***", _URL_PASSWORD.sub(r"\1***\2", text))


class RedactSecrets(logging.Filter):
    """A handler filter: each record's message and traceback redacted before it is written
    (Optuna logs a failed trial's exception, whose text can hold a storage URL)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg, record.args = redact(record.getMessage()), ()
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        return True


def describe(err: BaseException) -> str:
    """``Type: message``, redacted, at most 1,000 characters: how a trial records the error it
    died of."""
    return redact(f"{type(err).__name__}: {err}")[:1000]
