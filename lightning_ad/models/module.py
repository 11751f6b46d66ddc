"""``AnomalyModule``: backbone + metric head, trained on the twin task, scored on the test split."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from lightning_ad import scoring
from lightning_ad.data.datamodule import LabelledBatch
from lightning_ad.errors import LightningADError
from lightning_ad.models.backbones import Backbone, build_backbone
from lightning_ad.models.heads import NO_HEAD, build_head

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class TestScores:
    """What the test epoch produced, for plots and Grad-CAM after ``trainer.test``."""

    labels: np.ndarray
    defects: np.ndarray
    defect_names: tuple[str, ...]
    scores: dict[str, np.ndarray] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)


class Classifier(nn.Module):
    """Normalised float images -> logits without margin: the view Grad-CAM needs."""

    def __init__(self, backbone: Backbone, head: nn.Module) -> None:
        super().__init__()
        self.backbone, self.head = backbone, head

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(images))


class AnomalyModule(pl.LightningModule):
    """Backbone + metric-learning head, trained to tell normal images from their twins.

    Args:
        backbone: a name from :data:`lightning_ad.models.backbones.BACKBONES`.
        head: a name from :data:`lightning_ad.models.heads.HEADS`, or ``none`` for the frozen
            baseline (nothing is trained; the backbone's embeddings are scored as they are).
        n_classes: number of twin classes (``normal`` included).
        head_params: the head's paper parameters (alpha, s, m, dynamic).
        pretrained: ``auto`` | ``true`` | ``false`` | a state-dict path.
        lr, amsgrad: Adam's (the article's author: 1e-4 with amsgrad).
        cosine_schedule: anneal the learning rate to 0 over the run.
        main_score: the scorer logged again as ``test/auc``: lof, knn, prob or fused.
        channels_last: keep weights and images in NHWC. oneDNN's CPU convolutions and cuDNN's
            tensor-core ones are faster that way (``make bench`` B8 measures it).
    """

    def __init__(
        self,
        backbone: str = "efficientnet_lite0",
        head: str = "arcface",
        n_classes: int = 3,
        head_params: dict | None = None,
        pretrained: str | Path = "auto",
        lr: float = 1e-4,
        amsgrad: bool = True,
        cosine_schedule: bool = False,
        main_score: str = "knn",
        channels_last: bool = True,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(logger=False)  # train.py logs one flat, complete set itself
        if main_score not in scoring.SCORERS:
            raise LightningADError(
                f"unknown score '{main_score}'; valid: {', '.join(scoring.SCORERS)}"
            )
        if head == NO_HEAD and main_score in ("prob", "fused"):
            main_score = "knn"  # the frozen baseline has no classifier and nothing to fuse
        self.main_score = main_score
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.backbone = build_backbone(backbone, pretrained).to(memory_format=self.memory_format)
        self.head = (
            None
            if head == NO_HEAD
            else build_head(head, self.backbone.out_features, n_classes, **(head_params or {}))
        )
        self.register_buffer("pixel_mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1) * 255)
        self.register_buffer("pixel_std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1) * 255)
        self.test_scores: TestScores | None = None
        self._test_batches: list[dict[str, torch.Tensor]] = []
        self._reference: dict[str, np.ndarray] = {}
        # The untrained backbone for the fused score, held in a plain dict so that it stays
        # outside the module tree: never trained, never checkpointed.
        self._frozen: dict[str, Backbone] = {}

    @property
    def trains(self) -> bool:
        return self.head is not None

    def normalise(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (B, 3, H, W) -> float, ImageNet-normalised, in the module's memory format."""
        pixels = (images.float() - self.pixel_mean) / self.pixel_std
        return pixels.contiguous(memory_format=self.memory_format)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 images -> pooled embeddings (B, D)."""
        return self.backbone(self.normalise(images))

    def classifier(self) -> Classifier:
        if self.head is None:
            raise LightningADError("the frozen baseline (head none) has no classifier")
        return Classifier(self.backbone, self.head)

    # ---- the self-supervised task -----------------------------------------------------------

    def _shared_step(self, batch: tuple[torch.Tensor, torch.Tensor], stage: str) -> torch.Tensor:
        images, targets = batch
        embeddings = self(images)
        loss = F.cross_entropy(self.head(embeddings, targets), targets)
        if not torch.isfinite(loss):
            # Fail the trial loudly: a NaN model would still "score" and pollute the tables.
            raise LightningADError(
                f"{stage} loss is {loss.item()} at epoch {self.current_epoch}; "
                "lower --lr or check the data"
            )
        accuracy = (self.head(embeddings).argmax(dim=1) == targets).float().mean()
        self.log(
            f"{stage}/loss",
            loss,
            on_step=False,
            on_epoch=True,
            prog_bar=True,
            batch_size=len(images),
        )
        self.log(
            f"{stage}/acc",
            accuracy,
            on_step=False,
            on_epoch=True,
            prog_bar=True,
            batch_size=len(images),
        )
        return loss

    def training_step(
        self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int
    ) -> torch.Tensor:
        return self._shared_step(batch, "train")

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._shared_step(batch, "val")

    def configure_optimizers(self):
        optimizer = torch.optim.Adam(
            self.parameters(), lr=self.hparams.lr, amsgrad=self.hparams.amsgrad
        )
        if not self.hparams.cosine_schedule:
            return optimizer
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(
            optimizer, T_max=self.trainer.max_epochs
        )
        return {"optimizer": optimizer, "lr_scheduler": scheduler}

    # ---- scoring on the test split ----------------------------------------------------------

    def on_test_epoch_start(self) -> None:
        good = self.trainer.datamodule.train_good_dataloader()
        self._reference = {"model": _embed(self.backbone, self.normalise, good, self.device)}
        if self.trains:  # the fused score also needs the untrained backbone's view
            frozen = build_backbone(self.hparams.backbone, self.hparams.pretrained)
            frozen = frozen.to(self.device, memory_format=self.memory_format).eval()
            self._frozen["backbone"] = frozen
            self._reference["frozen"] = _embed(frozen, self.normalise, good, self.device)
        self._test_batches = []

    def test_step(self, batch: LabelledBatch, batch_idx: int) -> None:
        pixels = self.normalise(batch.image)
        embeddings = self.backbone(pixels)
        out = {"model": embeddings, "label": batch.label, "defect": batch.defect}
        if self.trains:
            out["p_normal"] = F.softmax(self.head(embeddings), dim=1)[:, 0]
            out["frozen"] = self._frozen["backbone"](pixels)
        self._test_batches.append({k: v.detach().float().cpu() for k, v in out.items()})

    def on_test_epoch_end(self) -> None:
        outputs = {
            k: torch.cat([b[k] for b in self._test_batches]).numpy() for k in self._test_batches[0]
        }
        labels, defects = outputs["label"].astype(int), outputs["defect"].astype(int)
        names = self.trainer.datamodule.defect_names
        scores = {
            "lof": scoring.lof_scores(self._reference["model"], outputs["model"]),
            "knn": scoring.knn_scores(self._reference["model"], outputs["model"]),
        }
        if self.trains:
            scores["prob"] = 1.0 - outputs["p_normal"]
            scores["fused"] = scoring.fused_scores(
                (self._reference["model"], outputs["model"]),
                (self._reference["frozen"], outputs["frozen"]),
            )
        metrics = {}
        for name, values in scores.items():
            metrics[f"test/auc_{name}"] = scoring.auroc(labels, values)
            for defect, value in scoring.auroc_per_defect(defects, values, names).items():
                metrics[f"test/auc_{name}/{defect}"] = value
        metrics["test/auc"] = metrics[f"test/auc_{self.main_score}"]
        self.log_dict(metrics)
        self.test_scores = TestScores(labels, defects, names, scores, metrics)
        self._test_batches, self._reference, self._frozen = [], {}, {}


@torch.no_grad()
def _embed(backbone: nn.Module, normalise, loader: DataLoader, device: torch.device) -> np.ndarray:
    was_training = backbone.training
    backbone.eval()
    chunks = [backbone(normalise(images.to(device))).float().cpu() for images, _ in loader]
    backbone.train(was_training)
    return torch.cat(chunks).numpy()
