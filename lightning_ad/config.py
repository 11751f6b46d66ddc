"""``TrialConfig``: every setting of one trial, from the CLI (``train``) or a sweep's grid cell.

Nothing else reads global state: ``train.run_trial(config)`` is the only way a model is trained.
"""

from __future__ import annotations

import difflib
import itertools
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from lightning_ad.data.datamodule import CLASS_PRESETS, resolve_classes
from lightning_ad.data.twins import MASK_MODES, build_twin
from lightning_ad.errors import LightningADError
from lightning_ad.models.backbones import BACKBONES, check_image_size
from lightning_ad.models.heads import HEADS, NO_HEAD, head_parameters
from lightning_ad.scoring import SCORERS

ARTIFACT_LEVELS = ("full", "minimal")


@dataclass(frozen=True)
class TrialConfig:
    """One trial. Defaults are sized for a 2-core CPU: a few minutes on the built-in screw."""

    category: str = "screw"
    backbone: str = "efficientnet_lite0"
    head: str = "arcface"
    classes: tuple[str, ...] = ("normal", "line", "distortion")
    seed: int = 0
    image_size: int = 96
    epochs: int = 8
    batch_size: int = 32
    lr: float = 1e-4
    amsgrad: bool = True
    cosine_schedule: bool = False
    swa: bool = False
    """Average the weights of the last epochs (Lightning's StochasticWeightAveraging)."""
    pretrained: str = "auto"
    score: str = "knn"
    """The scorer reported as ``test/auc``: lof, knn, prob or fused."""
    mask_mode: str = "auto"
    val_fraction: float = 0.2
    head_params: dict[str, Any] = field(default_factory=dict)
    twin_params: dict[str, dict[str, Any]] = field(default_factory=dict)
    data_root: str | None = None
    data_dir: str = "data"
    artifacts: str = "full"
    """``full``: ROC curves, histograms and the Grad-CAM sheet; ``minimal``: metrics only."""
    max_time_minutes: float | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "classes", resolve_classes(self.classes))
        self.validate()

    @property
    def classes_label(self) -> str:
        """``class2`` / ``class3`` for the article's presets, else the names joined by ``+``."""
        for count, names in CLASS_PRESETS.items():
            if names == self.classes:
                return f"class{count}"
        return "+".join(self.classes)

    def validate(self) -> None:
        """Every name and number checked before anything is written; errors name the value."""
        check_name("category", self.category)
        if self.backbone not in BACKBONES:
            raise LightningADError(
                f"unknown backbone '{self.backbone}'; valid: {', '.join(BACKBONES)}"
            )
        if self.head != NO_HEAD and self.head not in HEADS:
            raise LightningADError(
                f"unknown head '{self.head}'; valid: {', '.join([*HEADS, NO_HEAD])}"
            )
        if self.head == "adacos" and len(self.classes) < 3:
            raise LightningADError(
                f"head adacos with {self.classes_label} is undefined (s = sqrt(2) ln(C-1) = 0 at "
                "C=2); use --classes 3 or another head"
            )
        if self.head != NO_HEAD:
            unknown = sorted(set(self.head_params) - set(head_parameters(self.head)))
            if unknown:
                raise LightningADError(f"unknown parameter '{unknown[0]}' for head '{self.head}'")
        for twin, params in self.twin_params.items():
            build_twin(twin, **params)
        check_image_size(self.backbone, self.image_size)
        if self.score not in SCORERS:
            raise LightningADError(f"unknown score '{self.score}'; valid: {', '.join(SCORERS)}")
        if self.mask_mode not in MASK_MODES:
            raise LightningADError(
                f"unknown mask mode '{self.mask_mode}'; valid: {', '.join(MASK_MODES)}"
            )
        if self.artifacts not in ARTIFACT_LEVELS:
            raise LightningADError(
                f"artifacts '{self.artifacts}'; valid: {', '.join(ARTIFACT_LEVELS)}"
            )
        for name in ("epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise LightningADError(f"{name} must be at least 1, got {getattr(self, name)}")
        if not self.lr > 0:
            raise LightningADError(f"lr must be positive, got {self.lr}")

    def params(self) -> dict[str, Any]:
        """The flat parameter set logged to MLflow (data and versions are added by ``train``)."""
        flat = {k: v for k, v in asdict(self).items() if k not in ("head_params", "twin_params")}
        flat["classes"] = self.classes_label
        if self.head != NO_HEAD:
            flat |= {
                f"head/{k}": v for k, v in (head_parameters(self.head) | self.head_params).items()
            }
        for twin, params in self.twin_params.items():
            flat |= {f"twin/{twin}/{k}": v for k, v in params.items()}
        return flat


# ---- sweeps ----------------------------------------------------------------------------------

GRID_KEYS = ("category", "backbone", "head", "classes", "seed")
SPEC_KEYS = ("name", "description", "grid", "fixed", "search")
SEARCH_KEYS = ("trials_per_cell", "params")
RANGE_KEYS = ("low", "high", "log", "step")
# Settings a sweep spec may fix for every trial; the data location comes from the command line.
FIXED_KEYS = tuple(
    f.name for f in fields(TrialConfig) if f.name not in (*GRID_KEYS, "data_root", "data_dir")
)
FROZEN = "frozen"


def classes_label(classes: int | str | list[str] | tuple[str, ...]) -> str:
    """The grid's way to write a class list: ``class2``, ``class3`` or ``normal+cutpaste+scar``."""
    return TrialConfig(classes=_classes_value(classes)).classes_label


def _classes_value(label: int | str | list[str] | tuple[str, ...]):
    if isinstance(label, str) and "+" in label:
        return tuple(label.split("+"))
    return label


@dataclass(frozen=True)
class SweepSpec:
    """A sweep file (``sweeps/*.yaml``): the grid, and the settings fixed for every trial.

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
        if not isinstance(raw, dict):
            raise LightningADError(f"{source}: expected a mapping with keys {', '.join(SPEC_KEYS)}")
        _no_unknown_keys(raw, SPEC_KEYS, source)
        grid = raw.get("grid")
        if not isinstance(grid, dict):
            raise LightningADError(
                f"{source}: 'grid' must be a mapping with keys {', '.join(GRID_KEYS)}"
            )
        _no_unknown_keys(grid, GRID_KEYS, f"{source}: grid")
        values: dict[str, tuple] = {}
        for key in GRID_KEYS:
            listed = grid.get(key)
            if not isinstance(listed, list) or not listed:
                raise LightningADError(f"{source}: grid.{key} must be a non-empty list")
            values[key] = tuple(listed)
        values["classes"] = tuple(classes_label(c) for c in values["classes"])
        for seed in values["seed"]:
            if not isinstance(seed, int):
                raise LightningADError(f"{source}: grid.seed values must be integers, got {seed!r}")
        fixed = raw.get("fixed") or {}
        if not isinstance(fixed, dict):
            raise LightningADError(f"{source}: 'fixed' must be a mapping")
        _no_unknown_keys(fixed, FIXED_KEYS, f"{source}: fixed")
        for key, value in fixed.items():
            _check_type(key, value, f"{source}: fixed.{key}")
        search = (
            SearchSpec.from_dict(raw["search"], f"{source}: search") if "search" in raw else None
        )
        name, description = str(raw.get("name", default_name)), str(raw.get("description", ""))
        try:
            check_name("sweep name", name)
        except LightningADError as err:
            raise LightningADError(f"{source}: {err}") from err
        spec = cls(name, values, dict(fixed), description, search)
        for cell in spec.cells():  # every name and type checked now, not an hour into the sweep
            if spec.skip_reason(cell) is None:
                try:
                    spec.trial_config(cell)
                except (TypeError, ValueError, LightningADError) as err:
                    raise LightningADError(f"{source}: {err}") from err
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

    def skip_reason(self, cell: dict[str, Any]) -> str | None:
        """Why a grid point is not trained, or None when it is."""
        n_classes = len(TrialConfig(classes=_classes_value(cell["classes"])).classes)
        if cell["head"] == "adacos" and n_classes < 3:
            return "n/a: adacos needs 3 classes or more"
        if cell["head"] == NO_HEAD and cell["classes"] != self.grid["classes"][0]:
            first = self.grid["classes"][0]
            return f"the frozen baseline does not depend on classes (run with {first})"
        return None

    def runnable_cells(self) -> list[dict[str, Any]]:
        """The grid points that are trained (or, for the frozen baseline, scored)."""
        return [cell for cell in self.cells() if self.skip_reason(cell) is None]

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
            **{**self.fixed, **(tuned or {}), **cell, "classes": _classes_value(cell["classes"])},
            data_root=data_root,
            data_dir=data_dir,
        )


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
        _no_unknown_keys(raw, SEARCH_KEYS, where)
        budget = raw.get("trials_per_cell")
        if not isinstance(budget, int) or isinstance(budget, bool) or budget < 1:
            raise LightningADError(
                f"{where}.trials_per_cell must be a positive integer, got {budget!r}"
            )
        params = raw.get("params")
        if not isinstance(params, dict) or not params:
            raise LightningADError(f"{where}.params must map settings to ranges or choices")
        _no_unknown_keys(params, FIXED_KEYS, f"{where}.params")
        for key, dist in params.items():
            _check_distribution(key, dist, f"{where}.params.{key}")
        return cls(budget, {k: dict(v) for k, v in params.items()})


def _check_distribution(key: str, dist: Any, where: str) -> None:
    if not isinstance(dist, dict):
        raise LightningADError(f"{where} must be {{low, high}} or {{choices: [...]}}")
    if "choices" in dist:
        _no_unknown_keys(dist, ("choices",), where)
        if not isinstance(dist["choices"], list) or not dist["choices"]:
            raise LightningADError(f"{where}.choices must be a non-empty list")
        for value in dist["choices"]:
            _check_type(key, value, f"{where}.choices")
        return
    _no_unknown_keys(dist, RANGE_KEYS, where)
    for bound in ("low", "high"):
        if bound not in dist:
            raise LightningADError(f"{where} needs '{bound}' (or 'choices')")
        _check_type(key, dist[bound], f"{where}.{bound}")
    if not dist["low"] < dist["high"]:
        raise LightningADError(f"{where}: low must be below high")


SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def check_name(what: str, value: str) -> None:
    """Sweep and category names become folders (``reports/<sweep>/<category>/``) and values in
    MLflow filter strings: a quote, a slash or a leading dot would break out of either."""
    if not SAFE_NAME.fullmatch(value):
        raise LightningADError(
            f"{what} {value!r} is not allowed: use 1-64 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )


def cell_label(head: str, classes: str) -> str:
    """Column label of a (head, classes) pair: the frozen baseline has one column."""
    return FROZEN if head == NO_HEAD else f"{head} {classes}"


def _check_type(key: str, value: Any, where: str) -> None:
    """A fixed setting must have its field's type (an int is a fine float; None where allowed)."""
    default = getattr(TrialConfig(), key)
    expected: tuple[type, ...] = (
        (int, float) if isinstance(default, float) or default is None else (type(default),)
    )
    if default is None and value is None:
        return
    if (isinstance(value, bool) and bool not in expected) or not isinstance(value, expected):
        names = " or ".join(t.__name__ for t in expected)
        raise LightningADError(f"{where} must be {names}, got {value!r} ({type(value).__name__})")


def _no_unknown_keys(mapping: dict, allowed: Sequence[str], where: str) -> None:
    unknown = [k for k in mapping if k not in allowed]
    if unknown:
        hint = difflib.get_close_matches(str(unknown[0]), allowed, n=1)
        did_you_mean = f" (did you mean '{hint[0]}'?)" if hint else ""
        raise LightningADError(
            f"{where}: unknown key '{unknown[0]}'{did_you_mean}; allowed: {', '.join(allowed)}"
        )
