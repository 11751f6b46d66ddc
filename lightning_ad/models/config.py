"""The parts of a trial's settings the model layer reads, each built whole by ``TrialConfig``:
the network (``NetConfig``), its optimisation (``OptimizerConfig``) and the scoring of the test
split (``ScoringConfig``). Plain values, importing no torch; the rules of a named thing (a head's
class count, a scorer's name) live with it and ``TrialConfig.validate`` asks them."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from lightning_ad.errors import LightningADError, unknown
from lightning_ad.grid import NO_HEAD

BN_MODES = ("frozen", "train")
"""``frozen``: BatchNorm layers keep the pretrained backbone's running statistics while the rest
trains (twin batches at 96 px would otherwise pull them towards training-time statistics);
``train``: they follow the training batches (PyTorch's default)."""


@dataclass(frozen=True)
class NetConfig:
    """The network: backbone and metric-learning head.

    Attributes:
        backbone: a name from :data:`lightning_ad.models.backbones.BACKBONES`.
        head: a name from :data:`lightning_ad.models.heads.HEADS`, or ``none`` for the frozen
            baseline (no head: the backbone's embeddings are used as they are).
        n_classes: number of twin classes (``normal`` included).
        head_params: the head's paper parameters (alpha, s, m, dynamic).
        pretrained: ``auto`` | ``true`` | ``false`` | a state-dict path.
        bn_mode: one of :data:`BN_MODES`.
        patch_head: a twin-supervised patch head beside the metric head
            (:mod:`~lightning_ad.models.patch_head`); it needs a trained network.

    Raises:
        LightningADError: an unknown BatchNorm mode; a patch head on the frozen baseline.
    """

    backbone: str
    head: str
    n_classes: int
    head_params: Mapping[str, Any]
    pretrained: str
    bn_mode: str
    patch_head: bool = False

    def __post_init__(self) -> None:
        if self.bn_mode not in BN_MODES:
            raise unknown("bn_mode", self.bn_mode, BN_MODES)
        if self.patch_head and not self.trains:
            raise LightningADError(
                f"a patch head needs a trained network, but head is '{NO_HEAD}' (the frozen "
                "baseline): pick a head or set patch_head_weight to 0"
            )

    @property
    def trains(self) -> bool:
        """False for the frozen baseline: there is nothing to train."""
        return self.head != NO_HEAD


@dataclass(frozen=True)
class OptimizerConfig:
    """Adam's settings (the article's author: 1e-4 with AMSGrad).

    Attributes:
        lr: the head's learning rate.
        backbone_lr: the backbone's own learning rate (None means ``lr``): lower, it keeps
            more of the pretrained features the scorers read.
        amsgrad: Adam's AMSGrad variant.
        cosine_schedule: anneal the learning rate to 0 over the run.
        patch_head_weight: the patch head's loss beside the metric head's (0: no patch head).
        patch_head_lr: the patch head's learning rate: it starts from scratch, where the
            metric head's small rate is sized for a pretrained backbone.

    Raises:
        LightningADError: a learning rate that is not positive; a negative loss weight.
    """

    lr: float
    backbone_lr: float | None
    amsgrad: bool
    cosine_schedule: bool
    patch_head_weight: float = 0.0
    patch_head_lr: float = 1e-3

    def __post_init__(self) -> None:
        for name in ("lr", "backbone_lr", "patch_head_lr"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise LightningADError(f"{name} must be positive, got {value}")
        if self.patch_head_weight < 0:
            raise LightningADError(
                f"patch_head_weight must be 0 (no patch head) or positive, got "
                f"{self.patch_head_weight}"
            )
        if self.backbone_lr is None:
            object.__setattr__(self, "backbone_lr", self.lr)


@dataclass(frozen=True)
class ScoringConfig:
    """How the test split is scored and the detector's threshold set.

    Attributes:
        scorer: the scorer behind ``test/auc`` and the detector's verdicts; one that applies to
            the network (``TrialConfig.scoring`` scores the frozen baseline with the scorer's
            fallback).
        image_size: side of the images the detector scores (``DataConfig.scoring_size``).
        coreset_fraction: share of train/good patches in PatchCore's memory bank.
        false_alarm_rate: the decision threshold's share of held-out normals above it.
        seed: the memory bank's coreset sampling.

    The scorer's name, the fraction and the rate are checked by the modules that own them
    (:mod:`~lightning_ad.models.scoring`, :mod:`~lightning_ad.models.patchcore`,
    :class:`~lightning_ad.models.detector.Threshold`).
    """

    scorer: str
    image_size: int
    coreset_fraction: float
    false_alarm_rate: float
    seed: int
