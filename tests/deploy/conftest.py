"""A tiny trained trial whose detector is logged, in a temporary MLflow store."""

from __future__ import annotations

from pathlib import Path

import pytest

from lightning_ad.config import TrialConfig
from lightning_ad.train import TrialResult, run_trial
from tests.helpers import TINY


@pytest.fixture(scope="session")
def store(tmp_path_factory: pytest.TempPathFactory) -> str:
    return f"sqlite:///{tmp_path_factory.mktemp('deploy') / 'mlflow.db'}"


@pytest.fixture(scope="session")
def trial(synthetic_root: Path, store: str) -> TrialResult:
    """mobilenet_v2 + arcface on the tiny screw, scored by ``fused`` (the scorer that needs the
    most: the trained network, its frozen twin and their reference embeddings)."""
    config = TrialConfig(**TINY, head="arcface", score="fused", data_root=str(synthetic_root))
    return run_trial(config, tracking_uri=store, experiment="deploy", progress_bar=False)
