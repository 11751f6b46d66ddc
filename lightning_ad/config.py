"""``TrialConfig``: every setting of one trial, from the CLI (``train``) or a sweep's grid cell.

Nothing else reads global state: ``train.run_trial(config)`` is the only way a model is trained.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from lightning_ad.data.datamodule import CLASS_PRESETS, resolve_classes
from lightning_ad.data.twins import MASK_MODES, build_twin
from lightning_ad.errors import LightningADError
from lightning_ad.models.backbones import BACKBONES, check_image_size
from lightning_ad.models.heads import HEADS, NO_HEAD, head_parameters
from lightning_ad.scoring import SCORERS

ARTIFACT_LEVELS = ("full", "minimal")


@dataclass(frozen=True)
class TrialConfig:
    """One trial. Defaults are sized for a 2-core CPU: a few minutes on the built-in screw."""

    category: str = "screw"
    backbone: str = "efficientnet_lite0"
    head: str = "arcface"
    classes: tuple[str, ...] = ("normal", "line", "distortion")
    seed: int = 0
    image_size: int = 96
    epochs: int = 8
    batch_size: int = 32
    lr: float = 1e-4
    amsgrad: bool = True
    cosine_schedule: bool = False
    swa: bool = False
    """Average the weights of the last epochs (Lightning's StochasticWeightAveraging)."""
    pretrained: str = "auto"
    score: str = "knn"
    """The scorer reported as ``test/auc``: lof, knn, prob or fused."""
    mask_mode: str = "auto"
    val_fraction: float = 0.2
    head_params: dict[str, Any] = field(default_factory=dict)
    twin_params: dict[str, dict[str, Any]] = field(default_factory=dict)
    data_root: str | None = None
    data_dir: str = "data"
    artifacts: str = "full"
    """``full``: ROC curves, histograms and the Grad-CAM sheet; ``minimal``: metrics only."""
    max_time_minutes: float | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "classes", resolve_classes(self.classes))
        self.validate()

    @property
    def classes_label(self) -> str:
        """``class2`` / ``class3`` for the article's presets, else the names joined by ``+``."""
        for count, names in CLASS_PRESETS.items():
            if names == self.classes:
                return f"class{count}"
        return "+".join(self.classes)

    def validate(self) -> None:
        """Every name and number checked before anything is written; errors name the value."""
        if self.backbone not in BACKBONES:
            raise LightningADError(
                f"unknown backbone '{self.backbone}'; valid: {', '.join(BACKBONES)}"
            )
        if self.head != NO_HEAD and self.head not in HEADS:
            raise LightningADError(
                f"unknown head '{self.head}'; valid: {', '.join([*HEADS, NO_HEAD])}"
            )
        if self.head == "adacos" and len(self.classes) < 3:
            raise LightningADError(
                f"head adacos with {self.classes_label} is undefined (s = sqrt(2) ln(C-1) = 0 at "
                "C=2); use --classes 3 or another head"
            )
        if self.head != NO_HEAD:
            unknown = sorted(set(self.head_params) - set(head_parameters(self.head)))
            if unknown:
                raise LightningADError(f"unknown parameter '{unknown[0]}' for head '{self.head}'")
        for twin, params in self.twin_params.items():
            build_twin(twin, **params)
        check_image_size(self.backbone, self.image_size)
        if self.score not in SCORERS:
            raise LightningADError(f"unknown score '{self.score}'; valid: {', '.join(SCORERS)}")
        if self.mask_mode not in MASK_MODES:
            raise LightningADError(
                f"unknown mask mode '{self.mask_mode}'; valid: {', '.join(MASK_MODES)}"
            )
        if self.artifacts not in ARTIFACT_LEVELS:
            raise LightningADError(
                f"artifacts '{self.artifacts}'; valid: {', '.join(ARTIFACT_LEVELS)}"
            )
        for name in ("epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise LightningADError(f"{name} must be at least 1, got {getattr(self, name)}")
        if not self.lr > 0:
            raise LightningADError(f"lr must be positive, got {self.lr}")

    def params(self) -> dict[str, Any]:
        """The flat parameter set logged to MLflow (data and versions are added by ``train``)."""
        flat = {k: v for k, v in asdict(self).items() if k not in ("head_params", "twin_params")}
        flat["classes"] = self.classes_label
        if self.head != NO_HEAD:
            flat |= {
                f"head/{k}": v for k, v in (head_parameters(self.head) | self.head_params).items()
            }
        for twin, params in self.twin_params.items():
            flat |= {f"twin/{twin}/{k}": v for k, v in params.items()}
        return flat
