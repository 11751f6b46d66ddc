"""Whole sweeps on tiny data, into a temporary MLflow store and Optuna journal: results,
resume, failures, the parent run, the in-cell search, Ctrl-C."""

from __future__ import annotations

import dataclasses
import re
import signal
from pathlib import Path

import mlflow
import numpy as np
import optuna
import pytest
import pytorch_lightning as pl
import yaml

from lightning_ad import cli, report, tracking
from lightning_ad.errors import LightningADError
from lightning_ad.sweep.runner import run_sweep
from lightning_ad.sweep.spec import SweepSpec, SweepTarget
from lightning_ad.sweep.storage import open_storage
from lightning_ad.sweep.study import load_study
from lightning_ad.train import run_trial
from tests.fakes import NoOpTrials
from tests.helpers import (
    SWEEPS,
    assert_grid_filled_once,
    start_sweep,
    sweep_command,
    trial_runs,
    wait_for,
)
from tests.sweep.conftest import temporary_target


@pytest.mark.e2e  # a whole sweep of real trials
def test_quick_sweep_runs_resumes_and_tables_match(target: SweepTarget) -> None:
    outcome = run_sweep(target, show_progress=False)
    assert outcome.status.complete == outcome.status.cells == 8 and not outcome.status.failed
    files = outcome.files
    children = trial_runs(target)
    # 2 seeds x (frozen + arcface class2 + arcface class3 + adacos class3); adacos class2 is n/a.
    assert len(children) == 8 and all(r.info.status == "FINISHED" for r in children)
    parent_ids = {r.data.tags["mlflow.parentRunId"] for r in children}
    assert len(parent_ids) == 1
    for run in children:
        params, tags = run.data.params, run.data.tags
        assert params["category"] == "screw" and params["backbone"] == "mobilenet_v2"
        assert params["classes"] in ("class2", "class3") and params["seed"] in ("0", "1")
        assert tags["optuna.study"] == target.study_name and tags["optuna.trial"].isdigit()
        assert tags[tracking.FINGERPRINT_TAG] == target.fingerprint
        assert "test/auc" in run.data.metrics

    # Rerunning the same command trains nothing again.
    trials_before = len(load_study(target).trials)
    run_sweep(target, show_progress=False)
    assert len(trial_runs(target)) == 8
    assert len(load_study(target).trials) == trials_before

    # The table's medians are the medians of the logged metrics.
    trials = report.fetch_trials(
        target.tracking_uri, target.experiment, target.spec, target.fingerprint
    )
    table = report.main_table(trials, target.spec)
    for column, (head, classes) in {
        "arcface class3": ("arcface", "class3"),
        "frozen": ("none", "class2"),
    }.items():
        logged = [
            r.data.metrics["test/auc"]
            for r in children
            if r.data.params["head"] == head and r.data.params["classes"] == classes
        ]
        assert table.loc[0, column] == f"{np.median(logged):.3f} (2)"
    assert table.loc[0, "adacos class2"] == "n/a"

    # The parent run carries the medians, the spec and the tables, and ended with the grid.
    client = mlflow.MlflowClient(target.tracking_uri)
    parent = client.get_run(parent_ids.pop())
    assert parent.info.status == "FINISHED"
    assert parent.data.tags[tracking.FAILED_CELLS_TAG] == "0"
    note = parent.data.tags["mlflow.note.content"]  # the run's Overview in the UI
    assert "### Median test AUC" in note and "### class3 - class2" in note
    assert "| mobilenet_v2 | screw |" in note
    experiment = client.get_experiment_by_name(target.experiment)
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    assert parent.data.metrics["median_auc/mobilenet_v2/arcface/class3"] == pytest.approx(
        np.median(
            [
                r.data.metrics["test/auc"]
                for r in children
                if r.data.params["head"] == "arcface" and r.data.params["classes"] == "class3"
            ]
        )
    )
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id, "report")}
    assert "report/median_auc.md" in artifacts and "report/class3_vs_class2.csv" in artifacts
    assert {f.name for f in files} >= {
        "median_auc.md",
        "median_auc.csv",
        "median_auc.html",
        "median_auc.tex",
        "class3_vs_class2_by_defect.md",
        "auc_per_cell.png",
        "class3_vs_class2_forest.png",
        "index.html",
    }
    # The page: the verdict, the plots and each section's anomaly maps.
    page = (target.reports / "index.html").read_text()
    assert page.index("Verdict") < page.index("Median test AUC")
    assert "Anomaly maps: best cell: mobilenet_v2 " in page and "Anomaly maps: frozen" in page
    sources = re.findall(r'src="([^"]+)"', page)  # inside the page: MLflow's view shows it alone
    maps = list((target.reports / "maps").rglob("*.png"))
    assert len(sources) == 2 + len(maps) and maps
    assert all(source.startswith("data:image/png;base64,") for source in sources)
    assert "report/index.html" in artifacts and "report/maps" in artifacts


