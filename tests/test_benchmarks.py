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
        "B10",  # the orchestration of a whole sweep of no-op trials: seconds on 10 and 30 cells
        pytest.param("B11", marks=pytest.mark.e2e),  # predict: a detector saved, loaded, run
        pytest.param("B9", marks=pytest.mark.slow),  # B9 compiles: minutes
    ],
)
def test_benchmark_rows_run_on_tiny_inputs(rows: str, tmp_path: Path) -> None:
    assert main(["--tiny", "--only", rows, "--out", str(tmp_path)]) == 0
    record = json.loads((tmp_path / "latest.json").read_text())
    ids = [r["id"] for r in record["rows"]]
    assert set(ids) >= set(rows.split(",")) and all(r["result"] for r in record["rows"])


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
