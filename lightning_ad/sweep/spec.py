"""What a sweep is (``SweepSpec``, its ``SearchSpec``) and where it runs (``SweepTarget``).

A sweep file (``sweeps/*.yaml``) is read and checked whole before anything runs: every key,
type and name, and every runnable cell built as a ``TrialConfig`` once, so a typo fails now and
not an hour into the sweep.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from lightning_ad import tracking
from lightning_ad.config import SETTINGS, TrialConfig, check_name, check_setting_type
from lightning_ad.data.classes import TwinClasses
from lightning_ad.errors import LightningADError, unknown
from lightning_ad.grid import GRID_KEYS, NO_HEAD

SPEC_KEYS = ("name", "description", "grid", "fixed", "search")
SEARCH_KEYS = ("trials_per_cell", "params")
RANGE_KEYS = ("low", "high", "log", "step")
FIXED_KEYS = tuple(name for name in SETTINGS if name not in (*GRID_KEYS, "data_root", "data_dir"))
"""Settings a sweep file may fix for every trial; the data location comes from the command line."""


def cell_key(cell: dict | None) -> tuple | None:
    """A cell's grid values as a tuple in ``GRID_KEYS`` order (for sets and dict keys)."""
    return tuple(cell[k] for k in GRID_KEYS) if cell else None


@dataclass(frozen=True)
class SearchSpec:
    """Settings tuned *inside* each grid cell, on ``val/loss`` (never on a test AUROC).

    ``params`` maps a fixed-able setting to ``{low, high[, log, step]}`` (a float or int range,
    by the setting's type) or ``{choices: [...]}``; ``trials_per_cell`` is the budget per cell.
    The cell's result is the test AUC of the trial with the lowest validation loss.
    """

    trials_per_cell: int
    params: dict[str, dict[str, Any]]

    @classmethod
    def from_dict(cls, raw: Any, where: str) -> SearchSpec:
        if not isinstance(raw, dict):
            raise LightningADError(f"{where} must be a mapping with keys {', '.join(SEARCH_KEYS)}")
        _known_keys(raw, SEARCH_KEYS, where)
        budget = raw.get("trials_per_cell")
        if not isinstance(budget, int) or isinstance(budget, bool) or budget < 1:
            raise LightningADError(
                f"{where}.trials_per_cell must be a positive integer, got {budget!r}"
            )
        params = raw.get("params")
        if not isinstance(params, dict) or not params:
            raise LightningADError(f"{where}.params must map settings to ranges or choices")
        _known_keys(params, FIXED_KEYS, f"{where}.params")
        if "patch_head_weight" in params:
            # The search minimises val/loss, of which the patch head's weighted loss is a part:
            # it would pick the smallest weight, not the best detector.
            raise LightningADError(
                f"{where}.params.patch_head_weight cannot be searched: the search minimises "
                "val/loss, which the weight scales; fix it under 'fixed' and compare weights "
                "as separate sweeps"
            )
        for key, dist in params.items():
            _check_distribution(key, dist, f"{where}.params.{key}")
        return cls(budget, {k: dict(v) for k, v in params.items()})


