"""``AnomalyModule``: Lightning hooks around ``AnomalyNet``: the twin task in training and
validation, every scorer and its AUROC on the test split."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np
import pytorch_lightning as pl
import torch
import torch.nn.functional as F

from lightning_ad import metrics
from lightning_ad.data.datamodule import LabelledBatch
from lightning_ad.errors import LightningADError
from lightning_ad.models import scoring
from lightning_ad.models.config import NetConfig, OptimizerConfig, ScoringConfig
from lightning_ad.models.detector import Detector, DetectorSpec, Threshold, anomaly_maps
from lightning_ad.models.net import AnomalyNet
from lightning_ad.models.patch_head import patch_loss

TwinBatch = tuple[torch.Tensor, ...]
"""A training or validation batch: uint8 images and class targets, and with a patch head the
twins' masks (B, H, W)."""


@dataclass
class TestScores:
    """What the test epoch produced, for the artifacts written after ``trainer.test``."""

    labels: np.ndarray
    defects: np.ndarray
    defect_names: tuple[str, ...]
    scores: dict[str, np.ndarray] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    """Every logged test metric: the test split's (``test/*``) and any shifted split's."""
    maps: np.ndarray | None = None
    """The anomaly maps (N, S, S) the detector serves: its scorer's own (``patch``,
    ``twinseg``, ``patch-twinseg``), else PatchCore's."""


class AnomalyModule(pl.LightningModule):
    """Trains :class:`~lightning_ad.models.net.AnomalyNet` to tell normal images from their
    twins, and scores the test split with every scorer of :mod:`lightning_ad.models.scoring` that
    applies (image AUROC overall and per defect type), and PatchCore's anomaly maps against the
    masks (pixel AUROC and AUPRO, overall and per defect type), and the patch head's maps too
    where the network has one.

    Args:
        net: the network (:class:`~lightning_ad.models.config.NetConfig`).
        optimizer: its training (:class:`~lightning_ad.models.config.OptimizerConfig`).
        scoring: the test split's scoring and the detector's threshold
            (:class:`~lightning_ad.models.config.ScoringConfig`); its scorer is logged again as
            ``test/auc``.
        channels_last: see :class:`~lightning_ad.models.net.AnomalyNet`.

    The DataModule hands it the train split's normal images (the scorers' reference), the
    validation slice's (the threshold's) and whether the images are grey (the detector's
    input).
    """

    def __init__(
        self,
        net: NetConfig,
        optimizer: OptimizerConfig,
        scoring: ScoringConfig,
        channels_last: bool = True,
    ) -> None:
        super().__init__()
        self.net = AnomalyNet(net, channels_last)
        self.optimization, self.scoring = optimizer, scoring
        self.test_scores: TestScores | None = None
        self._test_batches: list[dict[str, torch.Tensor]] = []
        # Fitted when the test starts; a plain object, outside the module tree, so that its
        # frozen backbone (for the fused score) is never trained or checkpointed.
        self.detector: Detector | None = None

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 images -> pooled embeddings (B, D)."""
        return self.net(images)

    # ---- the self-supervised task -----------------------------------------------------------

    def _shared_step(self, batch: TwinBatch, stage: str) -> torch.Tensor:
        images, targets, masks = batch if len(batch) == 3 else (*batch, None)
        if self.net.patch_head is None:
            embeddings, losses = self(images), {}
        elif masks is None:
            raise LightningADError(
                "the patch head learns from the twins' masks, and these batches have none: "
                "build the data with DataConfig(crops=True) (TrialConfig does so when "
                "patch_head_weight > 0)"
            )
        else:
            embeddings, patches = self.net.embed(images)
            losses = {"patch_loss": patch_loss(self.net.patch_head(patches), masks)}
        losses["class_loss"] = F.cross_entropy(self.net.head(embeddings, targets), targets)
        loss = losses["class_loss"] + self.optimization.patch_head_weight * losses.get(
            "patch_loss", 0.0
        )
        if not torch.isfinite(loss):
            # Fail the trial loudly: a NaN model would still "score" and pollute the tables.
            raise LightningADError(
                f"{stage} loss is {loss.item()} at epoch {self.current_epoch}; "
                "lower --lr or check the data"
            )
        accuracy = (self.net.head(embeddings).argmax(dim=1) == targets).float().mean()
        logged = {"loss": loss, "acc": accuracy}
        if "patch_loss" in losses:
            logged |= losses
        for name, value in logged.items():
            self.log(
                f"{stage}/{name}",
                value,
                on_step=False,
                on_epoch=True,
                prog_bar=name in ("loss", "acc"),
                batch_size=len(images),
            )
        return loss

    def on_train_epoch_start(self) -> None:
        # Lightning leaves every layer in the mode it finds it in (it calls no train() before
        # fitting, and restores the modes it captured around validation): ask the net for its
        # training mode, which keeps BatchNorm on its pretrained statistics when bn_mode says so.
        self.net.train()

    def training_step(self, batch: TwinBatch, batch_idx: int) -> torch.Tensor:
        return self._shared_step(batch, "train")

    def validation_step(self, batch: TwinBatch, batch_idx: int) -> None:
        self._shared_step(batch, "val")

    def configure_optimizers(self):
        settings = self.optimization
        groups = [
            {"params": self.net.backbone.parameters(), "lr": settings.backbone_lr},
            {"params": self.net.head.parameters()},
        ]
        if self.net.patch_head is not None:
            groups.append(
                {"params": self.net.patch_head.parameters(), "lr": settings.patch_head_lr}
            )
        optimizer = torch.optim.Adam(groups, lr=settings.lr, amsgrad=settings.amsgrad)
        if not settings.cosine_schedule:
            return optimizer
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(
            optimizer, T_max=self.trainer.max_epochs
        )
        return {"optimizer": optimizer, "lr_scheduler": scheduler}

    # ---- scoring on the test split ----------------------------------------------------------

    def on_test_epoch_start(self) -> None:
        datamodule = self.trainer.datamodule
        spec = DetectorSpec.of(self.net.config, self.scoring, grey=datamodule.grey)
        self.detector = Detector.fit(
            spec, self.net, datamodule.train_good_dataloader(), self.scoring.seed
        )
        self._test_batches = []

    def test_step(self, batch: LabelledBatch, batch_idx: int) -> None:
        self._test_batches.append(self._gather(batch))

    def _gather(self, batch: LabelledBatch) -> dict[str, torch.Tensor]:
        """The detector's features of a labelled batch, with its labels, defects and masks."""
        out = {**self.detector.features(batch.image), "label": batch.label}
        out |= {"defect": batch.defect, "mask": batch.mask}
        return {k: v.detach().float().cpu() for k, v in out.items()}

    def on_test_epoch_end(self) -> None:
        outputs = _concatenated(self._test_batches)
        self._test_batches = []
        datamodule = self.trainer.datamodule
        # The threshold first: with a patch head it also sets the scale patch-twinseg reads.
        threshold = self.detector.calibrate(
            datamodule.val_good_dataloader(), self.scoring.false_alarm_rate
        )
        split = self._score_split(outputs, datamodule.defect_names, threshold)
        results = dict(split.metrics)
        for name, loader in datamodule.shift_dataloaders().items():
            gathered = _concatenated([self._gather(batch) for batch in loader])
            shifted = self._score_split(gathered, datamodule.defect_names, threshold)
            results |= {
                metrics.shifted_metric(k, name): v
                for k, v in shifted.metrics.items()
                if k.startswith("test/")
            }
        self.log_dict(results)
        self.test_scores = dataclasses.replace(split, metrics=results)

    def _score_split(
        self, outputs: dict[str, torch.Tensor], names: tuple[str, ...], threshold: Threshold
    ) -> TestScores:
        """Every scorer's image AUROC, the maps' pixel AUROC and AUPRO, and the threshold's
        rates on one labelled split, as ``test/*`` metrics."""
        labels, defects = outputs.pop("label").int().numpy(), outputs.pop("defect").int().numpy()
        masks = outputs.pop("mask").bool().numpy()
        features = self.detector.scoring_features({k: v.numpy() for k, v in outputs.items()})
        scores = scoring.score_all(features, trained=self.net.trains)
        results = {}
        for name, values in scores.items():
            results[f"test/auc_{name}"] = metrics.auroc(labels, values)
            for defect, value in metrics.auroc_per_defect(defects, values, names).items():
                results[f"test/auc_{name}/{defect}"] = value
        maps = {}
        for name in scores:
            if (grid := scoring.SCORERS[name].grid) is not None:
                maps[name] = anomaly_maps(grid(features), masks.shape[-1])
                results |= pixel_metrics(maps[name], masks, defects, names, scorer=name)
        served = self.scoring.scorer if self.scoring.scorer in maps else "patch"
        results |= main_metrics(results, self.scoring.scorer, served)
        results |= threshold_metrics(threshold, scores[self.scoring.scorer], labels)
        return TestScores(labels, defects, names, scores, results, maps[served])


