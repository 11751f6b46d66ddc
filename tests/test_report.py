"""The comparison tables, from a sweep's runs logged into a real (temporary) MLflow store by hand:
tidy files that programs read back with numbers, display tables as before, ``--out`` that
writes one table per file."""

from __future__ import annotations

from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest

from lightning_ad import report
from lightning_ad.cli import main
from lightning_ad.sweep.spec import SweepSpec
from tests.helpers import SWEEPS

QUICK = SWEEPS / "quick.yaml"
DEFECTS = ("scratch_head", "thread_top")


@pytest.fixture
def logged(tmp_path: Path) -> tuple[str, list[dict]]:
    """quick.yaml's runnable cells for screw, each seed a FINISHED trial run with random AUCs;
    returns the store's URI and what was logged."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    spec = SweepSpec.load(QUICK)
    client = mlflow.MlflowClient(uri)
    experiment = client.create_experiment("lightning_ad-quick")
    rng = np.random.default_rng(0)
    logged = []
    for cell in spec.cells():
        if spec.skip_reason(cell):
            continue
        metrics = {"test/auc": rng.uniform(0.4, 1.0), "test/auc_lof": rng.uniform(0.4, 1.0)}
        metrics |= {f"test/auc_lof/{d}": rng.uniform(0.4, 1.0) for d in DEFECTS}
        params = {**{k: str(v) for k, v in cell.items()}, "dataset": "synthetic"}
        params |= {"data_root": "data/synthetic/screw", "git_commit": "abc1234"}
        tags = {"lightning_ad.role": "trial", "lightning_ad.sweep": "quick"}
        run = client.create_run(experiment, tags=tags)
        for key, value in params.items():
            client.log_param(run.info.run_id, key, value)
        for key, value in metrics.items():
            client.log_metric(run.info.run_id, key, value)
        client.set_terminated(run.info.run_id, "FINISHED")
        logged.append({**cell, **metrics})
    return uri, logged


def _trials(uri: str) -> pd.DataFrame:
    return report.fetch_trials(uri, "lightning_ad-quick", "quick", "screw")


def test_tidy_files_read_back_as_numbers_equal_to_the_logged_medians(
    logged: tuple[str, list[dict]], tmp_path: Path
) -> None:
    uri, runs = logged
    files = report.write_report(_trials(uri), SweepSpec.load(QUICK), tmp_path / "out")
    names = {f.name for f in files}
    for name in ("median_auc", "class3_vs_class2", "class3_vs_class2_by_defect"):
        assert {f"{name}.csv", f"{name}.parquet", f"{name}.md", f"{name}.html"} <= names
    for reader, suffix in ((pd.read_csv, ".csv"), (pd.read_parquet, ".parquet")):
        cells = reader(tmp_path / "out" / f"median_auc{suffix}")
        for column in ("median", "min", "max", "n_seeds", "median_auc_lof"):
            assert pd.api.types.is_numeric_dtype(cells[column]), column
        row = cells[(cells["head"] == "arcface") & (cells["classes"] == "class3")].iloc[0]
        logged_aucs = [
            r["test/auc"] for r in runs if (r["head"], r["classes"]) == ("arcface", "class3")
        ]
        assert len(logged_aucs) == 2
        assert row["median"] == pytest.approx(np.median(logged_aucs), abs=1e-12)  # not rounded
        assert row["n_seeds"] == 2 and row["git_commit"] == "abc1234"
        assert row["dataset"] == "synthetic" and '"image_size": 32' in row["settings"]
        assert set(cells.loc[cells["head"] == "none", "classes"]) == {"any"}
        deltas = reader(tmp_path / "out" / f"class3_vs_class2{suffix}")
        assert pd.api.types.is_numeric_dtype(deltas["median_delta"])
        assert set(deltas["head"]) == {"arcface"}  # adacos has no class2 cell to pair with
        by_defect = reader(tmp_path / "out" / f"class3_vs_class2_by_defect{suffix}")
        assert set(by_defect["defect"]) == set(DEFECTS)


def test_display_tables_keep_the_articles_layout(logged: tuple[str, list[dict]]) -> None:
    uri, _ = logged
    text = report.summary_text(_trials(uri), SweepSpec.load(QUICK), "md")
    assert "| backbone | category | frozen | arcface class2 | arcface class3 |" in text
    assert "| adacos class2 | adacos class3 |" in text and "| n/a |" in text
    assert text.count("(2)") >= 4  # median (n seeds), three decimals


def test_out_file_as_csv_is_one_table_pandas_parses(
    logged: tuple[str, list[dict]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    uri, _ = logged
    monkeypatch.chdir(tmp_path)
    args = ["table", "--sweep", str(QUICK), "--category", "screw", "--tracking-uri", uri]
    assert main([*args, "--format", "csv", "--out", "t.csv"]) == 0
    assert list(pd.read_csv("t.csv")["head"].unique()) == ["adacos", "arcface", "none"]
    assert main([*args, "--format", "csv", "--table", "delta", "--out", "d.csv"]) == 0
    assert "median_delta" in pd.read_csv("d.csv").columns
    assert main([*args, "--format", "parquet", "--out", "tables"]) == 0
    assert sorted(p.name for p in Path("tables").iterdir()) == [
        "class3_vs_class2.parquet",
        "class3_vs_class2_by_defect.parquet",
        "median_auc.parquet",
    ]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (
            ["--format", "csv", "--table", "median", "--table", "delta", "--out", "t.csv"],
            "--out t.csv holds one table",
        ),
        (["--format", "parquet"], "parquet is binary: pass --out FILE"),
    ],
)
def test_one_destination_never_gets_several_tables(
    extra: list[str], message: str, logged, tmp_path: Path, monkeypatch, capsys
) -> None:
    uri, _ = logged
    monkeypatch.chdir(tmp_path)
    args = ["table", "--sweep", str(QUICK), "--category", "screw", "--tracking-uri", uri]
    assert main([*args, *extra]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "t.csv").exists()