@dataclass(frozen=True)
class SweepSpec:
    """A sweep file: the grid, and the settings fixed for every trial.

    ``grid`` lists ``category``, ``backbone``, ``head``, ``classes`` and ``seed`` values; the
    seeds are what medians are taken over. ``head: none`` is the frozen baseline (run once per
    seed, whatever the class count). Cells that cannot exist (``adacos`` with two classes) are
    skipped and shown as n/a.
    """

    name: str
    grid: dict[str, tuple]
    fixed: dict[str, Any]
    description: str = ""
    search: SearchSpec | None = None

    @classmethod
    def load(cls, path: str | Path) -> SweepSpec:
        """Read and validate a sweep file; errors name the file and the key."""
        path = Path(path)
        if not path.is_file():
            raise LightningADError(f"sweep file {path} does not exist")
        try:
            raw = yaml.safe_load(path.read_text())
        except yaml.YAMLError as err:
            raise LightningADError(f"{path}: not valid YAML ({err})") from err
        return cls.from_dict(raw, default_name=path.stem, source=str(path))

    @classmethod
    def from_dict(cls, raw: Any, default_name: str, source: str = "sweep") -> SweepSpec:
        try:
            return cls._from_dict(raw, default_name)
        except (TypeError, ValueError, LightningADError) as err:
            raise LightningADError(f"{source}: {err}") from err

    @classmethod
    def _from_dict(cls, raw: Any, default_name: str) -> SweepSpec:
        if not isinstance(raw, dict):
            raise LightningADError(f"expected a mapping with keys {', '.join(SPEC_KEYS)}")
        _known_keys(raw, SPEC_KEYS, "")
        grid = raw.get("grid")
        if not isinstance(grid, dict):
            raise LightningADError(f"'grid' must be a mapping with keys {', '.join(GRID_KEYS)}")
        _known_keys(grid, GRID_KEYS, "grid")
        values: dict[str, tuple] = {}
        for key in GRID_KEYS:
            listed = grid.get(key)
            if not isinstance(listed, list) or not listed:
                raise LightningADError(f"grid.{key} must be a non-empty list")
            values[key] = tuple(listed)
        values["classes"] = tuple(TwinClasses.parse(c).label for c in values["classes"])
        for seed in values["seed"]:
            if not isinstance(seed, int):
                raise LightningADError(f"grid.seed values must be integers, got {seed!r}")
        fixed = raw.get("fixed") or {}
        if not isinstance(fixed, dict):
            raise LightningADError("'fixed' must be a mapping")
        _known_keys(fixed, FIXED_KEYS, "fixed")
        for key, value in fixed.items():
            check_setting_type(key, value, f"fixed.{key}")
        search = SearchSpec.from_dict(raw["search"], "search") if "search" in raw else None
        name, description = str(raw.get("name", default_name)), str(raw.get("description", ""))
        check_name("sweep name", name)
        spec = cls(name, values, dict(fixed), description, search)
        runnable = spec.runnable_cells()
        if not runnable:
            reason = spec.skip_reason(spec.cells()[0])
            raise LightningADError(f"every cell of the grid is n/a ({reason}); nothing to run")
        for cell in runnable:  # every name and type checked now
            spec.trial_config(cell)
        return spec

    def with_category(self, category: str) -> SweepSpec:
        """The same sweep restricted to one category (``--category`` on the command line)."""
        check_name("category", category)
        grid = {**self.grid, "category": (category,)}
        return SweepSpec(self.name, grid, self.fixed, self.description, self.search)

    def cells(self) -> list[dict[str, Any]]:
        """Every grid point, in grid order."""
        return [
            dict(zip(GRID_KEYS, point, strict=True))
            for point in itertools.product(*self.grid.values())
        ]

    def runnable_cells(self) -> list[dict[str, Any]]:
        """The grid points that are trained (or, for the frozen baseline, scored)."""
        return list(self._runnable)

    @functools.cached_property
    def _runnable(self) -> tuple[dict[str, Any], ...]:
        # Worked out once: a sweep asks after every trial, and a grid may have 10,000 cells.
        return tuple(cell for cell in self.cells() if self.skip_reason(cell) is None)

    @functools.cached_property
    def runnable_keys(self) -> frozenset[tuple]:
        """The ``cell_key`` of every runnable cell: what "is this cell in the grid?" asks."""
        return frozenset(cell_key(cell) for cell in self._runnable)

    def skip_reason(self, cell: dict[str, Any]) -> str | None:
        """Why a grid point is not run, or None when it is."""
        from lightning_ad.models.heads import head_class_count_problem

        problem = head_class_count_problem(cell["head"], len(TwinClasses.parse(cell["classes"])))
        if problem:
            return f"n/a: {problem}"
        if cell["head"] == NO_HEAD and cell["classes"] != self.grid["classes"][0]:
            first = self.grid["classes"][0]
            return f"the frozen baseline does not depend on classes (run with {first})"
        return None

    def search_for(self, cell: dict[str, Any]) -> SearchSpec | None:
        """The ``search`` of this cell, or None: the frozen baseline is never searched. It is
        not trained, so it has no validation loss to choose a proposal by, and training settings
        cannot change it; it runs once, with the fixed settings."""
        return None if cell["head"] == NO_HEAD else self.search

    def trial_config(
        self,
        cell: dict[str, Any],
        data_root: str | None = None,
        data_dir: str = "data",
        tuned: dict[str, Any] | None = None,
    ) -> TrialConfig:
        """The trial of one grid point, with the fixed settings and any ``tuned`` ones applied."""
        return TrialConfig(
            **{**self.fixed, **(tuned or {}), **cell}, data_root=data_root, data_dir=data_dir
        )


