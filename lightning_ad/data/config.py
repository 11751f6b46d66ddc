"""``DataConfig``: the part of a trial's settings the DataModule reads (built whole by
``TrialConfig.data``). Importing it imports no torch."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from lightning_ad.data.classes import TwinClasses
from lightning_ad.data.masks import check_mask_mode
from lightning_ad.data.twins import build_twin
from lightning_ad.errors import LightningADError


@dataclass(frozen=True)
class DataConfig:
    """Which images a trial reads, which twins it draws, and at which sizes.

    Attributes:
        classes: the classes to learn, anything :meth:`TwinClasses.parse` takes: ``2``, ``3``
            or twin names starting with ``normal`` (class 0).
        twin_params: per-twin parameter overrides, e.g. ``{"line": {"blob_aware": True}}``.
        image_size: side of the square images the model trains on.
        scoring_size: side of the train/good images the scorers are fitted on and of the test
            images; None means ``image_size``. A fully convolutional backbone trained on small
            images can be scored at full resolution, where small defects are more than a pixel.
        batch_size: images per training batch, all classes mixed.
        samples_per_epoch: training samples (an image as one class) drawn per epoch; None means
            as many as the train split has normal images. Equal for every class count, so
            class2 and class3 trials of one seed take the same number of optimizer steps.
        val_fraction: share of train/good held out, with its own fixed twins, for model
            selection, early stopping and the detector's threshold.
        mask_mode: how the object mask for twins is found
            (:data:`~lightning_ad.data.masks.MASK_MODES`).
        seed: drives the split, the shuffling and every twin.
        crops: train on ``image_size`` crops of the ``scoring_size`` images, each twin drawn on
            its crop and given with its mask (what a patch head learns from): a patch then
            covers the same pixels in training as when the detector scores.

    Raises:
        LightningADError: a value no DataModule can use, named with what to do.
    """

    classes: TwinClasses
    twin_params: Mapping[str, Mapping[str, Any]]
    image_size: int
    scoring_size: int | None
    batch_size: int
    samples_per_epoch: int | None
    val_fraction: float
    mask_mode: str
    seed: int
    crops: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "classes", TwinClasses.parse(self.classes))
        if self.scoring_size is None:
            object.__setattr__(self, "scoring_size", self.image_size)
        for twin, params in self.twin_params.items():
            build_twin(twin, **params)
        check_mask_mode(self.mask_mode)
        if not 0 < self.val_fraction < 1:
            raise LightningADError(
                f"val_fraction {self.val_fraction} must lie strictly between 0 and 1"
            )
        for name in ("batch_size", "samples_per_epoch"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise LightningADError(f"{name} must be at least 1, got {value}")
        if self.crops and self.scoring_size < self.image_size:
            raise LightningADError(
                f"training crops of {self.image_size} px cannot be cut from images scored at "
                f"{self.scoring_size} px: set score_image_size to {self.image_size} or more"
            )
