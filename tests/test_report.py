"""The comparison tables, from a sweep's runs logged into a real (temporary) MLflow store by hand:
tidy files that programs read back with numbers, display tables as before, ``--out`` that
writes one table per file."""

from __future__ import annotations

import io
import json
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest

from lightning_ad import report
from lightning_ad.cli import main
from lightning_ad.sweep.fingerprint import Settings
from lightning_ad.sweep.parent import parent_description
from lightning_ad.sweep.spec import SweepSpec
from tests.helpers import SWEEPS, mlflow_store

QUICK = SWEEPS / "quick.yaml"
FINGERPRINT = "f00d"
SETTINGS = {
    "trial": {"image_size": 32},
    "search": None,
    "data": {"dataset": "synthetic", "root": "/data/synthetic/screw", "files": "0123456789"},
    "code_version": "0.1.0",
}
DEFECTS = ("scratch_head", "thread_top")


@pytest.fixture
def logged(tmp_path: Path) -> tuple[str, list[dict]]:
    """quick.yaml's runnable cells for screw, each seed a FINISHED trial run with random AUCs;
    returns the store's URI and what was logged."""
    uri = mlflow_store(tmp_path)
    spec = SweepSpec.load(QUICK)
    client = mlflow.MlflowClient(uri)
    experiment = client.create_experiment("lightning_ad-quick")
    rng = np.random.default_rng(0)
    parent = client.create_run(
        experiment,
        tags={
            "lightning_ad.role": "sweep",
            "lightning_ad.sweep": "quick",
            "category": "screw",
            "lightning_ad.fingerprint": FINGERPRINT,
        },
    )
    client.log_dict(parent.info.run_id, SETTINGS, "settings.json")
    logged = []
    for cell in spec.cells():
        if spec.skip_reason(cell):
            continue
        metrics = {"test/auc": rng.uniform(0.4, 1.0), "test/auc_lof": rng.uniform(0.4, 1.0)}
        metrics |= {m: rng.uniform(0.4, 1.0) for m in ("test/pixel_auc", "test/aupro")}
        metrics["test/detection_rate"] = rng.uniform(0.4, 1.0)
        metrics |= {f"test/auc/{d}": rng.uniform(0.4, 1.0) for d in DEFECTS}
        params = {**{k: str(v) for k, v in cell.items()}, "dataset": "synthetic"}
        params |= {"data_root": "data/synthetic/screw", "git_commit": "abc1234"}
        params["score_used"] = "knn"
        tags = {
            "lightning_ad.role": "trial",
            "lightning_ad.sweep": "quick",
            "lightning_ad.fingerprint": FINGERPRINT,
            "lightning_ad.complete": "true",
        }
        run = client.create_run(experiment, tags=tags)
        for key, value in params.items():
            client.log_param(run.info.run_id, key, value)
        for key, value in metrics.items():
            client.log_metric(run.info.run_id, key, value)
        _log_scores(client, run.info.run_id, str(cell["classes"]).endswith("3"), rng, tmp_path)
        client.set_terminated(run.info.run_id, "FINISHED")
        logged.append({**cell, **metrics})
    return uri, logged


def _log_scores(client, run_id: str, separates: bool, rng, tmp_path: Path) -> None:
    """The per-image test scores artifact: 30 good images and 15 of each defect type, which
    the kNN scorer separates well when ``separates`` and hardly otherwise."""
    defects = ["good"] * 30 + [d for d in DEFECTS for _ in range(15)]
    labels = np.array([d != "good" for d in defects], int)
    scores = pd.DataFrame(
        {
            "image": [f"test/{d}/{i:03d}.png" for i, d in enumerate(defects)],
            "defect": defects,
            "label": labels,
            "knn": rng.random(len(labels)) + (1.0 if separates else 0.05) * labels,
        }
    )
    path = tmp_path / run_id / "test_scores.csv"
    path.parent.mkdir()
    scores.to_csv(path, index=False)
    client.log_artifact(run_id, str(path), artifact_path="scores")


def _trials(uri: str) -> pd.DataFrame:
    spec = SweepSpec.load(QUICK)
    return report.fetch_trials(uri, "lightning_ad-quick", spec, FINGERPRINT, "screw")


