from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch

from lightning_ad.data.datamodule import AnomalyDataModule
from lightning_ad.models.module import AnomalyModule


def _fit_and_test(
    root: Path,
    head: str,
    module: AnomalyModule | None = None,
    test_batch_size: int = 8,
) -> AnomalyModule:
    """One epoch of training (unless the module is already trained, or frozen), then the test
    split scored, as ``run_trial`` does it."""
    pl.seed_everything(0, verbose=False)
    dm = AnomalyDataModule(root / "screw", classes=3, image_size=32, batch_size=8, seed=0)
    trainer = pl.Trainer(
        max_epochs=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    if module is None:
        module = AnomalyModule(backbone="mobilenet_v2", head=head, n_classes=3, pretrained="false")
        if module.net.trains:
            trainer.fit(module, datamodule=dm)
    dm.batch_size = test_batch_size
    trainer.test(module, datamodule=dm, verbose=False)
    return module


def test_trains_and_scores_every_way(synthetic_root: Path) -> None:
    module = _fit_and_test(synthetic_root, "arcface")
    metrics = module.test_scores.metrics
    for scorer in ("lof", "knn", "prob", "fused"):
        assert 0.0 <= metrics[f"test/auc_{scorer}"] <= 1.0
    defects = ["manipulated_front", "scratch_head", "scratch_neck", "thread_side", "thread_top"]
    assert all(f"test/auc_lof/{d}" in metrics for d in defects)
    assert metrics["test/auc"] == metrics["test/auc_knn"]
    scores = module.test_scores
    assert len(scores.labels) == len(scores.scores["lof"]) == 10 + 5 * 10


def test_the_frozen_baseline_is_only_scored_and_its_weights_stay_as_built(
    synthetic_root: Path,
) -> None:
    pl.seed_everything(0, verbose=False)
    module = AnomalyModule(backbone="mobilenet_v2", head="none", pretrained="false")
    built = {k: v.clone() for k, v in module.state_dict().items()}
    scored = _fit_and_test(synthetic_root, "none", module=module)
    assert not scored.net.trains and scored.net.head is None
    assert {"test/auc_lof", "test/auc_knn"} <= set(scored.test_scores.metrics)
    assert "test/auc_prob" not in scored.test_scores.metrics  # no classifier to ask
    after = scored.state_dict()
    assert after.keys() == built.keys()
    assert all(torch.equal(after[k], built[k]) for k in built)  # BatchNorm statistics too


def test_test_scores_do_not_depend_on_the_batch_size(synthetic_root: Path) -> None:
    """Scoring runs BatchNorm on its stored statistics (eval mode): were it on batch
    statistics, an image's score would change with the images batched beside it."""
    module = _fit_and_test(synthetic_root, "arcface")
    by_eight = module.test_scores.scores["knn"].copy()
    module = _fit_and_test(synthetic_root, "arcface", module=module, test_batch_size=3)
    np.testing.assert_allclose(module.test_scores.scores["knn"], by_eight, atol=1e-5)
