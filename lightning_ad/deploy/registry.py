"""Registering a trial's detector in MLflow's model registry.

The run is the one the user names: by its id, or by its sweep cell's grid values and seed. It
is never picked by a test metric: choosing the seed with the best test AUROC would report an
optimistic number for the detector that goes to the line.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import TYPE_CHECKING

from lightning_ad import tracking
from lightning_ad.config import check_name
from lightning_ad.data.classes import TwinClasses
from lightning_ad.errors import LightningADError
from lightning_ad.grid import GRID_KEYS, MODEL_KEYS
from lightning_ad.packaging.mlflow_model import MODEL_ARTIFACT

if TYPE_CHECKING:
    from collections.abc import Collection

    from mlflow.entities import Run


def parse_cell(text: str) -> dict[str, str]:
    """``backbone=efficientnet_lite0,head=arcface,classes=3`` -> the run parameters they mean
    (``classes`` as its label, e.g. ``class3``)."""
    cell: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, sep, value = part.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not value:
            raise LightningADError(f"--cell {text!r}: {part!r} is not KEY=VALUE")
        if key not in MODEL_KEYS:
            raise LightningADError(
                f"--cell {text!r}: unknown key {key!r}; use {', '.join(MODEL_KEYS)} "
                "(--category and --seed are flags of their own)"
            )
        cell[key] = TwinClasses.parse(value).label if key == "classes" else value
    if not cell:
        raise LightningADError("--cell is empty; e.g. --cell backbone=X,head=Y,classes=3")
    return cell


def _describe(params: dict[str, str]) -> str:
    return ",".join(f"{k}={params[k]}" for k in MODEL_KEYS if k in params)


def cell_runs(
    uri: str,
    experiment: str,
    sweep: str,
    fingerprint: str,
    category: str,
    cell: dict[str, str],
    grid_keys: Collection[tuple] | None = None,
) -> list[Run]:
    """The complete runs of the one cell ``cell`` names, one per seed (the latest, as the
    tables take it) and, given the sweep's ``grid_keys`` (its runnable cells' grid values, as
    ``SweepSpec.runnable_keys``), only the seeds its grid still holds."""
    runs = tracking.finished_trial_runs(uri, experiment, sweep, fingerprint, category)
    if grid_keys is not None:
        grid = {tuple(str(v) for v in key) for key in grid_keys}
        runs = [r for r in runs if tuple(r.data.params.get(k) for k in GRID_KEYS) in grid]
    latest = {tuple(r.data.params.get(k) for k in GRID_KEYS): r for r in runs}  # oldest first
    runs = list(latest.values())
    matching = [r for r in runs if all(r.data.params.get(k) == v for k, v in cell.items())]
    cells = sorted({_describe(r.data.params) for r in matching})
    if len(cells) > 1:
        raise LightningADError(
            f"--cell {_describe(cell)} matches {len(cells)} cells ({'; '.join(cells)}); "
            "name the rest of them"
        )
    if not matching:
        known = sorted({_describe(r.data.params) for r in runs}) or ["none"]
        raise LightningADError(
            f"sweep {sweep}, category {category}, fingerprint {fingerprint} has no complete run "
            f"of cell {_describe(cell)}; its complete cells: {'; '.join(known)}"
        )
    return matching


def run_of_seed(runs: list[Run], seed: int | None) -> tuple[Run, str]:
    """The run of ``seed`` among a cell's ``runs``; without a seed, the lowest one. Returns the
    run and a line that says which was chosen."""
    by_seed = {int(r.data.params["seed"]): r for r in runs}
    seeds = ", ".join(map(str, sorted(by_seed)))
    if seed is None:
        seed = min(by_seed)
        return by_seed[seed], f"the cell has seeds {seeds}; registering seed {seed} (--seed)"
    if seed not in by_seed:
        raise LightningADError(f"--seed {seed}: the cell has complete runs of seeds {seeds}")
    return by_seed[seed], f"registering seed {seed} of the cell's seeds {seeds}"


@dataclass(frozen=True)
class Registered:
    name: str
    version: str
    run_id: str
    tags: dict[str, str]

    @property
    def uri(self) -> str:
        return f"models:/{self.name}/{self.version}"


def register(
    uri: str, run_id: str, name: str | None = None, seeds: list[Run] | None = None
) -> Registered:
    """Register run ``run_id``'s detector as a new version of a registered model.

    Args:
        uri: the tracking (and registry) URI.
        run_id: a finished, complete trial run that logged its detector.
        name: the registered model (default ``<category>-detector``).
        seeds: the runs of the run's cell, whose numbers tag the version (default: those its
            sweep logged under its fingerprint).

    Returns:
        The new version: its name, number, run and tags (sweep, cell, fingerprint, numbers).

    Raises:
        LightningADError: an unknown run, one that did not finish its test or logged no
            detector, or a model name that is not allowed.
    """
    import mlflow
    from mlflow.exceptions import MlflowException

    client = tracking.client(uri)
    try:
        run = client.get_run(run_id)
        files = client.list_artifacts(run_id, MODEL_ARTIFACT)
    except MlflowException as err:
        raise LightningADError(f"run {run_id}: not found in {uri} ({err.message})") from err
    if run.info.status != "FINISHED" or run.data.tags.get(tracking.COMPLETE_TAG) != "true":
        raise LightningADError(
            f"run {run_id} is {run.info.status} without {tracking.COMPLETE_TAG}=true: it did "
            "not finish its test, so its detector is not the one its metrics describe; register "
            "a finished trial (lightning-ad table lists them)"
        )
    if not any(f.path == f"{MODEL_ARTIFACT}/MLmodel" for f in files):
        raise LightningADError(
            f"run {run_id} has no detector ({MODEL_ARTIFACT}/): it ran with log_model: false "
            "or before detectors were logged; train its cell again (lightning-ad train with the "
            "cell's settings, or a sweep with log_model: true) and register the new run"
        )
    name = name or f"{run.data.params.get('category', 'lightning_ad')}-detector"
    check_name("model name", name)
    tags = version_tags(uri, client.get_experiment(run.info.experiment_id).name, run, seeds)
    with tracking.using(uri):
        version = mlflow.register_model(f"runs:/{run_id}/{MODEL_ARTIFACT}", name, tags=tags)
    client.update_model_version(name, version.version, _description(tags))
    return Registered(name, str(version.version), run_id, tags)


def version_tags(
    uri: str, experiment: str, run: Run, seeds: list[Run] | None = None
) -> dict[str, str]:
    """The run's sweep, cell, fingerprint, seed and test numbers; for a sweep trial, also its
    cell's median test AUROC over ``seeds`` (default: the cell's runs under the same
    fingerprint): what its table shows."""
    params, metrics, tags = run.data.params, run.data.metrics, run.data.tags
    out = {
        "run_id": run.info.run_id,
        "category": params.get("category", ""),
        "cell": _describe(params),
        "seed": params.get("seed", ""),
        "score_used": params.get("score_used", ""),
    }
    for key in ("test/auc", "val/threshold", "test/false_alarm_rate", "test/detection_rate"):
        if key in metrics:
            out[key] = f"{metrics[key]:.4f}"
    sweep, fingerprint = tags.get(tracking.SWEEP_TAG), tags.get(tracking.FINGERPRINT_TAG)
    if sweep and fingerprint:
        cell = {k: params[k] for k in MODEL_KEYS}
        runs = seeds or cell_runs(uri, experiment, sweep, fingerprint, out["category"], cell)
        aucs = [r.data.metrics["test/auc"] for r in runs if "test/auc" in r.data.metrics]
        out |= {
            "sweep": sweep,
            "fingerprint": fingerprint,
            "cell_median_test_auc": f"{statistics.median(aucs):.4f}",
            "cell_seeds": str(len(aucs)),
        }
    return out


def _description(tags: dict[str, str]) -> str:
    where = f"sweep `{tags['sweep']}` ({tags['fingerprint']}), " if "sweep" in tags else ""
    numbers = ""
    if "cell_median_test_auc" in tags:
        numbers = (
            f" Cell median test AUROC {tags['cell_median_test_auc']} over "
            f"{tags['cell_seeds']} seeds; this seed's {tags.get('test/auc', '?')}."
        )
    return (
        f"{tags['category']}: {where}cell {tags['cell']}, seed {tags['seed']}, "
        f"scored by {tags['score_used']}.{numbers}"
    )