def test_verdict_reads_the_runs_scores_per_scorer_and_defect(
    logged: tuple[str, list[dict]],
) -> None:
    """class3's scores separate the test images, class2's hardly: every verdict says class3 is
    better, with an interval above 0; per defect type the p's are Holm-adjusted."""
    trials = _trials(logged[0])
    deltas = report.paired_verdicts(trials)
    assert len(deltas) == 1 and (deltas["seeds"] == 2).all()  # arcface: adacos needs class3
    assert list(deltas["scorer"]) == ["knn"] and (deltas["claim"] == "better").all()
    assert (deltas["ci_low"] > 0).all() and len(deltas["p_delong_by_seed"][0].split(";")) == 2
    by_defect = report.defect_verdicts(trials)
    assert set(by_defect["defect"]) == set(DEFECTS)
    assert (by_defect["p_holm"] >= by_defect["p"]).all()
    p = by_defect["p"]
    assert by_defect["p_holm"].max() == pytest.approx(max(min(1.0, 2 * p.min()), p.max()))


def test_a_ceiling_pair_reads_ceiling_never_p_one(logged: tuple[str, list[dict]]) -> None:
    trials = _trials(logged[0])
    perfect = []
    for frame in trials[report.SCORES]:
        frame = frame.copy()
        frame["knn"] = frame["label"] + 0.01 * np.arange(len(frame)) / len(frame)
        perfect.append(frame)
    trials[report.SCORES] = perfect
    [row] = report.paired_verdicts(trials).to_dict("records")
    assert row["ceiling"] and row["claim"] == "ceiling" and np.isnan(row["p"])
    text = report.summary_text(trials, SweepSpec.load(QUICK), "md", ("delta",))
    assert "| ceiling |" in text and "| 1.000 |" not in text


def test_a_run_without_per_image_scores_has_no_verdict(
    logged: tuple[str, list[dict]],
) -> None:
    trials = _trials(logged[0])
    trials[report.SCORES] = None
    assert report.paired_verdicts(trials).empty


def test_tidy_files_read_back_as_numbers_equal_to_the_logged_medians(
    logged: tuple[str, list[dict]], tmp_path: Path
) -> None:
    uri, runs = logged
    files = report.write_report(_trials(uri), SweepSpec.load(QUICK), _SETTINGS, tmp_path / "out")
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
        for column in ("mean_delta", "ci_low", "ci_high", "p"):
            assert pd.api.types.is_numeric_dtype(deltas[column]), column
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
    args += ["--fingerprint", FINGERPRINT]
    assert main([*args, "--format", "csv", "--out", "t.csv"]) == 0
    assert list(pd.read_csv("t.csv")["head"].unique()) == ["adacos", "arcface", "none"]
    assert main([*args, "--format", "csv", "--table", "delta", "--out", "d.csv"]) == 0
    assert {"mean_delta", "ci_low", "ci_high", "ceiling"} <= set(pd.read_csv("d.csv").columns)
    assert main([*args, "--format", "parquet", "--out", "tables"]) == 0
    assert sorted(p.name for p in Path("tables").iterdir()) == [
        "class3_vs_class2.parquet",
        "class3_vs_class2_by_defect.parquet",
        "median_auc.parquet",
        "trained_vs_frozen.parquet",
    ]