def test_a_failing_trial_is_recorded_and_retried_on_rerun(target: SweepTarget) -> None:
    noop = NoOpTrials()

    def flaky(config, *args, **kwargs):
        if config.head == "arcface" and config.seed == 1 and config.classes.label == "class3":
            raise RuntimeError("simulated bad data")
        return noop(config, *args, **kwargs)

    run_sweep(target, show_progress=False, train=flaky)  # the sweep goes on past the failure
    study = load_study(target)
    failed = [t for t in study.trials if t.state == optuna.trial.TrialState.FAIL]
    assert len(failed) == 1 and "simulated bad data" in failed[0].user_attrs["error"]
    assert len(trial_runs(target)) == 7

    run_sweep(target, show_progress=False, train=noop)
    children = trial_runs(target)
    assert len(children) == 8  # only the failed cell was trained again
    keys = [
        (r.data.params["head"], r.data.params["classes"], r.data.params["seed"]) for r in children
    ]
    assert len(set(keys)) == 8


@pytest.mark.parametrize("storage", ["journal", "sqlite"])
def test_a_grid_larger_than_the_queue_runs_each_cell_once(
    target: SweepTarget, storage: str, tmp_path: Path
) -> None:
    """The queue holds ``queue_ahead`` cells and the worker queues the next ones when it runs
    dry, on the journal and on an RDB storage (whose trials send heartbeats)."""
    if storage == "sqlite":
        target = dataclasses.replace(target, storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    target = dataclasses.replace(target, queue_ahead=3)
    noop, waiting = NoOpTrials(), []

    def counting_queue(config, *args, **kwargs):
        waiting.append(
            len(load_study(target).get_trials(states=(optuna.trial.TrialState.WAITING,)))
        )
        return noop(config, *args, **kwargs)

    assert run_sweep(target, show_progress=False, train=counting_queue).status.all_complete
    assert_grid_filled_once(target)
    assert len(waiting) == 8 and max(waiting) == 2  # three queued, one of them taken


@pytest.mark.e2e
def test_two_local_workers_fill_the_grid_once(target: SweepTarget) -> None:
    run_sweep(target, workers=2, show_progress=False)
    children = trial_runs(target)
    keys = [
        (r.data.params["head"], r.data.params["classes"], r.data.params["seed"]) for r in children
    ]
    assert len(keys) == 8 and len(set(keys)) == 8
    workers = {t.user_attrs.get("worker") for t in load_study(target).trials}
    assert len(workers - {None}) == 2  # both processes took cells


SEARCH_SWEEP = {
    "grid": {
        "category": ["screw"],
        "backbone": ["mobilenet_v2"],
        "head": ["none", "arcface"],
        "classes": [3],
        "seed": [0],
    },
    "fixed": {"image_size": 32, "epochs": 2, "pretrained": "false", "artifacts": "minimal"},
    "search": {"trials_per_cell": 3, "params": {"lr": {"low": 1e-5, "high": 1e-3, "log": True}}},
}


def test_search_tunes_trained_cells_and_runs_the_frozen_one_once(
    synthetic_root: Path, tmp_path: Path
) -> None:
    """Which proposals run and which is kept: no-op trials (their val/loss is 0.5, so the
    first proposal is the lowest); the real search is the proposals-all-fail test's."""
    target = temporary_target(
        SweepSpec.from_dict(SEARCH_SWEEP, default_name="tuned"), synthetic_root, tmp_path
    )
    noop = NoOpTrials()
    outcome = run_sweep(target, show_progress=False, train=noop)
    assert outcome.status.complete == 2 and not outcome.status.failed
    runs = trial_runs(target)
    [frozen] = [r for r in runs if r.data.params["head"] == "none"]  # once: lr cannot change it
    assert frozen.data.tags[tracking.SELECTED_TAG] == "true" and "test/auc" in frozen.data.metrics
    tuned = [r for r in runs if r.data.params["head"] == "arcface"]
    assert len(tuned) == 3 and len({r.data.params["lr"] for r in tuned}) == 3
    [selected] = [r for r in tuned if r.data.tags[tracking.SELECTED_TAG] == "true"]
    storage = open_storage(target.storage)
    inner = optuna.load_study(
        study_name=f"{target.study_name}/mobilenet_v2-arcface-class3-0", storage=storage
    )
    assert selected.info.run_id == inner.best_trial.user_attrs["mlflow_run_id"]  # lowest val/loss
    inner_studies = {s.study_name for s in optuna.get_all_study_summaries(storage)}
    assert not any("-none-" in name for name in inner_studies)
    table = report.fetch_trials(
        target.tracking_uri, target.experiment, target.spec, target.fingerprint
    )
    assert sorted(table["run_id"]) == sorted([frozen.info.run_id, selected.info.run_id])
    client = mlflow.MlflowClient(target.tracking_uri)
    [parent_id] = {r.data.tags["mlflow.parentRunId"] for r in runs}
    assert client.get_run(parent_id).info.status == "FINISHED"

    run_sweep(target, show_progress=False, train=noop)  # resumes: the budget is spent
    assert len(trial_runs(target)) == 4
    assert client.get_run(parent_id).info.status == "FINISHED"


def test_a_cell_whose_proposals_all_fail_is_a_failed_cell_and_exit_1(
    synthetic_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    """Every learning rate the search may propose drives arcface's loss to NaN: all three
    proposals fail. The frozen cell is never searched (lr cannot change it) and runs."""
    diverging = {
        **SEARCH_SWEEP,
        "search": {
            "trials_per_cell": 3,
            "params": {"lr": {"low": 1e29, "high": 1e30, "log": True}},
        },
    }
    monkeypatch.chdir(tmp_path)
    spec_file = tmp_path / "tuned.yaml"
    spec_file.write_text(yaml.safe_dump(diverging))
    code = cli.main(
        ["sweep", "--sweep", str(spec_file), "--data-root", str(synthetic_root), "--quiet"]
    )
    assert code == 1
    err = capsys.readouterr().err
    assert "failed: screw mobilenet_v2 arcface class3 0: LightningADError: inner study" in err
    assert "none of its 3 proposals finished" in err and "(3 failed, 0 pruned)" in err
    assert re.search(r"the first failed with LightningADError: \w+ loss is (nan|inf)", err)
    assert "1 cell is not complete" in err
    target = SweepTarget(SweepSpec.load(spec_file), "screw", data_root=str(synthetic_root))
    client = mlflow.MlflowClient(target.tracking_uri)
    [parent] = client.search_runs(
        [client.get_experiment_by_name(target.experiment).experiment_id],
        "tags.`lightning_ad.role` = 'sweep'",
    )
    assert parent.info.status == "FAILED" and parent.data.tags[tracking.FAILED_CELLS_TAG] == "1"
    frozen = report.fetch_trials(
        target.tracking_uri, target.experiment, target.spec, target.fingerprint
    )
    assert list(frozen["head"]) == ["none"]  # the floor is in the table all the same


@pytest.mark.e2e
@pytest.mark.parametrize(
    ("signum", "status"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["ctrl-c", "sigterm"]
)
def test_an_interrupt_stops_cleanly_and_the_rerun_finishes(
    synthetic_root: Path, tmp_path: Path, signum: int, status: int
) -> None:
    """Ctrl-C or SIGTERM (docker stop) during a trial: exit 130 / 143, finished trials kept,
    the interrupted one not left RUNNING anywhere, and the same command then completes the
    grid."""
    held = tmp_path / "held"
    process = start_sweep(sweep_command(synthetic_root, hold=held, hold_nth=3), tmp_path)
    # The third training trial holds until the signal: two have finished, one is running.
    wait_for(held.exists, 300, "the third training trial to start")
    process.send_signal(signum)
    output, _ = process.communicate(timeout=120)
    assert process.returncode == status, output
    target = SweepTarget(
        SweepSpec.load(SWEEPS / "quick.yaml").with_category("screw"),
        "screw",
        storage=str(tmp_path / "mlruns" / "optuna.journal"),
        tracking_uri=f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}",
        data_root=str(synthetic_root),
    )
    runs = {r.info.run_id: r.info.status for r in trial_runs(target)}
    assert runs.pop(held.read_text()) == "KILLED"  # the interrupted trial's run
    [parent_id] = {r.data.tags["mlflow.parentRunId"] for r in trial_runs(target)}
    parent = mlflow.MlflowClient(target.tracking_uri).get_run(parent_id)
    assert parent.info.status == "KILLED" and parent.data.tags[tracking.FAILED_CELLS_TAG] == "0"
    assert "RUNNING" not in runs.values() and list(runs.values()).count("FINISHED") >= 2
    assert all(t.state != optuna.trial.TrialState.RUNNING for t in load_study(target).trials)

    rerun = start_sweep(sweep_command(synthetic_root), tmp_path)
    output, _ = rerun.communicate(timeout=600)
    assert rerun.returncode == 0, output
    assert_grid_filled_once(target)  # nothing finished was trained twice


def test_a_category_typo_fails_before_anything_is_written(tmp_path: Path) -> None:
    spec = SweepSpec.load(SWEEPS / "quick.yaml").with_category("scerw")
    target = SweepTarget(
        spec,
        "scerw",
        storage=str(tmp_path / "optuna.journal"),
        tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
        data_dir=str(tmp_path / "data"),
        reports_dir=str(tmp_path / "reports"),
    )
    with pytest.raises(LightningADError, match="unknown category 'scerw'"):
        run_sweep(target, show_progress=False)
    assert not any(tmp_path.iterdir())  # no study, no run, no report


class _CrashBeforeTheTest(pl.Callback):
    """What a crash between ``fit`` and ``test`` looks like to the trial."""

    def on_test_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        raise RuntimeError("simulated crash after fit")


def _crashing(config, *args, callbacks=None, **kwargs):
    """``run_trial`` with a crash after its fit."""
    return run_trial(config, *args, callbacks=[*(callbacks or []), _CrashBeforeTheTest()], **kwargs)


def test_a_crash_between_fit_and_test_leaves_no_finished_run_and_the_cell_is_retried(
    synthetic_root: Path, tmp_path: Path
) -> None:
    """FINISHED means tested: a run is complete only once its test scores are logged."""
    one_cell = {**SEARCH_SWEEP, "grid": {**SEARCH_SWEEP["grid"], "head": ["arcface"]}}
    del one_cell["search"]
    target = temporary_target(
        SweepSpec.from_dict(one_cell, default_name="crash"), synthetic_root, tmp_path
    )

    assert run_sweep(target, show_progress=False, train=_crashing).status.failed
    [crashed] = trial_runs(target)
    assert crashed.info.status == "FAILED" and tracking.COMPLETE_TAG not in crashed.data.tags
    assert "val/loss" in crashed.data.metrics  # fit had ended: Lightning did not finish it

    assert run_sweep(target, show_progress=False).status.all_complete
    runs = {r.info.status: r for r in trial_runs(target)}
    assert sorted(runs) == ["FAILED", "FINISHED"]
    assert runs["FINISHED"].data.tags[tracking.COMPLETE_TAG] == "true"
