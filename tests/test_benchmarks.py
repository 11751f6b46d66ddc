"""The benchmark code runs on tiny inputs; no timing is asserted here (that is make bench's job)."""

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[1]))
from benchmarks.run import main


@pytest.mark.parametrize(
    "rows",
    [
        pytest.param("B1,B2,B3", marks=pytest.mark.e2e),
        pytest.param("B4,B6,B8", marks=pytest.mark.e2e),
        pytest.param("B12", marks=pytest.mark.e2e),  # the patch head's epoch
        # the orchestration of a whole sweep of no-op trials: seconds on 10 and 30 cells
        pytest.param("B10", marks=pytest.mark.e2e),
        pytest.param("B11", marks=pytest.mark.e2e),  # predict: a detector saved, loaded, run
        pytest.param("B9", marks=pytest.mark.slow),  # B9 compiles: minutes
    ],
)
def test_benchmark_rows_run_on_tiny_inputs(rows: str, tmp_path: Path) -> None:
    assert main(["--tiny", "--only", rows, "--out", str(tmp_path)]) == 0
    record = json.loads((tmp_path / "latest.json").read_text())
    ids = [r["id"] for r in record["rows"]]
    assert set(ids) >= set(rows.split(",")) and all(r["result"] for r in record["rows"])


@pytest.mark.e2e
def test_plain_make_bench_runs_every_default_row_on_tiny_inputs(tmp_path: Path) -> None:
    """``make bench``'s own code path (no --only), every default row, on minimal inputs."""
    assert main(["--tiny", "--out", str(tmp_path)]) == 0
    ids = {r["id"] for r in json.loads((tmp_path / "latest.json").read_text())["rows"]}
    assert {"B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B11", "B12"} <= ids


def test_bench_data_folder_is_absolute_for_rows_that_change_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """B7 runs its sweeps in another folder: a relative data folder must reach it resolved."""
    seen = []
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("benchmarks.run.generate_category", lambda category, root, **_: None)
    monkeypatch.setattr("benchmarks.run.REGISTRY", {})
    monkeypatch.setattr("benchmarks.run.Setup", lambda root, *a: seen.append(root))
    assert main(["--data-dir", "data/synthetic", "--out", str(tmp_path / "out")]) == 0
    assert seen == [tmp_path / "data" / "synthetic"]


@pytest.mark.integration
def test_b10_fills_each_cell_once_with_four_workers_on_postgres(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """B10's distributed row on tiny grids: ``measure`` checks that every cell is COMPLETE once
    in the study and FINISHED once in MLflow with no FAIL, and times the UI's pages."""
    monkeypatch.setenv("LIGHTNING_AD_B10_STORES", "postgres")
    monkeypatch.setenv("LIGHTNING_AD_B10_WORKERS", "4")
    assert main(["--tiny", "--only", "B10", "--out", str(tmp_path)]) == 0
    [row] = json.loads((tmp_path / "latest.json").read_text())["rows"]
    assert "postgres stores, 4 worker(s)" in row["what"] and "UI" in row["result"]
