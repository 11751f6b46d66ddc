from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import torch

from lightning_ad.config import TrialConfig
from lightning_ad.data.datamodule import AnomalyDataModule
from lightning_ad.models.module import AnomalyModule, main_metrics


def _config(**settings) -> TrialConfig:
    """A tiny trial's settings: mobilenet_v2 from scratch on 32-pixel images, batches of 8."""
    defaults = {"backbone": "mobilenet_v2", "pretrained": "false", "image_size": 32}
    return TrialConfig(**(defaults | {"batch_size": 8} | settings))


def _module(**settings) -> AnomalyModule:
    config = _config(**settings)
    return AnomalyModule(config.net, config.optimizer, config.scoring)


def _fit_and_test(
    root: Path,
    head: str,
    module: AnomalyModule | None = None,
    test_batch_size: int = 8,
) -> AnomalyModule:
    """One epoch of training (unless the module is already trained, or frozen), then the test
    split scored, as ``run_trial`` does it."""
    pl.seed_everything(0, verbose=False)
    dm = AnomalyDataModule(root / "screw", _config().data)
    trainer = pl.Trainer(
        max_epochs=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    if module is None:
        module = _module(head=head)
        if module.net.trains:
            trainer.fit(module, datamodule=dm)
    dm.scoring_batch_size = test_batch_size
    trainer.test(module, datamodule=dm, verbose=False)
    return module


def test_trains_and_scores_every_way(synthetic_root: Path) -> None:
    module = _fit_and_test(synthetic_root, "arcface")
    metrics = module.test_scores.metrics
    for scorer in ("lof", "knn", "prob", "patch"):
        assert 0.0 <= metrics[f"test/auc_{scorer}"] <= 1.0
    assert "test/auc_fused" not in metrics  # a second backbone pass, made only for its own trials
    defects = ["manipulated_front", "scratch_head", "scratch_neck", "thread_side", "thread_top"]
    for d in defects:
        assert metrics[f"test/auc/{d}"] == metrics[f"test/auc_knn/{d}"]  # the main scorer's
        assert 0.0 <= metrics[f"test/pixel_auc/{d}"] <= 1.0 and f"test/aupro/{d}" in metrics
        assert f"test/auc_lof/{d}" in metrics
    assert metrics["test/auc"] == metrics["test/auc_knn"]
    assert 0.0 <= metrics["test/pixel_auc"] <= 1.0 and 0.0 <= metrics["test/aupro"] <= 1.0
    scores = module.test_scores
    assert len(scores.labels) == len(scores.scores["lof"]) == 10 + 5 * 10
    assert scores.maps.shape == (len(scores.labels), 32, 32)


def test_the_frozen_baseline_is_only_scored_and_its_weights_stay_as_built(
    synthetic_root: Path,
) -> None:
    pl.seed_everything(0, verbose=False)
    module = _module(head="none")
    built = {k: v.clone() for k, v in module.state_dict().items()}
    scored = _fit_and_test(synthetic_root, "none", module=module)
    assert not scored.net.trains and scored.net.head is None
    assert {"test/auc_lof", "test/auc_knn", "test/auc_patch"} <= set(scored.test_scores.metrics)
    assert "test/auc_prob" not in scored.test_scores.metrics  # no classifier to ask
    after = scored.state_dict()
    assert after.keys() == built.keys()
    assert all(torch.equal(after[k], built[k]) for k in built)  # BatchNorm statistics too


def test_test_scores_do_not_depend_on_the_batch_size(synthetic_root: Path) -> None:
    """Scoring runs BatchNorm on its stored statistics (eval mode): were it on batch
    statistics, an image's score would change with the images batched beside it."""
    module = _fit_and_test(synthetic_root, "arcface")
    by_eight = module.test_scores.scores["knn"].copy()
    patch_by_eight = module.test_scores.scores["patch"].copy()
    module = _fit_and_test(synthetic_root, "arcface", module=module, test_batch_size=3)
    np.testing.assert_allclose(module.test_scores.scores["knn"], by_eight, atol=1e-5)
    np.testing.assert_allclose(module.test_scores.scores["patch"], patch_by_eight, atol=1e-4)


def test_the_backbone_learns_at_its_own_rate() -> None:
    module = _module(head="arcface", lr=1e-3, backbone_lr=1e-5)
    backbone, head = module.configure_optimizers().param_groups
    assert backbone["lr"] == 1e-5 and head["lr"] == 1e-3
    assert {id(p) for p in backbone["params"]} == {id(p) for p in module.net.backbone.parameters()}


@pytest.mark.parametrize(("bn_mode", "moves"), [("frozen", False), ("train", True)])
def test_fit_keeps_the_batchnorm_statistics_only_when_bn_mode_is_frozen(
    synthetic_root: Path, bn_mode: str, moves: bool
) -> None:
    """Through Lightning's own fit loop, which sets no layer's mode itself."""
    pl.seed_everything(0, verbose=False)
    module = _module(head="arcface", bn_mode=bn_mode)
    before = {k: v.clone() for k, v in module.state_dict().items() if "running_mean" in k}
    dm = AnomalyDataModule(synthetic_root / "screw", _config().data)
    pl.Trainer(
        max_epochs=2,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    ).fit(module, datamodule=dm)
    after = module.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before) == moves


def test_the_own_metrics_take_the_plain_names_and_no_prefix_of_another_scorer() -> None:
    """``test/auc`` is the scorer's, ``test/pixel_auc`` and ``test/aupro`` the served maps',
    per defect type too; ``patch-twinseg``'s keys never pass for ``patch``'s."""
    results = {
        "test/auc_patch": 0.9,
        "test/auc_patch/scratch": 0.8,
        "test/auc_patch-twinseg": 0.7,
        "test/auc_knn": 0.6,
        "test/pixel_auc_patch": 0.95,
        "test/aupro_patch": 0.85,
        "test/aupro_patch/scratch": 0.75,
        "test/aupro_patch-twinseg": 0.65,
    }
    assert main_metrics(results, "patch", "patch") == {
        "test/auc": 0.9,
        "test/auc/scratch": 0.8,
        "test/pixel_auc": 0.95,
        "test/aupro": 0.85,
        "test/aupro/scratch": 0.75,
    }
    knn = main_metrics(results, "knn", "patch")  # no maps of its own: it serves PatchCore's
    assert knn["test/auc"] == 0.6 and knn["test/aupro"] == 0.85 and "test/auc/scratch" not in knn
    assert main_metrics(results, "patch-twinseg", "patch-twinseg") == {
        "test/auc": 0.7,
        "test/aupro": 0.65,
    }
