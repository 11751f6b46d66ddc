"""One trial: TrialConfig -> DataModule + Module + Trainer -> one MLflow run -> test metrics.

``lightning-ad train`` and every sweep trial call :func:`run_trial`; nothing else trains.
"""

from __future__ import annotations

import errno
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import EarlyStopping, ModelCheckpoint, StochasticWeightAveraging
from pytorch_lightning.loggers import MLFlowLogger

from lightning_ad import explain, metrics, plots, tracking
from lightning_ad.config import TrainingConfig, TrialConfig
from lightning_ad.data.datamodule import AnomalyDataModule
from lightning_ad.data.resolve import ResolvedCategory, resolve_category
from lightning_ad.errors import LightningADError
from lightning_ad.models import scoring
from lightning_ad.models.module import AnomalyModule
from lightning_ad.packaging.mlflow_model import log_detector

EARLY_STOPPING_PATIENCE = 3


@dataclass(frozen=True)
class TrialResult:
    run_id: str
    metrics: dict[str, float]
    seconds: float
    val_loss: float | None = None
    """The best validation loss (what model choice and tuning look at); None for head none."""


def run_trial(
    config: TrialConfig,
    tracking_uri: str | None = None,
    experiment: str = tracking.DEFAULT_EXPERIMENT,
    tags: dict[str, str] | None = None,
    callbacks: list[pl.Callback] | None = None,
    progress_bar: bool | None = None,
) -> TrialResult:
    """Train (unless ``head`` is ``none``) and test one model; log everything to one MLflow run.

    Args:
        config: the trial's settings; each part goes whole to the object that uses it.
        tracking_uri: see :func:`lightning_ad.tracking.resolve_tracking_uri`.
        experiment: the MLflow experiment, created if missing.
        tags: extra run tags (a sweep passes ``mlflow.parentRunId`` and its trial number).
        callbacks: extra Lightning callbacks (a sweep passes its pruning callback).
        progress_bar: Lightning's bar; default on when stderr is a terminal.

    Returns:
        The run's id, its metrics (``test/*``, ``val/*``), the trial's seconds and its best
        validation loss.

    Raises:
        LightningADError: data, weights or a store that cannot be used (named, with what to
            do), a NaN loss, or a full disk; the run is marked FAILED.
        KeyboardInterrupt: Ctrl-C or SIGTERM; the run is marked KILLED.
    """
    started = time.perf_counter()
    uri = tracking.resolve_tracking_uri(tracking_uri)
    tracking.ensure_reachable(uri)
    data = resolve_category(config.category, config.data_root, config.data_dir)
    pl.seed_everything(config.seed, workers=True, verbose=False)
    datamodule = AnomalyDataModule(data.root, config.data)
    module = AnomalyModule(config.net, config.optimizer, config.scoring)
    tracking.ensure_experiment(experiment, uri)
    logger = TrialLogger(
        experiment_name=experiment,
        tracking_uri=uri,
        run_name=f"{config.category}-{config.backbone}-{config.head}-{config.classes.label}"
        f"-s{config.seed}",
        tags={"dataset": data.dataset, **(tags or {})},
    )
    try:
        with tracking.run_status(logger.experiment, logger.run_id):
            logger.log_hyperparams(_params(config, data, module))
            scores, best_loss = _fit_and_test(
                config, datamodule, module, logger, callbacks, progress_bar
            )
            seconds = time.perf_counter() - started
            logger.experiment.log_metric(logger.run_id, "trial_seconds", seconds)
            _log_test_scores(logger, datamodule, scores)
            if config.log_model:
                example = datamodule.val_good_set.images[0]  # a held-out normal image
                log_detector(logger.experiment, logger.run_id, module.detector, example)
            if config.artifacts == "full":
                _log_artifacts(logger, module, datamodule, scores, config)
    except OSError as err:
        if err.errno == errno.ENOSPC:
            raise LightningADError(
                f"disk full while writing {err.filename or 'a file'} for run {logger.run_id} "
                "(marked FAILED); free space, or set artifacts: minimal (and log_model: false: "
                "no detector to register), and rerun: a sweep retries it"
            ) from err
        raise
    return TrialResult(logger.run_id, dict(scores.metrics), seconds, best_loss)