def _concatenated(batches: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    return {k: torch.cat([b[k] for b in batches]) for k in batches[0]}


def threshold_metrics(
    threshold: Threshold, scores: np.ndarray, labels: np.ndarray
) -> dict[str, float]:
    """The detector's threshold, set on the validation slice's normal images, and what it does
    on the test split: the share of good images flagged, and of defective ones caught."""
    flagged = scores > threshold.value
    return {
        "val/threshold": threshold.value,
        "val/false_alarm_rate": threshold.false_alarms / threshold.normals,
        "test/false_alarm_rate": float(flagged[labels == 0].mean()),
        "test/detection_rate": float(flagged[labels == 1].mean()),
    }


def main_metrics(results: dict[str, float], scorer: str, served: str) -> dict[str, float]:
    """The trial's own metrics under their plain names, overall and per defect type:
    ``scorer``'s image AUROC as ``test/auc``, and the pixel AUROC and AUPRO of the maps the
    detector serves (``served``'s: the scorer's own, or PatchCore's for a scorer without maps)
    as ``test/pixel_auc`` and ``test/aupro``."""
    sources = {
        "test/auc": f"test/auc_{scorer}",
        "test/pixel_auc": f"test/pixel_auc_{served}",
        "test/aupro": f"test/aupro_{served}",
    }
    return {
        plain + key.removeprefix(source): value
        for plain, source in sources.items()
        for key, value in results.items()
        if key == source or key.startswith(f"{source}/")
    }


def pixel_metrics(
    maps: np.ndarray,
    masks: np.ndarray,
    defects: np.ndarray,
    names: tuple[str, ...],
    scorer: str,
) -> dict[str, float]:
    """``test/pixel_auc_<scorer>`` and ``test/aupro_<scorer>`` of ``scorer``'s anomaly maps,
    overall and per defect type."""
    suffix = f"_{scorer}"
    results = {
        f"test/pixel_auc{suffix}": metrics.pixel_auroc(maps, masks),
        f"test/aupro{suffix}": metrics.aupro(maps, masks),
    }
    for defect, keep in metrics.per_defect(defects, names).items():
        results[f"test/pixel_auc{suffix}/{defect}"] = metrics.pixel_auroc(maps[keep], masks[keep])
        results[f"test/aupro{suffix}/{defect}"] = metrics.aupro(maps[keep], masks[keep])
    return results
