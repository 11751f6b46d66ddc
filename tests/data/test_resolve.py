import shutil
from pathlib import Path

import pytest

from lightning_ad.data.resolve import resolve_category
from lightning_ad.errors import DataError


def test_explicit_root_wins(synthetic_root: Path, tmp_path: Path) -> None:
    shutil.copytree(synthetic_root / "grid", tmp_path / "data" / "mvtec" / "grid")
    resolved = resolve_category("grid", data_root=synthetic_root, data_dir=tmp_path / "data")
    assert (resolved.dataset, resolved.root) == ("custom", synthetic_root / "grid")


def test_data_root_may_be_the_category_folder_itself(synthetic_root: Path) -> None:
    resolved = resolve_category("anything", data_root=synthetic_root / "screw")
    assert (resolved.dataset, resolved.root) == ("custom", synthetic_root / "screw")


def test_mvtec_folder_before_built_in(synthetic_root: Path, tmp_path: Path) -> None:
    shutil.copytree(synthetic_root / "grid", tmp_path / "mvtec" / "grid")
    resolved = resolve_category("grid", data_dir=tmp_path)
    assert (resolved.dataset, resolved.root) == ("mvtec", tmp_path / "mvtec" / "grid")


@pytest.mark.slow
def test_built_in_generated_on_first_use(tmp_path: Path) -> None:
    resolved = resolve_category("grid", data_dir=tmp_path)
    assert (resolved.dataset, resolved.root) == ("synthetic", tmp_path / "synthetic" / "grid")
    assert (resolved.root / "synthetic.json").is_file()


def test_typo_suggests_the_closest(tmp_path: Path) -> None:
    with pytest.raises(
        DataError, match=r"unknown category 'transistr'.*Did you mean 'transistor'.*--data-root"
    ):
        resolve_category("transistr", data_dir=tmp_path)


def test_missing_data_root(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=f"data root {tmp_path / 'nope'} does not exist"):
        resolve_category("screw", data_root=tmp_path / "nope")
