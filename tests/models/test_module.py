from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import torch

from lightning_ad.data.datamodule import AnomalyDataModule
from lightning_ad.models.module import AnomalyModule


def _fit_and_test(root: Path, head: str, epochs: int = 1) -> AnomalyModule:
    pl.seed_everything(0, verbose=False)
    dm = AnomalyDataModule(root / "screw", classes=3, image_size=32, batch_size=8, seed=0)
    module = AnomalyModule(backbone="mobilenet_v2", head=head, n_classes=3, pretrained="false")
    trainer = pl.Trainer(
        max_epochs=epochs,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    if module.trains:
        trainer.fit(module, datamodule=dm)
    trainer.test(module, datamodule=dm, verbose=False)
    return module


def test_normalises_uint8_like_imagenet() -> None:
    module = AnomalyModule(backbone="resnet18", head="arcface", pretrained="false")
    grey = torch.full((1, 3, 4, 4), 124, dtype=torch.uint8)
    pixels = module.normalise(grey)
    assert pixels.dtype == torch.float32
    assert torch.allclose(
        pixels[0, :, 0, 0],
        torch.tensor(
            [(124 / 255 - 0.485) / 0.229, (124 / 255 - 0.456) / 0.224, (124 / 255 - 0.406) / 0.225]
        ),
        atol=1e-4,
    )


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


def test_frozen_baseline_trains_nothing(synthetic_root: Path) -> None:
    before = {
        k: v.clone()
        for k, v in AnomalyModule(backbone="mobilenet_v2", head="none", pretrained="false")
        .state_dict()
        .items()
    }
    module = _fit_and_test(synthetic_root, "none")
    assert set(k.split("/")[0] + "/" + k.split("/")[1] for k in module.test_scores.metrics) >= {
        "test/auc_lof",
        "test/auc_knn",
    }
    assert "test/auc_prob" not in module.test_scores.metrics
    assert module.head is None and before.keys() == module.state_dict().keys()


def test_scoring_uses_eval_mode_batchnorm(synthetic_root: Path) -> None:
    """Test embeddings come from the stored BatchNorm statistics, not batch statistics."""
    module = _fit_and_test(synthetic_root, "arcface")
    module.eval()
    images = torch.randint(0, 255, (4, 3, 32, 32), dtype=torch.uint8)
    with torch.no_grad():
        alone = module(images[:1])
        together = module(images)[:1]
    assert torch.allclose(alone, together, atol=1e-5)
    assert not np.isnan(module.test_scores.metrics["test/auc_knn"])


@pytest.mark.parametrize("score", ["lof", "prob", "fused"])
def test_main_score_is_configurable(score: str) -> None:
    assert (
        AnomalyModule(backbone="mobilenet_v2", pretrained="false", main_score=score).main_score
        == score
    )
