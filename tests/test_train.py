"""``lightning-ad train`` end to end on tiny data, into a temporary MLflow store."""

import json
import signal
from pathlib import Path

import mlflow
import pytest
import pytorch_lightning as pl

from lightning_ad import tracking
from lightning_ad.config import TrialConfig
from lightning_ad.data.synthetic import generate_shift
from lightning_ad.errors import LightningADError
from lightning_ad.train import run_trial
from tests.helpers import TINY, invoke


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> str:
    return f"sqlite:///{tmp_path_factory.mktemp('mlruns') / 'mlflow.db'}"


def test_logs_params_metrics_and_artifacts(synthetic_root: Path, store: str) -> None:
    config = TrialConfig(**TINY, head="arcface", classes=3, data_root=str(synthetic_root))
    result = run_trial(config, tracking_uri=store, experiment="tests", progress_bar=False)
    run = mlflow.MlflowClient(store).get_run(result.run_id)
    assert run.info.status == "FINISHED"
    params = run.data.params
    assert params["category"] == "screw" and params["dataset"] == "custom"
    assert params["backbone"] == "mobilenet_v2" and params["head"] == "arcface"
    assert params["classes"] == "class3" and params["seed"] == "0" and params["image_size"] == "32"
    assert params["head/s"] == "30.0" and params["head/m"] == "0.05"
    assert (
        params["pretrained_used"] == "random" and params["torch_version"] and params["git_commit"]
    )
    metrics = run.data.metrics
    for key in (
        "train/loss",
        "val/loss",
        "val/acc",
        "test/auc",
        "test/auc_lof",
        "test/auc_knn",
        "test/auc_prob",
        "test/auc_lof/scratch_head",
        "test/auc/scratch_head",
        "test/auc_patch",
        "test/pixel_auc",
        "test/aupro",
        "test/pixel_auc_gradcam",
    ):
        assert key in metrics, key
    assert metrics["test/auc"] == pytest.approx(
        result.metrics["test/auc"], rel=1e-6
    )  # logged as float32
    artifacts = {a.path for a in mlflow.MlflowClient(store).list_artifacts(result.run_id, "plots")}
    assert {
        "plots/roc.png",
        "plots/gradcam.png",
        "plots/hist_lof.png",
        "plots/anomaly_maps.png",
    } <= artifacts
    scores = tracking.test_scores(store, result.run_id)
    assert list(scores.columns) == [
        "image",
        "defect",
        "label",
        "lof",
        "knn",
        "prob",
        "patch",
    ]
    assert len(scores) == 60 and scores["image"].str.startswith("test/").all()
    assert set(scores.loc[scores["label"] == 0, "defect"]) == {"good"}


def test_same_seed_same_auc(synthetic_root: Path, store: str) -> None:
    config = TrialConfig(
        **TINY, head="cosface", classes=2, data_root=str(synthetic_root), artifacts="minimal"
    )
    first = run_trial(config, tracking_uri=store, experiment="tests", progress_bar=False)
    second = run_trial(config, tracking_uri=store, experiment="tests", progress_bar=False)
    assert first.metrics == second.metrics


