"""``TrialConfig``: every setting of one trial, from the CLI (``train``) or a sweep's grid cell.

The settings are flat, as a user writes them (``--lr``, a sweep file's ``fixed:``); each consumer
gets its part whole: ``data`` (the DataModule), ``net`` and ``optimizer`` (the network and its
training), ``scoring`` (the detector), ``training`` (the Trainer). Before anything is written,
``TrialConfig`` builds every part (each checks its plain values) and asks each named thing's
module for its rules (a head knows its class count, a backbone its smallest image, a scorer
whether it needs training). Importing this module does not import
torch: the command line reads the fields (their types, defaults and ``help``) to build the
``train`` flags.
"""

from __future__ import annotations

import functools
import re
from dataclasses import MISSING, asdict, dataclass, field, fields
from typing import Any

from lightning_ad.data.classes import TwinClasses
from lightning_ad.data.config import DataConfig
from lightning_ad.errors import LightningADError, unknown
from lightning_ad.grid import NO_HEAD
from lightning_ad.models.config import NetConfig, OptimizerConfig, ScoringConfig

ARTIFACT_LEVELS = ("full", "minimal")
SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def _setting(default: Any, help: str, **kwargs: Any) -> Any:
    """A field with the help text the ``train`` command line shows for it."""
    if callable(default):
        return field(default_factory=default, metadata={"help": help}, **kwargs)
    return field(default=default, metadata={"help": help}, **kwargs)


@dataclass(frozen=True)
class TrialConfig:
    """One trial. Defaults are sized for a 2-core CPU: a few minutes on the built-in screw."""

    category: str = _setting("screw", "category name, e.g. screw, grid, transistor")
    backbone: str = _setting(
        "efficientnet_lite0",
        "mobilenet_v2, efficientnet_b0, resnet18 or efficientnet_lite0 (pretrained offline)",
    )
    head: str = _setting(
        "arcface",
        "softmax, l2softmax, arcface, cosface, adacos, or none: the frozen baseline",
    )
    classes: TwinClasses = _setting(
        lambda: TwinClasses.parse(3),
        "2, 3, or twin names starting with normal: normal,cutpaste,scar",
    )
    seed: int = _setting(0, "seeds the split, the twins, the weights and the shuffling")
    image_size: int = _setting(96, "image side in pixels for training")
    score_image_size: int | None = _setting(
        None, "image side for scoring (memory bank and test); default: image_size"
    )
    epochs: int = _setting(8, "the most training epochs (early stopping on val/loss)")
    batch_size: int = _setting(32, "images per batch, all classes mixed")
    samples_per_epoch: int | None = _setting(
        None,
        "training samples per epoch whatever the class count; default: as many as the train "
        "split's normal images",
    )
    bn_mode: str = _setting(
        "frozen",
        "frozen: BatchNorm keeps the pretrained statistics while training; train: they follow "
        "the twin batches",
    )
    lr: float = _setting(1e-4, "Adam's learning rate")
    backbone_lr: float | None = _setting(
        None, "the backbone's learning rate, to keep its pretrained features; default: lr"
    )
    amsgrad: bool = _setting(True, "Adam's AMSGrad variant (the article's)")
    cosine_schedule: bool = _setting(False, "anneal the learning rate to 0 (cosine)")
    patch_head_weight: float = _setting(
        0.0,
        "weight of the twin-supervised patch head's loss (0: none); it trains on "
        "image_size crops of the score_image_size images, where the twins' masks are known",
    )
    patch_head_lr: float = _setting(1e-3, "the patch head's learning rate (it starts untrained)")
    swa: bool = _setting(False, "average the weights of the last epochs (Lightning's SWA)")
    pretrained: str = _setting("auto", "auto | true | false | PATH to a state dict")
    score: str = _setting(
        "knn",
        "the scorer reported as test/auc: lof, knn, prob, fused, patch (PatchCore), twinseg "
        "(the patch head's map) or patch-twinseg (both maps, standardised and added)",
    )
    coreset_fraction: float = _setting(
        0.01, "share of train/good patches in PatchCore's memory bank (greedy k-center)"
    )
    mask_mode: str = _setting("auto", "where twins go: auto, mean, background or full")
    val_fraction: float = _setting(0.2, "share of train/good held out for val/loss")
    head_params: dict[str, Any] = _setting(dict, "the head's paper parameters, e.g. {m: 0.1}")
    twin_params: dict[str, dict[str, Any]] = _setting(
        dict, "per-twin parameters, e.g. {line: {blob_aware: true}}"
    )
    data_root: str | None = _setting(None, "a folder in MVTec AD layout")
    data_dir: str = _setting("data", "where data/mvtec and data/synthetic live")
    false_alarm_rate: float = _setting(
        0.01, "the detector's threshold: this share of held-out normal images lies above it"
    )
    log_model: bool = _setting(
        True, "log the detector as an MLflow model (runs:/ID/model; about 20 MB a trial)"
    )
    artifacts: str = _setting(
        "full", "full: ROC curves, histograms, Grad-CAM sheet; minimal: metrics only"
    )
    max_time_minutes: float | None = _setting(None, "stop training after this many minutes")

    def __post_init__(self) -> None:
        object.__setattr__(self, "classes", TwinClasses.parse(self.classes))
        self.validate()

    @property
    def trains(self) -> bool:
        """False for the frozen baseline: nothing is trained."""
        return self.head != NO_HEAD

    @property
    def patch_head(self) -> bool:
        """Whether the network has a twin-supervised patch head: asked for and trained (the
        frozen baseline of a sweep with a patch head has none, as it has no metric head)."""
        return self.trains and self.patch_head_weight > 0

    @functools.cached_property
    def data(self) -> DataConfig:
        """What the DataModule reads."""
        return DataConfig(
            classes=self.classes,
            twin_params=self.twin_params,
            image_size=self.image_size,
            scoring_size=self.score_image_size,
            batch_size=self.batch_size,
            samples_per_epoch=self.samples_per_epoch,
            val_fraction=self.val_fraction,
            mask_mode=self.mask_mode,
            seed=self.seed,
            crops=self.patch_head,
        )

    @functools.cached_property
    def net(self) -> NetConfig:
        """What builds the network."""
        return NetConfig(
            backbone=self.backbone,
            head=self.head,
            n_classes=len(self.classes),
            head_params=self.head_params,
            pretrained=self.pretrained,
            bn_mode=self.bn_mode,
            patch_head=self.patch_head,
        )

    @functools.cached_property
    def optimizer(self) -> OptimizerConfig:
        """What trains the network."""
        return OptimizerConfig(
            self.lr,
            self.backbone_lr,
            self.amsgrad,
            self.cosine_schedule,
            patch_head_weight=self.patch_head_weight,
            patch_head_lr=self.patch_head_lr,
        )

    @functools.cached_property
    def scoring(self) -> ScoringConfig:
        """What scores the test split. Its scorer is ``score``, unless that needs a trained head
        and this is the frozen baseline: then its fallback, kNN or for a scorer with maps PatchCore
        (logged as the run's ``score_used``)."""
        from lightning_ad.models.scoring import scorer_for

        return ScoringConfig(
            scorer=scorer_for(self.score, self.trains, self.patch_head),
            image_size=self.data.scoring_size,
            coreset_fraction=self.coreset_fraction,
            false_alarm_rate=self.false_alarm_rate,
            seed=self.seed,
        )

    @functools.cached_property
    def training(self) -> TrainingConfig:
        """What the Trainer runs."""
        return TrainingConfig(self.epochs, self.max_time_minutes, self.swa, swa_lr=self.lr)

    def validate(self) -> None:
        """Every name and number checked before anything is written; errors name the value.

        Each part checks its plain values when it is built; the rules of a named thing (a
        backbone's smallest image, a head's class count) are asked of the module that owns it.
        """
        from lightning_ad.models.backbones import check_backbone
        from lightning_ad.models.detector import check_false_alarm_rate
        from lightning_ad.models.heads import check_head
        from lightning_ad.models.patchcore import check_coreset_fraction

        check_name("category", self.category)
        for part in ("data", "net", "optimizer", "scoring", "training"):
            getattr(self, part)  # building a part runs its own checks (the scorer's name too)
        check_backbone(self.backbone, self.image_size)
        check_backbone(self.backbone, self.data.scoring_size)
        check_head(self.head, len(self.classes), self.head_params)
        check_coreset_fraction(self.coreset_fraction)
        check_false_alarm_rate(self.false_alarm_rate)
        if self.artifacts not in ARTIFACT_LEVELS:
            raise unknown("artifacts level", self.artifacts, ARTIFACT_LEVELS)

    def params(self) -> dict[str, Any]:
        """The flat parameter set logged to MLflow (data and versions are added by ``train``)."""
        from lightning_ad.models.heads import head_parameters

        skip = ("head_params", "twin_params", "classes")
        flat = {k: v for k, v in asdict(self).items() if k not in skip}
        flat["classes"] = self.classes.label
        flat["score_used"] = self.scoring.scorer
        if self.trains:
            flat |= {
                f"head/{k}": v for k, v in (head_parameters(self.head) | self.head_params).items()
            }
        for twin, params in self.twin_params.items():
            flat |= {f"twin/{twin}/{k}": v for k, v in params.items()}
        return flat


