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
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import EarlyStopping, ModelCheckpoint, StochasticWeightAveraging
from pytorch_lightning.loggers import MLFlowLogger

from lightning_ad import explain, plots, tracking
from lightning_ad.config import TrialConfig
from lightning_ad.data.datamodule import AnomalyDataModule
from lightning_ad.data.resolve import ResolvedCategory, resolve_category
from lightning_ad.errors import LightningADError
from lightning_ad.models.module import AnomalyModule

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
        tracking_uri: see :func:`lightning_ad.tracking.resolve_tracking_uri`.
        experiment: the MLflow experiment, created if missing.
        tags: extra run tags (a sweep passes ``mlflow.parentRunId`` and its trial number).
        callbacks: extra Lightning callbacks (a sweep passes its pruning callback).
        progress_bar: Lightning's bar; default on when stderr is a terminal.
    """
    started = time.perf_counter()
    uri = tracking.resolve_tracking_uri(tracking_uri)
    tracking.ensure_reachable(uri)
    data = resolve_category(config.category, config.data_root, config.data_dir)
    pl.seed_everything(config.seed, workers=True, verbose=False)
    datamodule = AnomalyDataModule(
        data.root,
        classes=config.classes,
        twin_params=config.twin_params,
        image_size=config.image_size,
        batch_size=config.batch_size,
        val_fraction=config.val_fraction,
        mask_mode=config.mask_mode,
        seed=config.seed,
    )
    module = AnomalyModule(
        backbone=config.backbone,
        head=config.head,
        n_classes=len(config.classes),
        head_params=config.head_params,
        pretrained=config.pretrained,
        lr=config.lr,
        amsgrad=config.amsgrad,
        cosine_schedule=config.cosine_schedule,
        main_score=config.score,
    )
    tracking.ensure_experiment(experiment, uri)
    logger = MLFlowLogger(
        experiment_name=experiment,
        tracking_uri=uri,
        run_name=f"{config.category}-{config.backbone}-{config.head}-{config.classes_label}-s{config.seed}",
        tags={"dataset": data.dataset, **(tags or {})},
    )
    client, run_id = logger.experiment, logger.run_id
    try:
        logger.log_hyperparams(_params(config, data, module))
        with tempfile.TemporaryDirectory(prefix="lightning_ad-ckpt-") as checkpoints:
            trainer = _trainer(config, logger, Path(checkpoints), callbacks or [], progress_bar)
            if module.trains:
                _interruptible(trainer, lambda: trainer.fit(module, datamodule=datamodule))
            best = trainer.checkpoint_callback.best_model_path if module.trains else ""
            best_score = trainer.checkpoint_callback.best_model_score if module.trains else None
            _interruptible(
                trainer,
                lambda: trainer.test(
                    module,
                    datamodule=datamodule,
                    ckpt_path=best or None,
                    verbose=False,
                    weights_only=True,  # our own checkpoint, still loaded as tensors only
                ),
            )
        scores = module.test_scores
        seconds = time.perf_counter() - started
        client.log_metric(run_id, "trial_seconds", seconds)
        if config.artifacts == "full":
            _log_artifacts(client, run_id, module, datamodule, scores, config)
        client.set_terminated(run_id, "FINISHED")
    except BaseException as err:
        client.set_terminated(run_id, "KILLED" if isinstance(err, KeyboardInterrupt) else "FAILED")
        if isinstance(err, OSError) and err.errno == errno.ENOSPC:
            raise LightningADError(
                f"disk full while writing {err.filename or 'a file'} for run {run_id} (marked "
                "FAILED); free space, or set artifacts: minimal, and rerun: a sweep retries it"
            ) from err
        raise
    val_loss = float(best_score) if best_score is not None else None
    return TrialResult(run_id, dict(scores.metrics), seconds, val_loss)


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
    config: TrialConfig,
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
        callbacks.append(StochasticWeightAveraging(swa_lrs=config.lr, swa_epoch_start=0.5))
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
        "pretrained_used": module.backbone.pretrained_used,
        "torch_version": torch.__version__,
        "lightning_version": pl.__version__,
        "git_commit": _git_commit(),
    }


def _git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            cwd=Path(__file__).parent,
        )
    except OSError:
        return "unknown"
    return out.stdout.strip() or "unknown"


def _log_artifacts(
    client, run_id: str, module: AnomalyModule, datamodule: AnomalyDataModule, scores, config
) -> None:
    with tempfile.TemporaryDirectory(prefix="lightning_ad-art-") as tmp:
        folder = Path(tmp)
        paths = [plots.roc_curves(scores.labels, scores.scores, scores.metrics, folder / "roc.png")]
        for name, values in scores.scores.items():
            paths.append(
                plots.score_histograms(
                    values, scores.defects, scores.defect_names, name, folder / f"hist_{name}.png"
                )
            )
        if module.trains:
            test = datamodule.test_set
            maps = explain.gradcam_maps(
                module, datamodule.test_dataloader(), range(1, len(config.classes))
            )
            pixel_auc = explain.pixel_auroc(maps, np.asarray(test.masks))
            client.log_metric(run_id, "test/pixel_auc_gradcam", pixel_auc)
            scores.metrics["test/pixel_auc_gradcam"] = pixel_auc
            images = np.stack([test.images[i].transpose(2, 0, 1) for i in range(len(test))])
            paths.append(
                explain.gradcam_sheet(
                    images,
                    np.asarray(test.masks),
                    scores.defects,
                    scores.defect_names,
                    maps,
                    config.classes,
                    folder / "gradcam.png",
                )
            )
        for path in paths:
            client.log_artifact(run_id, str(path), artifact_path="plots")