class TrialLogger(MLFlowLogger):
    """Lightning's MLflow logger, except that the run's status is left to ``run_trial``:
    Lightning would mark it FINISHED at the end of ``fit``, before the test, so a crash in
    between would leave a "finished" run without test metrics."""

    def finalize(self, status: str = "success") -> None:
        """Nothing to do: ``tracking.run_status`` ends the run after its test and artifacts."""


def _fit_and_test(
    config: TrialConfig,
    datamodule: AnomalyDataModule,
    module: AnomalyModule,
    logger: TrialLogger,
    callbacks: list[pl.Callback] | None,
    progress_bar: bool | None,
):
    """Training (unless frozen), then the test split scored with the best checkpoint (lowest
    val/loss); returns the test scores and that val/loss (None when nothing was trained)."""
    with tempfile.TemporaryDirectory(prefix="lightning_ad-ckpt-") as checkpoints:
        trainer = _trainer(
            config.training, logger, Path(checkpoints), callbacks or [], progress_bar
        )
        best, best_loss = None, None
        if module.net.trains:
            _interruptible(trainer, lambda: trainer.fit(module, datamodule=datamodule))
            # The optimizer steps taken: equal for class2 and class3 trials of one seed.
            logger.experiment.log_metric(logger.run_id, "trainer/global_step", trainer.global_step)
            best = trainer.checkpoint_callback.best_model_path or None
            best_score = trainer.checkpoint_callback.best_model_score
            best_loss = float(best_score) if best_score is not None else None
        _interruptible(
            trainer,
            lambda: trainer.test(
                module,
                datamodule=datamodule,
                ckpt_path=best,
                verbose=False,
                weights_only=True,  # our own checkpoint, still loaded as tensors only
            ),
        )
    return module.test_scores, best_loss


def _interruptible(trainer: pl.Trainer, call: Callable[[], object]) -> None:
    """Run a Trainer call, keeping Ctrl-C a KeyboardInterrupt.

    On Ctrl-C Lightning shuts down gracefully, ignores SIGINT from then on, and calls
    ``sys.exit(1)``. Inside a sweep that SystemExit would slip past Optuna (which records
    exceptions and interrupts, not exits) and leave the trial RUNNING; turned back into an
    interrupt, the trial is recorded as failed and the MLflow run as KILLED.
    """
    try:
        call()
    except SystemExit as exit_:
        if not trainer.interrupted:
            raise
        signal.signal(signal.SIGINT, signal.default_int_handler)
        raise KeyboardInterrupt from exit_


def _trainer(
    config: TrainingConfig,
    logger: MLFlowLogger,
    checkpoints: Path,
    extra: list[pl.Callback],
    progress_bar: bool | None,
) -> pl.Trainer:
    callbacks: list[pl.Callback] = [
        # Model choice and early stopping look at the validation twin task only, never test AUROC.
        ModelCheckpoint(dirpath=checkpoints, monitor="val/loss", mode="min", save_top_k=1),
        EarlyStopping(monitor="val/loss", mode="min", patience=EARLY_STOPPING_PATIENCE),
        *extra,
    ]
    if config.swa:
        callbacks.append(StochasticWeightAveraging(swa_lrs=config.swa_lr, swa_epoch_start=0.5))
    return pl.Trainer(
        max_epochs=config.epochs,
        max_time={"minutes": config.max_time_minutes} if config.max_time_minutes else None,
        accelerator="auto",
        devices=1,
        logger=logger,
        callbacks=callbacks,
        deterministic="warn",
        enable_progress_bar=sys.stderr.isatty() if progress_bar is None else progress_bar,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        log_every_n_steps=10,
    )


