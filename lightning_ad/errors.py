"""The one exception type a user is meant to read.

Anything raised as :class:`LightningADError` is a problem with the user's input or environment
(a missing folder, a corrupt image, a bad flag). The CLI prints its message as one line and exits
with status 2; every other exception is a bug and keeps its traceback.
"""


class LightningADError(Exception):
    """A user-facing error: the message names the file, key or value and says what to do."""


class DataError(LightningADError):
    """A data set on disk is missing, incomplete or unreadable."""