@dataclass(frozen=True)
class TrainingConfig:
    """What the Trainer runs (its engineering, not the science).

    Attributes:
        epochs: the most training epochs (early stopping on ``val/loss``).
        max_time_minutes: stop training after this many minutes (None: no limit).
        swa: average the weights of the last epochs (Lightning's SWA) ...
        swa_lr: ... at this learning rate.

    Raises:
        LightningADError: fewer than one epoch.
    """

    epochs: int
    max_time_minutes: float | None
    swa: bool
    swa_lr: float

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise LightningADError(f"epochs must be at least 1, got {self.epochs}")


SETTINGS = {f.name: f for f in fields(TrialConfig)}


def check_setting_type(key: str, value: Any, where: str) -> None:
    """A value for setting ``key`` must have its field's type (an int is a fine float; None
    where the default is None)."""
    setting = SETTINGS[key]
    # The field's own default: building a whole TrialConfig here would validate it every call.
    default = setting.default if setting.default is not MISSING else setting.default_factory()
    expected: tuple[type, ...] = (
        (int, float) if isinstance(default, float) or default is None else (type(default),)
    )
    if default is None and value is None:
        return
    if (isinstance(value, bool) and bool not in expected) or not isinstance(value, expected):
        names = " or ".join(t.__name__ for t in expected)
        raise LightningADError(f"{where} must be {names}, got {value!r} ({type(value).__name__})")


def check_name(what: str, value: str) -> None:
    """Sweep and category names become folders (``reports/<sweep>/<category>/``) and values in
    MLflow filter strings: a quote, a slash or a leading dot would break out of either."""
    if not SAFE_NAME.fullmatch(value):
        raise LightningADError(
            f"{what} {value!r} is not allowed: use 1-64 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
