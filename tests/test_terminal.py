"""What a person sees when a sweep's and a predict's output go to a file (a log, ``nohup``, CI):
lightning_ad's own lines only. MLflow's download bars, Lightning's banners and tips, and other
carriage-return progress lines are third-party chatter that asks nothing of the user."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import mlflow
import pytest
import yaml

from lightning_ad import tracking
from tests.helpers import SWEEPS, _clean_env

pytestmark = pytest.mark.e2e
CHATTER = ("Downloading artifacts", "%|", "\r", "GPU available", "💡", "LitLogger")


def _run_to_file(args: list[str], cwd: Path, log: Path) -> str:
    with log.open("w") as out:
        done = subprocess.run(
            [sys.executable, "-m", "lightning_ad", *args], cwd=cwd, env=_clean_env(),
            stdout=out, stderr=subprocess.STDOUT, timeout=900,
        )  # fmt: skip
    text = log.read_text()
    assert done.returncode == 0, text
    return text


def test_a_sweep_cell_of_the_default_recipe_and_predict_log_only_our_lines(
    synthetic_root: Path, tmp_path: Path
) -> None:
    recipe = yaml.safe_load((SWEEPS / "default.yaml").read_text())
    recipe["grid"] = {**recipe["grid"], "category": ["screw"], "head": ["arcface"]}
    recipe["grid"] |= {"classes": [3], "seed": [0]}
    sweep_file = tmp_path / "one-cell.yaml"
    sweep_file.write_text(yaml.safe_dump(recipe))
    args = ["--sweep", str(sweep_file), "--category", "screw", "--data-root", str(synthetic_root)]
    sweep_log = _run_to_file(["sweep", *args], tmp_path, tmp_path / "sweep.log")

    store = f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    query = f"tags.`{tracking.ROLE_TAG}` = '{tracking.TRIAL_ROLE}'"
    client = mlflow.MlflowClient(store)
    experiment = client.get_experiment_by_name("lightning_ad-one-cell")
    [trial] = client.search_runs([experiment.experiment_id], query)
    images = synthetic_root / "screw" / "test"
    predict_log = _run_to_file(
        ["predict", "--model", f"runs:/{trial.info.run_id}/model", str(images), "--out",
         str(tmp_path / "scores.csv"), "--tracking-uri", store],
        tmp_path, tmp_path / "predict.log",
    )  # fmt: skip
    for text in (sweep_log, predict_log):
        for noise in CHATTER:
            assert noise not in text, f"{noise!r} in:\n{text}"
    assert "class3" in sweep_log  # the sweep still speaks: its own lines are there
    assert len((tmp_path / "scores.csv").read_text().splitlines()) > 1