def test_cli_prints_json_last(synthetic_root: Path, tmp_path: Path) -> None:
    result = invoke(
        "train",
        "--category",
        "grid",
        "--data-root",
        str(synthetic_root),
        "--backbone",
        "mobilenet_v2",
        "--head",
        "none",
        "--image-size",
        "32",
        "--pretrained",
        "false",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    last = json.loads(result.stdout.strip().splitlines()[-1])
    assert set(last) >= {"run_id", "test/auc", "test/auc_lof", "test/auc_knn"}
    assert (tmp_path / "mlruns" / "mlflow.db").is_file()  # the default store, relative to cwd


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--backbone", "resnet81"], "unknown backbone 'resnet81' (did you mean 'resnet18'?)"),
        (["--head", "arcfce"], "unknown head 'arcfce' (did you mean 'arcface'?); valid: softmax"),
        (["--classes", "normal,lines"], "unknown twin 'lines'"),
        (["--head", "adacos", "--classes", "2"], "head adacos needs 3 or more classes, got 2"),
        (["--image-size", "16"], "image size 16 is too small"),
        (
            ["--tracking-uri", "http://127.0.0.1:9"],
            "cannot reach the MLflow tracking server at http://127.0.0.1:9",
        ),
    ],
)
def test_bad_input_is_one_line_exit_2_nothing_written(
    args: list[str], message: str, synthetic_root: Path, tmp_path: Path
) -> None:
    result = invoke(
        "train", "--category", "screw", "--data-root", str(synthetic_root), *args, cwd=tmp_path
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert not (tmp_path / "mlruns").exists()


def test_config_rejects_unknown_head_parameter() -> None:
    with pytest.raises(LightningADError, match="unknown parameter 'margin' for head 'arcface'"):
        TrialConfig(head="arcface", head_params={"margin": 0.5})


class _CtrlC(pl.Callback):
    """Presses Ctrl-C in the middle of the first training batch."""

    def on_train_batch_start(self, *args) -> None:
        raise KeyboardInterrupt


def test_ctrl_c_during_fit_stays_an_interrupt(synthetic_root: Path, store: str) -> None:
    """Lightning turns Ctrl-C into sys.exit(1); run_trial turns it back into KeyboardInterrupt
    (so Optuna records the trial) and marks the MLflow run KILLED."""
    config = TrialConfig(**TINY, head="arcface", classes=2, data_root=str(synthetic_root))
    client = mlflow.MlflowClient(store)
    experiment_id = tracking.ensure_experiment("tests", store)  # also when run alone (-k)
    before = {r.info.run_id for r in client.search_runs([experiment_id])}
    with pytest.raises(KeyboardInterrupt):
        run_trial(
            config, tracking_uri=store, experiment="tests", callbacks=[_CtrlC()], progress_bar=False
        )
    new = [r for r in client.search_runs([experiment_id]) if r.info.run_id not in before]
    assert [r.info.status for r in new] == ["KILLED"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


class _StatusAtTestStart(pl.Callback):
    """Reads the run's status in MLflow when the test begins, after fit has ended."""

    def __init__(self, uri: str) -> None:
        self.uri, self.status = uri, None

    def on_test_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        run_id = trainer.logger.run_id
        self.status = mlflow.MlflowClient(self.uri).get_run(run_id).info.status


def test_a_run_is_finished_only_after_its_test(synthetic_root: Path, store: str) -> None:
    """Lightning ends its MLflow run when fit ends; a crash between fit and test would then
    leave a FINISHED run without test metrics. The run stays RUNNING until run_trial is done."""
    probe = _StatusAtTestStart(store)
    config = TrialConfig(**TINY, head="arcface", data_root=str(synthetic_root))
    result = run_trial(
        config, tracking_uri=store, experiment="tests", callbacks=[probe], progress_bar=False
    )
    assert probe.status == "RUNNING"
    run = mlflow.MlflowClient(store).get_run(result.run_id)
    assert run.info.status == "FINISHED" and "test/auc" in run.data.metrics


def test_class2_and_class3_trials_of_one_seed_take_the_same_steps(
    synthetic_root: Path, store: str
) -> None:
    steps = []
    for classes in (2, 3):
        config = TrialConfig(
            **TINY,
            head="arcface",
            classes=classes,
            artifacts="minimal",
            log_model=False,
            data_root=str(synthetic_root),
        )
        result = run_trial(config, tracking_uri=store, experiment="tests", progress_bar=False)
        run = mlflow.MlflowClient(store).get_run(result.run_id)
        steps.append(run.data.metrics["trainer/global_step"])
    assert steps[0] == steps[1] > 0


def test_a_shifted_test_split_is_scored_beside_the_test_split(screw_copy: Path, store: str) -> None:
    """``data synth --shift``: the same detector, threshold and scorers on the shifted split,
    logged as ``test_<shift>/*``; the test split's own metrics are what they were without it."""
    config = TrialConfig(**TINY, head="none", data_root=str(screw_copy))
    plain = run_trial(config, tracking_uri=store, experiment="tests", progress_bar=False)
    generate_shift("screw", screw_copy.parent, "exposure", max_per_folder=10)
    shifted = run_trial(config, tracking_uri=store, experiment="tests", progress_bar=False)
    tests = {k: v for k, v in shifted.metrics.items() if k.startswith("test/")}
    assert tests == pytest.approx({k: v for k, v in plain.metrics.items() if k.startswith("test/")})
    for key in ("auc", "auc_patch", "aupro", "pixel_auc", "false_alarm_rate", "auc/scratch_head"):
        assert f"test_exposure/{key}" in shifted.metrics, key
    assert not any(k.startswith("test_exposure/") for k in plain.metrics)
    assert shifted.metrics["test_exposure/auc"] != shifted.metrics["test/auc"]