def test_another_scorer_reads_the_same_runs_as_its_own(
    logged: tuple[str, list[dict]], tmp_path: Path
) -> None:
    """Each run scored itself by knn (``test/auc``) and logged lof too: read by lof, every cell's
    median is lof's, and the report keeps lof's tables beside the runs' own."""
    uri, runs = logged
    trials = _trials(uri)
    assert report.scorers_logged(trials) == ["lof"]
    by_lof = report.scored_by(trials, "lof")
    assert list(by_lof["test/auc"]) == list(trials["test/auc_lof"])
    assert set(by_lof["score_used"]) == {"lof"} and set(trials["score_used"]) == {"knn"}
    assert not any(c.startswith("test/auc/") for c in by_lof)  # lof logged no defect AUROCs
    assert list(by_lof["test/pixel_auc"]) == list(trials["test/pixel_auc"])  # PatchCore's maps
    files = report.write_report(trials, SweepSpec.load(QUICK), _SETTINGS, tmp_path / "out")
    cells = pd.read_csv(tmp_path / "out" / "by_scorer" / "lof" / "median_auc.csv")
    assert {f.name for f in files if f.parent.name == "lof"} >= {"median_auc.md", "median_auc.csv"}
    row = cells[(cells["head"] == "arcface") & (cells["classes"] == "class3")].iloc[0]
    lof = [r["test/auc_lof"] for r in runs if (r["head"], r["classes"]) == ("arcface", "class3")]
    assert row["median"] == pytest.approx(np.median(lof), abs=1e-12)
    assert row["score_used"] == "lof"


def test_a_scorer_with_its_own_maps_is_read_with_its_pixel_and_aupro_values() -> None:
    """Runs scored by twinseg log its maps' metrics as their own (``test/pixel_auc``) and
    PatchCore's beside them (``_patch``): read by twinseg, the pixel and AUPRO tables are
    twinseg's; read by knn (no maps of its own: it serves PatchCore's), PatchCore's."""
    trials = pd.DataFrame(
        {
            "test/auc": [0.7, 0.6],
            "test/auc_knn": [0.9, 0.8],
            "test/auc_twinseg": [0.7, 0.6],
            "test/pixel_auc": [0.91, 0.92],
            "test/pixel_auc/scratch": [0.81, 0.82],
            "test/pixel_auc_twinseg": [0.91, 0.92],
            "test/pixel_auc_twinseg/scratch": [0.81, 0.82],
            "test/pixel_auc_patch": [0.99, 0.98],
            "test/pixel_auc_patch/scratch": [0.97, 0.96],
            "test/aupro": [0.75, 0.74],
            "test/aupro_twinseg": [0.75, 0.74],
            "test/aupro_patch": [0.95, 0.94],
            "score_used": ["twinseg", "twinseg"],
        }
    )
    by_twinseg = report.scored_by(trials, "twinseg")
    assert list(by_twinseg["test/auc"]) == [0.7, 0.6]
    assert list(by_twinseg["test/pixel_auc"]) == [0.91, 0.92]
    assert list(by_twinseg["test/pixel_auc/scratch"]) == [0.81, 0.82]
    assert list(by_twinseg["test/aupro"]) == [0.75, 0.74]
    by_knn = report.scored_by(trials, "knn")
    assert list(by_knn["test/auc"]) == [0.9, 0.8]
    assert list(by_knn["test/pixel_auc"]) == [0.99, 0.98]
    assert list(by_knn["test/pixel_auc/scratch"]) == [0.97, 0.96]
    assert list(by_knn["test/aupro"]) == [0.95, 0.94]
    old = trials.drop(columns=[c for c in trials if "_patch" in c])  # runs of code < 0.3.3
    assert list(report.scored_by(old, "knn")["test/pixel_auc"]) == [0.91, 0.92]


def test_the_frozen_baseline_is_read_by_patchcore_in_a_map_scorers_place() -> None:
    """The frozen run scored itself by PatchCore in twinseg's place: read by twinseg, its
    row keeps PatchCore's numbers and says so, the trained row gets twinseg's."""
    trials = pd.DataFrame(
        {
            "head": ["none", "arcface"],
            "test/auc_patch": [0.95, 0.96],
            "test/auc_twinseg": [np.nan, 0.7],
            "test/aupro_patch": [0.94, 0.93],
            "test/aupro_twinseg": [np.nan, 0.75],
            "score_used": ["patch", "twinseg"],
        }
    )
    by_twinseg = report.scored_by(trials, "twinseg")
    assert list(by_twinseg["test/auc"]) == [0.95, 0.7]
    assert list(by_twinseg["test/aupro"]) == [0.94, 0.75]
    assert list(by_twinseg["score_used"]) == ["patch", "twinseg"]


