"""Shared fixtures: real data made small (tiny images, few files), never mocks."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from lightning_ad.data.synthetic import generate_category
from lightning_ad.environment import apply_mlflow_defaults
from lightning_ad.sweep.storage import close_storages

apply_mlflow_defaults()  # as the CLI does, before any test module imports MLflow

TINY_SIZE = 64


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The three built-in categories at 64 px with at most 10 images per folder."""
    root = tmp_path_factory.mktemp("synthetic")
    for category in ("screw", "grid", "transistor"):
        generate_category(category, root, seed=0, image_size=TINY_SIZE, max_per_folder=10)
    return root


@pytest.fixture
def screw_copy(synthetic_root: Path, tmp_path: Path) -> Path:
    """A writable copy of the tiny screw category, for tests that break it."""
    return Path(shutil.copytree(synthetic_root / "screw", tmp_path / "screw"))


@pytest.fixture(autouse=True)
def no_ambient_tracking_uri(monkeypatch: pytest.MonkeyPatch) -> None:
    """MLflow's set_tracking_uri (called by Lightning's MLFlowLogger) exports
    MLFLOW_TRACKING_URI; drop it so that one test's store never leaks into the next."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


@pytest.fixture(autouse=True)
def fresh_storages() -> Iterator[None]:
    """Each test opens its own Optuna storages: a process shares one per URL
    (``storage.shared_storage``), which must not carry one test's connections into the next."""
    yield
    close_storages()