def _params(
    config: TrialConfig, data: ResolvedCategory, module: AnomalyModule
) -> dict[str, object]:
    return {
        **config.params(),
        "dataset": data.dataset,
        "data_root": str(data.root),
        "pretrained_used": module.net.backbone.pretrained_used,
        "torch_version": torch.__version__,
        "lightning_version": pl.__version__,
        **{f"{name}_version": version for name, version in NUMERIC_PACKAGES.items()},
        "git_commit": GIT_COMMIT,
    }


def _numeric_packages() -> dict[str, str]:
    """The versions of the packages besides torch whose arithmetic a trial's numbers depend
    on (OpenCV resizes and warps the twins, numpy and scikit-learn score): a trial reproduces
    only where they match, so each run records them."""
    import cv2
    import sklearn
    import torchvision

    return {
        "opencv": cv2.__version__,
        "numpy": np.__version__,
        "scikit_learn": sklearn.__version__,
        "torchvision": torchvision.__version__,
    }


NUMERIC_PACKAGES = _numeric_packages()


def _git_commit() -> str:
    """The commit of the code this process imported, ``-dirty`` when tracked files differed."""
    try:
        out = subprocess.run(
            ["git", "describe", "--always", "--dirty", "--abbrev=7"],
            capture_output=True,
            text=True,
            timeout=5,
            cwd=Path(__file__).parent,
        )
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return out.stdout.strip() or "unknown"


GIT_COMMIT = _git_commit()
"""Read once, at import: a commit made while a long sweep runs must not relabel the code it
already runs."""


def _log_test_scores(logger: TrialLogger, datamodule: AnomalyDataModule, scores) -> None:
    """One row per test image: its path, defect type, label and the score of every scorer."""
    import pandas as pd

    table = pd.DataFrame(
        {
            "image": datamodule.test_paths,
            "defect": [scores.defect_names[d] for d in scores.defects],
            "label": scores.labels,
            **scores.scores,
        }
    )
    with tempfile.TemporaryDirectory(prefix="lightning_ad-scores-") as tmp:
        artifact = Path(tracking.SCORES_ARTIFACT)
        table.to_csv(Path(tmp) / artifact.name, index=False)
        logger.experiment.log_artifact(
            logger.run_id, str(Path(tmp) / artifact.name), artifact_path=str(artifact.parent)
        )


def _log_artifacts(
    logger: TrialLogger, module: AnomalyModule, datamodule: AnomalyDataModule, scores, config
) -> None:
    client, run_id = logger.experiment, logger.run_id
    test = datamodule.test_set
    images, masks = np.asarray(test.images), np.asarray(test.masks)
    sheet = partial(plots.map_sheet, images, masks, scores.defects, scores.defect_names)
    with tempfile.TemporaryDirectory(prefix="lightning_ad-art-") as tmp:
        folder = Path(tmp)
        paths = [plots.roc_curves(scores.labels, scores.scores, scores.metrics, folder / "roc.png")]
        for name, values in scores.scores.items():
            paths.append(
                plots.score_histograms(
                    values, scores.defects, scores.defect_names, name, folder / f"hist_{name}.png"
                )
            )
        # One colour scale for the whole test split: a good image's map should look calm.
        low, high = scores.maps.min(), scores.maps.max()
        served = (scores.maps - low) / max(high - low, 1e-12)
        scorer = config.scoring.scorer
        own = scorer != "patch" and scoring.SCORERS[scorer].grid is not None
        title = f"{scorer} map" if own else "PatchCore map"
        paths.append(sheet({title: served}, folder / "anomaly_maps.png"))
        if module.net.trains:
            maps = explain.gradcam_maps(
                module.net, datamodule.test_dataloader(), range(1, len(config.data.classes))
            )
            pixel_auc = metrics.pixel_auroc(explain.strongest(maps), masks)
            client.log_metric(run_id, "test/pixel_auc_gradcam", pixel_auc)
            scores.metrics["test/pixel_auc_gradcam"] = pixel_auc
            titles = {f"Grad-CAM({config.data.classes.names[c]})": maps[c] for c in maps}
            paths.append(sheet(titles, folder / "gradcam.png"))
        for path in paths:
            client.log_artifact(run_id, str(path), artifact_path="plots")
