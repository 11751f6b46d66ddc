"""Sweep fixtures: the quick sweep's target with its study, runs and reports in a temporary
folder."""

from __future__ import annotations

from pathlib import Path

import pytest

from lightning_ad.sweep.spec import SweepSpec, SweepTarget
from tests.helpers import SWEEPS, mlflow_store


def temporary_target(spec: SweepSpec, data_root: Path, tmp_path: Path) -> SweepTarget:
    """The screw sweep of ``spec`` with its study, runs and reports under ``tmp_path``."""
    return SweepTarget(
        spec.with_category("screw"),
        "screw",
        storage=str(tmp_path / "optuna.journal"),
        tracking_uri=mlflow_store(tmp_path),
        data_root=str(data_root),
        reports_dir=str(tmp_path / "reports"),
    )


@pytest.fixture
def target(synthetic_root: Path, tmp_path: Path) -> SweepTarget:
    return temporary_target(SweepSpec.load(SWEEPS / "quick.yaml"), synthetic_root, tmp_path)
