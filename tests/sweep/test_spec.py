"""Sweep files: every key, type and name checked when read, and the shipped ones valid."""

from __future__ import annotations

from pathlib import Path

import pytest

from lightning_ad.errors import LightningADError
from lightning_ad.sweep.spec import SweepSpec
from tests.helpers import SWEEPS


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    return path


GRID = (
    "grid: {category: [screw], backbone: [mobilenet_v2], head: [arcface], "
    "classes: [2], seed: [0]}\n"
)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (GRID + "fixed: {epochz: 3}\n", "fixed: unknown key 'epochz' (did you mean 'epochs'?)"),
        (GRID + "fixed: {epochs: three}\n", "fixed.epochs must be int, got 'three'"),
        (GRID.replace("seed: [0]", "seed: []"), "grid.seed must be a non-empty list"),
        (GRID.replace("head: [arcface]", "head: [arcfce]"), "unknown head 'arcfce'"),
        (GRID + "sweep_name: x\n", "unknown key 'sweep_name'"),
        ("grid: [1, 2]\n", "'grid' must be a mapping"),
        ("grid: {category: [screw]\n", "not valid YAML"),
        (GRID + "name: ../outside\n", "sweep name '../outside' is not allowed"),
        (GRID.replace("[screw]", '["scr\'ew"]'), 'category "scr\'ew" is not allowed'),
        (GRID.replace("[screw]", "[a/b]"), "category 'a/b' is not allowed"),
        (GRID.replace("head: [arcface]", "head: [adacos]"), "every cell of the grid is n/a"),
    ],
)
def test_bad_sweep_files_name_the_file_and_key(text: str, message: str, tmp_path: Path) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(LightningADError, match=str(path)) as info:
        SweepSpec.load(path)
    assert message in str(info.value)


@pytest.mark.parametrize("name", ["quick", "default", "article", "beyond"])
def test_shipped_sweeps_are_valid(name: str) -> None:
    spec = SweepSpec.load(SWEEPS / f"{name}.yaml")
    assert spec.name == name and spec.cells()


def test_article_sweep_is_the_articles_grid() -> None:
    spec = SweepSpec.load(SWEEPS / "article.yaml")
    assert spec.grid["backbone"] == ("mobilenet_v2", "efficientnet_b0")
    assert spec.grid["head"] == ("l2softmax", "arcface", "adacos")
    assert spec.grid["classes"] == ("class2", "class3") and len(spec.grid["seed"]) == 5
    assert (
        spec.fixed["image_size"] == 96 and spec.fixed["lr"] == 1e-4 and spec.fixed["score"] == "lof"
    )


def test_bad_search_blocks(tmp_path: Path) -> None:
    for search, message in [
        ({"trials_per_cell": 0, "params": {"lr": {"low": 1e-4, "high": 1e-2}}}, "positive integer"),
        (
            {"trials_per_cell": 2, "params": {"learning_rate": {"low": 1, "high": 2}}},
            "unknown key 'learning_rate'",
        ),
        (
            {"trials_per_cell": 2, "params": {"lr": {"low": 1e-2, "high": 1e-4}}},
            "low must be below high",
        ),
        ({"trials_per_cell": 2, "params": {"epochs": {"choices": [1, "two"]}}}, "must be int"),
        (
            {"trials_per_cell": 2, "params": {"patch_head_weight": {"low": 0.1, "high": 2.0}}},
            "patch_head_weight cannot be searched: the search minimises val/loss",
        ),
    ]:
        path = _write(tmp_path, GRID + f"search: {search}\n")
        with pytest.raises(LightningADError, match=message):
            SweepSpec.load(path)


def test_runnable_cells_skip_impossible_and_repeated_frozen_cells() -> None:
    spec = SweepSpec.load(SWEEPS / "quick.yaml")
    runnable = spec.runnable_cells()
    assert len(spec.cells()) == 12 and len(runnable) == 8
    assert not any(c["head"] == "adacos" and c["classes"] == "class2" for c in runnable)
    frozen = [c for c in runnable if c["head"] == "none"]
    assert {c["classes"] for c in frozen} == {"class2"} and len(frozen) == 2


def test_the_frozen_baseline_is_never_searched() -> None:
    spec = SweepSpec.from_dict(
        {
            "grid": {"category": ["screw"], "backbone": ["mobilenet_v2"],
                     "head": ["none", "arcface"], "classes": [3], "seed": [0]},
            "search": {"trials_per_cell": 2, "params": {"image_size": {"choices": [32, 64]}}},
        },
        default_name="s",
    )  # fmt: skip
    frozen, arcface = spec.runnable_cells()
    assert spec.search_for(frozen) is None and spec.search_for(arcface) is spec.search


def test_a_sweep_with_a_patch_head_keeps_its_frozen_baseline() -> None:
    """The frozen baseline has no head to put a patch head beside: it is scored by PatchCore
    in place of twinseg (maps for maps), and the trained cells get the patch head."""
    spec = SweepSpec.from_dict(
        {
            "grid": {"category": ["screw"], "backbone": ["mobilenet_v2"],
                     "head": ["none", "arcface"], "classes": [3], "seed": [0]},
            "fixed": {"patch_head_weight": 1.0, "score": "twinseg"},
        },
        default_name="s",
    )  # fmt: skip
    configs = {c["head"]: spec.trial_config(c) for c in spec.runnable_cells()}
    assert not configs["none"].patch_head and configs["none"].scoring.scorer == "patch"
    assert configs["arcface"].net.patch_head and configs["arcface"].scoring.scorer == "twinseg"