def test_each_trained_cell_is_compared_with_the_frozen_baseline_over_seeds(
    logged: tuple[str, list[dict]], tmp_path: Path
) -> None:
    """class3's kNN scores separate the test images, the frozen baseline's hardly: trained
    class3 - frozen has an interval above 0. A scorer the frozen runs lack (twinseg) is
    compared with their PatchCore; the table is written beside the others."""
    trials = _trials(logged[0])
    scores = []
    for head, frame in zip(trials["head"], trials[report.SCORES], strict=True):
        noise = np.random.default_rng(1).random(len(frame))  # the same in every run
        frame = frame.assign(patch=noise)
        if head != "none":
            frame = frame.assign(twinseg=frame["label"] + noise)
        scores.append(frame)
    trials[report.SCORES] = scores
    table = report.frozen_verdicts(trials)
    cells = {(r["head"], r["classes"], r["scorer"]): r for r in table.to_dict("records")}
    assert set(cells) == {
        ("arcface", c, s) for c in ("class2", "class3") for s in ("knn", "patch", "twinseg")
    } | {("adacos", "class3", s) for s in ("knn", "patch", "twinseg")}
    knn3 = cells[("arcface", "class3", "knn")]
    assert knn3["frozen_scorer"] == "knn" and knn3["claim"] == "better" and knn3["ci_low"] > 0
    assert knn3["seeds"] == 2
    twinseg = cells[("arcface", "class2", "twinseg")]
    assert twinseg["frozen_scorer"] == "patch" and twinseg["claim"] == "better"
    report.write_report(trials, SweepSpec.load(QUICK), _SETTINGS, tmp_path / "out")
    written = pd.read_csv(tmp_path / "out" / "trained_vs_frozen.csv")
    assert len(written) == len(table) and set(written["sweep"]) == {"quick"}
    text = report.summary_text(trials, SweepSpec.load(QUICK), "md", ("frozen",))
    assert "trained − frozen [95 % CI]" in text and "| better |" in text
    unscored = [None if h == "none" else f for h, f in zip(trials["head"], scores, strict=True)]
    frozen_unscored = trials.assign(**{report.SCORES: unscored})
    assert report.frozen_verdicts(frozen_unscored).empty
    assert "frozen" not in report.tables_for(frozen_unscored)


