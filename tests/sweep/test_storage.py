"""Optuna storages: the journal by default, any URL on request, one clear error when not."""

from __future__ import annotations

import pytest

from lightning_ad.errors import LightningADError
from lightning_ad.sweep.storage import open_storage


def test_unreachable_storage_is_one_clear_error() -> None:
    with pytest.raises(
        LightningADError,
        match=r"cannot open the Optuna storage postgresql\+psycopg://me:\*\*\*@127.0.0.1:9/x",
    ):
        open_storage("postgresql+psycopg://me:secret@127.0.0.1:9/x")
