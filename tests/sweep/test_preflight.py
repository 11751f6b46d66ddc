"""Preflight through ``lightning-ad sweep``: bad input is one line naming the value, exit 2, and
nothing written: no study, no MLflow store, no report."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.helpers import SWEEPS, invoke, quick_sweep_file


def _corrupt_every_image(category: Path) -> Path:
    for image in category.rglob("*.png"):
        image.write_bytes(b"not a png")
    return sorted((category / "train" / "good").iterdir())[0]


def _drop_defects(category: Path) -> Path:
    for folder in (category / "test").iterdir():
        if folder.name != "good":
            shutil.rmtree(folder)
    shutil.rmtree(category / "ground_truth", ignore_errors=True)
    return category / "test"


def _drop_good_test_images(category: Path) -> Path:
    shutil.rmtree(category / "test" / "good")
    return category / "test" / "good"


@pytest.mark.parametrize(
    ("break_category", "message"),
    [
        (_corrupt_every_image, "cannot decode image"),
        (_drop_defects, "has no defect folder with images"),
        (_drop_good_test_images, "has no images: the test split needs normal images"),
    ],
    ids=["every image corrupt", "no anomalous test images", "no normal test images"],
)
def test_a_broken_category_is_one_line_exit_2_nothing_written(
    break_category, message: str, screw_copy: Path, tmp_path: Path
) -> None:
    named = break_category(screw_copy)
    work = tmp_path / "work"
    work.mkdir()
    args = ("sweep", "--sweep", str(SWEEPS / "quick.yaml"), "--data-root", str(screw_copy))
    result = invoke(*args, "--quiet", cwd=work)
    assert result.returncode == 2, result.stderr
    [line] = result.stderr.strip().splitlines()
    assert message in line and str(named) in line
    assert not any(work.iterdir())


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (("--tracking-uri", "ftp://host/x"), "tracking URI ftp://host/x: not a store MLflow"),
        (("--tracking-uri", "sqlite:///{tmp}/a-file/mlflow.db"), "a-file is a file, not a folder"),
        (("--storage", "{tmp}/a-file/optuna.journal"), "a-file is a file, not a folder"),
        (("--storage", "{tmp}/a-folder.journal"), "is a folder; name a file"),
        (("--storage", "{tmp}/a-folder"), "neither a journal file"),
    ],
    ids=[
        "tracking scheme",
        "tracking under a file",
        "journal under a file",
        "journal a folder",
        "storage neither file nor URL",
    ],
)
def test_bad_stores_are_one_line_exit_2_nothing_written(
    flags: tuple[str, str], message: str, synthetic_root: Path, tmp_path: Path
) -> None:
    (tmp_path / "a-file").write_text("")
    (tmp_path / "a-folder.journal").mkdir()
    work = tmp_path / "work"
    work.mkdir()
    flag, value = flags
    args = ("sweep", "--sweep", str(SWEEPS / "quick.yaml"), "--data-root", str(synthetic_root))
    result = invoke(*args, flag, value.format(tmp=tmp_path), "--quiet", cwd=work)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert not any(work.iterdir())


def test_a_missing_weights_file_is_named_before_anything_is_written(
    synthetic_root: Path, tmp_path: Path
) -> None:
    sweep = quick_sweep_file(tmp_path, "weights", pretrained=str(tmp_path / "gone.pt"))
    work = tmp_path / "work"
    work.mkdir()
    result = invoke(
        "sweep", "--sweep", str(sweep), "--data-root", str(synthetic_root), "--quiet", cwd=work
    )
    assert result.returncode == 2 and str(tmp_path / "gone.pt") in result.stderr
    assert not any(work.iterdir())
