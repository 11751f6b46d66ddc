"""The one exception type a user is meant to read.

Anything raised as :class:`LightningADError` is a problem with the user's input or environment
(a missing folder, a corrupt image, a bad flag). The CLI prints its message as one line and exits
with status 2; every other exception is a bug and keeps its traceback.
"""


class LightningADError(Exception):
    """A user-facing error: the message names the file, key or value and says what to do."""


class DataError(LightningADError):
    """A data set on disk is missing, incomplete or unreadable."""


def describe(err: BaseException) -> str:
    """``Type: message``, at most 1,000 characters: how a trial records the error it died of."""
    return f"{type(err).__name__}: {err}"[:1000]