@dataclass(frozen=True)
class SweepTarget:
    """Where a sweep runs and writes: everything a worker process needs, picklable."""

    spec: SweepSpec
    category: str
    storage: str | None = None
    tracking_uri: str = field(default_factory=tracking.resolve_tracking_uri)
    data_root: str | None = None
    data_dir: str = "data"
    reports_dir: str = "reports"
    heartbeat: int = 60
    """Seconds between a running trial's heartbeats (RDB storages); silent for 3x -> stale."""
    describe_every_s: float = 30.0
    """The least seconds between two rewrites of the parent run's description mid-sweep
    (``sweep.parent``); a rewrite also waits ten times as long as the last one took."""
    queue_ahead: int = 64
    """Cells queued at a time. Optuna reads every WAITING trial whenever a worker asks for one
    (on PostgreSQL, from the database): with the whole grid queued, a trial's cost would grow
    with the grid. Workers queue the next cells when the queue runs dry (``sweep.recovery.plan``;
    ``docs/design-notes.md``)."""

    @functools.cached_property
    def settings(self):
        """The settings fingerprint of this sweep's cells (``sweep.fingerprint``): resolving the
        category and hashing its files once per command (worker processes get it pickled)."""
        from lightning_ad.data.resolve import resolve_category
        from lightning_ad.sweep.fingerprint import sweep_settings

        return sweep_settings(
            self.spec, resolve_category(self.category, self.data_root, self.data_dir)
        )

    @property
    def fingerprint(self) -> str:
        return self.settings.fingerprint

    @property
    def study_name(self) -> str:
        """One study per sweep, category and settings fingerprint: edited settings or other
        data start a new study, a grown grid adds cells to the same one."""
        return f"{self.spec.name}-{self.category}-{self.fingerprint}"

    @property
    def experiment(self) -> str:
        return f"lightning_ad-{self.spec.name}"

    @property
    def reports(self) -> Path:
        """``reports/<sweep>/<category>/<fingerprint>``: inside ``reports_dir``, names being
        safe; two sweeps of one name with other settings write their own folders."""
        return Path(self.reports_dir) / self.spec.name / self.category / self.fingerprint


def _check_distribution(key: str, dist: Any, where: str) -> None:
    if not isinstance(dist, dict):
        raise LightningADError(f"{where} must be {{low, high}} or {{choices: [...]}}")
    if "choices" in dist:
        _known_keys(dist, ("choices",), where)
        if not isinstance(dist["choices"], list) or not dist["choices"]:
            raise LightningADError(f"{where}.choices must be a non-empty list")
        for value in dist["choices"]:
            check_setting_type(key, value, f"{where}.choices")
        return
    _known_keys(dist, RANGE_KEYS, where)
    for bound in ("low", "high"):
        if bound not in dist:
            raise LightningADError(f"{where} needs '{bound}' (or 'choices')")
        check_setting_type(key, dist[bound], f"{where}.{bound}")
    if not dist["low"] < dist["high"]:
        raise LightningADError(f"{where}: low must be below high")


def _known_keys(mapping: dict, allowed: Sequence[str], where: str) -> None:
    for key in mapping:
        if key not in allowed:
            error = unknown("key", key, allowed)
            raise LightningADError(f"{where}: {error}" if where else str(error))