def test_table_score_prints_that_scorers_medians_and_names_the_logged_ones_otherwise(
    logged: tuple[str, list[dict]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    uri, runs = logged
    monkeypatch.chdir(tmp_path)
    args = ["table", "--sweep", str(QUICK), "--category", "screw", "--tracking-uri", uri]
    args += ["--fingerprint", FINGERPRINT, "--format", "csv"]
    assert main([*args, "--score", "lof"]) == 0
    cells = pd.read_csv(io.StringIO(capsys.readouterr().out))
    frozen = [r["test/auc_lof"] for r in runs if r["head"] == "none"]
    assert cells.loc[cells["head"] == "none", "median"].item() == pytest.approx(np.median(frozen))
    assert main([*args, "--score", "fused"]) == 2
    assert "--score fused: no run of this table logged it; the runs logged lof" in (
        capsys.readouterr().err
    )


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
    args += ["--fingerprint", FINGERPRINT]
    assert main([*args, *extra]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "t.csv").exists()


_SETTINGS = Settings(
    {
        "trial": {"image_size": 32},
        "search": None,
        "data": {"dataset": "synthetic", "folder": "screw", "root": "/data", "files": "0" * 32},
        "code_version": "0",
    }
)


def test_each_fingerprint_has_its_folder_and_latest_points_at_the_last_written(
    logged: tuple[str, list[dict]], tmp_path: Path
) -> None:
    """Two sweeps of one name with other settings: neither overwrites the other's tables."""
    trials, spec = _trials(logged[0]), SweepSpec.load(QUICK)
    other = Settings({**_SETTINGS.values, "trial": {"image_size": 40}})
    category = tmp_path / "reports" / "quick" / "screw"
    for settings in (_SETTINGS, other):
        report.write_report(trials, spec, settings, category / settings.fingerprint)
    for settings in (_SETTINGS, other):
        folder = category / settings.fingerprint
        assert json.loads((folder / "settings.json").read_text()) == settings.values
        assert (folder / "median_auc.parquet").is_file()
    assert (category / "latest").resolve() == (category / other.fingerprint).resolve()
    assert sorted(p.name for p in category.iterdir()) == sorted(
        [_SETTINGS.fingerprint, other.fingerprint, "latest"]
    )  # no staging names left behind


def test_a_write_that_fails_halfway_leaves_the_previous_file_whole(tmp_path: Path) -> None:
    table = tmp_path / "median_auc.md"
    report.replace_whole(table, lambda path: path.write_text("| the previous table |\n"))

    def crash(path: Path) -> None:
        path.write_text("| half a ta")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        report.replace_whole(table, crash)
    assert table.read_text() == "| the previous table |\n"
    assert [p.name for p in tmp_path.iterdir()] == ["median_auc.md"]


def test_the_parent_overview_opens_on_the_verdict_and_its_metrics_chart_it(
    logged: tuple[str, list[dict]],
) -> None:
    """What the MLflow UI shows first on the parent run: a sentence per pair, then the medians;
    the settings last. Its metrics hold each cell's medians and each pair's interval."""
    trials = _trials(logged[0])
    lines = parent_description(trials, SweepSpec.load(QUICK), _SETTINGS).splitlines()
    assert lines[0].startswith("### Verdict: class3 - class2")
    assert lines[1].startswith("- screw, mobilenet_v2, arcface (") and "2 seeds" in lines[1]
    assert lines.index("### Median test AUC over seeds (n seeds)") < next(
        i for i, line in enumerate(lines) if line.startswith("Settings fingerprint")
    )
    medians = report.median_metrics(trials)
    for name in ("median_auc", "median_pixel_auc", "median_aupro", "median_detection_rate"):
        assert f"{name}/mobilenet_v2/arcface/class3" in medians
    verdicts = report.verdict_metrics(trials)
    row = report.paired_verdicts(trials, main_only=True).set_index("head").loc["arcface"]
    for field in ("mean_delta", "ci_low", "ci_high"):
        value, seeds = verdicts[f"class3_vs_class2/mobilenet_v2/arcface/{row['scorer']}/{field}"]
        assert value == pytest.approx(row[field]) and seeds == 2


def test_a_shifted_split_gets_its_own_table_and_columns() -> None:
    """Runs scored on a shifted test split (``test_lighting/*``) get the ``shift`` table, their
    medians in the tidy table, and their own scorer's values when read by another scorer; runs
    without one get no ``shift`` table at all."""
    spec = SweepSpec.load(QUICK).with_category("screw")
    cells = [c for c in spec.cells() if not spec.skip_reason(c)]
    rows = []
    for i, cell in enumerate(cells):
        row = {k: str(v) for k, v in cell.items()} | {"seed": int(cell["seed"])}
        row |= {"test/auc": 0.9, "test/auc_knn": 0.8, "score_used": "patch"}
        row |= {"test_lighting/auc": 0.5 + i / 100, "test_lighting/auc_knn": 0.6}
        rows.append(row | {"test_lighting/false_alarm_rate": 0.25})
    trials = pd.DataFrame(rows)
    table = report.display_table(trials, spec, "shift", "md")[0]
    assert list(table.columns[:3]) == ["backbone", "category", "shift"]
    assert set(table["shift"]) == {"lighting"} and set(table["category"]) == {"screw"}
    frozen = trials[trials["head"] == "none"]["test_lighting/auc"]
    assert table.iloc[0, 3] == f"{frozen.median():.3f} ({len(frozen)})"
    tidy = report.tidy_table(trials, spec, "median")
    assert set(tidy["median_test_lighting/false_alarm_rate"]) == {0.25}
    assert set(report.scored_by(trials, "knn")["test_lighting/auc"]) == {0.6}
    assert "shift" in report.tables_for(trials)
    plain = trials.drop(columns=[c for c in trials if c.startswith("test_lighting")])
    assert "shift" not in report.tables_for(plain)
    assert "camera change" not in report.summary_text(plain, spec)
    assert "camera change" in report.summary_text(trials, spec)
