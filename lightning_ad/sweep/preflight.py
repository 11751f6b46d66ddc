"""Preflight: everything a sweep needs, checked before any study, run or file is created.

The spec is checked when it is read (``spec``); here come the categories (resolved, listed, one
image of each split decoded, both labels present), the backbones' weights, the tracking URI and
the Optuna storage. Each problem is one ``LightningADError`` naming the value, so ``lightning-ad
sweep`` exits with 2 and leaves nothing behind, instead of failing every cell one by one.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from lightning_ad.errors import LightningADError, redact
from lightning_ad.sweep.spec import SweepTarget
from lightning_ad.sweep.storage import local_store

MLFLOW_DB_SCHEMES = ("postgresql", "mysql", "mssql")
"""MLflow's database stores (each may carry a driver: ``postgresql+psycopg``), like sqlite."""
MLFLOW_REMOTE_SCHEMES = ("databricks", "databricks-uc", "uc")
"""Hosted stores whose credentials live in the user's profile: MLflow checks them itself."""


def preflight(targets: Sequence[SweepTarget]) -> None:
    """Check every target (its category, weights, tracking URI and storage); raise on the
    first problem. The settings fingerprint is computed here, once."""
    for target in targets:
        check_category(target)
        check_weights(target)
        target.settings  # noqa: B018 - hashes the category's files now, before any worker
    for uri in sorted({t.tracking_uri for t in targets}):
        check_tracking_uri(uri)
    for storage in sorted({t.storage or "" for t in targets}):
        check_storage(storage or None)


def check_category(target: SweepTarget) -> None:
    """Resolved, listed, one image per split decoded, normal and anomalous test images."""
    from lightning_ad.data.mvtec import GOOD, MVTecCategory, read_image
    from lightning_ad.data.resolve import resolve_category

    resolved = resolve_category(target.category, target.data_root, target.data_dir)
    category = MVTecCategory.load(resolved.root)
    test = resolved.root / "test"
    if not any(s.defect == GOOD for s in category.test):
        raise LightningADError(
            f"{test}/{GOOD} has no images: the test split needs normal images to score against"
        )
    if not category.defect_types:
        raise LightningADError(
            f"{test} has no defect folder with images: the test split needs anomalous images "
            f"(test/<defect>/) to measure an AUROC"
        )
    read_image(category.train[0].path)
    read_image(category.test[0].path)


def check_weights(target: SweepTarget) -> None:
    """Each backbone of the grid built once with its ``pretrained`` setting: a missing or
    wrong weights file is named now."""
    from lightning_ad.models.backbones import build_backbone

    spec = target.spec
    for backbone, pretrained in sorted(
        {(c["backbone"], str(spec.trial_config(c).pretrained)) for c in spec.runnable_cells()}
    ):
        build_backbone(backbone, pretrained)


def check_tracking_uri(uri: str) -> None:
    """Any store MLflow accepts, checked for what it is, without writing to it."""
    from lightning_ad import tracking

    scheme = uri.split(":", 1)[0].split("+", 1)[0] if "://" in uri else ""
    if scheme == "sqlite":
        _check_creatable(Path(uri.removeprefix("sqlite:///")), f"the MLflow store {uri}")
    elif scheme in ("http", "https"):
        tracking.ensure_reachable(uri)
    elif scheme in MLFLOW_DB_SCHEMES:
        _check_connects(uri, "the MLflow tracking store")
    elif scheme not in MLFLOW_REMOTE_SCHEMES:
        raise LightningADError(
            f"tracking URI {redact(uri)}: not a store MLflow {_mlflow_version()} accepts; use "
            "sqlite:///PATH, http(s)://HOST:PORT (an mlflow server), a database URL "
            f"({', '.join(MLFLOW_DB_SCHEMES)}) or databricks"
        )


def check_storage(url: str | None) -> None:
    """A local file whose folder can be made, or a database that answers."""
    store = local_store(url)
    if store is not None:
        _check_creatable(store, f"the Optuna storage {store}")
    elif url is not None and "://" not in url:
        raise LightningADError(
            f"--storage {url}: neither a journal file (ending in .journal or .log) nor a "
            "database URL (postgresql+psycopg://USER@HOST/DB, sqlite:///PATH)"
        )
    elif url is not None:
        _check_connects(url, "the Optuna storage")


def _check_creatable(path: Path, what: str) -> None:
    """``path`` is a writable file, or can be made: its nearest existing parent is a writable
    folder."""
    if path.is_dir():
        raise LightningADError(f"{what}: {path} is a folder; name a file")
    existing = path if path.exists() else next(p for p in path.absolute().parents if p.exists())
    if existing != path and not existing.is_dir():
        raise LightningADError(f"{what}: {existing} is a file, not a folder; pick another location")
    if not os.access(existing, os.W_OK):
        raise LightningADError(f"{what}: {existing} is not writable; pick another location")


def _check_connects(url: str, what: str) -> None:
    import sqlalchemy

    try:
        engine = sqlalchemy.create_engine(url)
        with engine.connect():
            pass
        engine.dispose()
    except Exception as err:  # SQLAlchemy raises many kinds; all mean "cannot use this URL"
        raise LightningADError(f"cannot open {what} {redact(url)}: {err}") from err


def _mlflow_version() -> str:
    from importlib.metadata import version

    return version("mlflow")
