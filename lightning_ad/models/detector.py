"""``Detector``: a trained network, its fitted scorer and its decision threshold, as plain
torch and numpy: uint8 images in; anomaly scores, verdicts and PatchCore maps out.

A trial builds one while it tests (:class:`~lightning_ad.models.module.AnomalyModule` scores the
test split through it), sets its threshold on the held-out normal images, and saves it; the
MLflow model of :mod:`lightning_ad.packaging.mlflow_model` loads it back. Both paths run the same
code: on the trial's device, a saved detector gives a test image its trial's score to float
rounding (a GPU trial's TF32 convolutions differ from the CPU's at about 1e-3).
"""

from __future__ import annotations

import json
import math
import pickle
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from lightning_ad.data.mvtec import resize
from lightning_ad.data.twins import is_grey
from lightning_ad.errors import LightningADError
from lightning_ad.models import patchcore, scoring
from lightning_ad.models.backbones import Backbone, build_backbone
from lightning_ad.models.config import NetConfig, ScoringConfig
from lightning_ad.models.net import AnomalyNet

SPEC_FILE = "detector.json"
WEIGHTS_FILE = "weights.pt"


@dataclass(frozen=True)
class Threshold:
    """The decision threshold: a score above ``value`` is anomalous.

    Set on held-out normal images so that at most ``false_alarm_rate`` of them lie above it:
    ``false_alarms`` of ``normals`` did. On new normal parts from the same process the share
    above it is about ``(false_alarms + 1) / (normals + 1)`` (the rank of a new score among
    ``normals`` exchangeable ones): a rate of 1 % needs 99 held-out normals or more to be met.
    """

    value: float
    false_alarm_rate: float
    false_alarms: int
    normals: int

    @classmethod
    def at_rate(cls, normal_scores: np.ndarray, false_alarm_rate: float) -> Threshold:
        """The threshold with floor(rate x n) of the ``normal_scores`` above it: the
        (k+1)-th largest score, so exactly k lie above it when no two scores tie."""
        check_false_alarm_rate(false_alarm_rate)
        scores = np.sort(np.asarray(normal_scores, dtype=np.float64))[::-1]
        if not len(scores):
            raise LightningADError("no held-out normal image to set the decision threshold on")
        if not np.isfinite(scores).all():
            raise LightningADError(
                f"{int((~np.isfinite(scores)).sum())} held-out normal image(s) scored NaN or "
                "infinite: the scorer's reference is degenerate (too few or identical normal "
                "images?); add normal images"
            )
        allowed = math.floor(false_alarm_rate * len(scores) + 1e-9)
        value = float(scores[min(allowed, len(scores) - 1)])
        return cls(value, false_alarm_rate, int((scores > value).sum()), len(scores))

    @property
    def expected_rate(self) -> float:
        """The share of new normal parts expected above the threshold."""
        return (self.false_alarms + 1) / (self.normals + 1)

    def describe(self) -> str:
        """One line for people: the value, how it was set, what to expect on new parts."""
        line = (
            f"threshold {self.value:.6g}: {self.false_alarms} of {self.normals} held-out normal "
            f"images above it (false-alarm rate asked for: {self.false_alarm_rate:.2%}; "
            f"expected on new normal parts: about {self.expected_rate:.1%})"
        )
        if self.expected_rate > self.false_alarm_rate:
            line += f"; {math.ceil(1 / self.false_alarm_rate) - 1} held-out normals would meet it"
        return line


def check_false_alarm_rate(rate: float) -> None:
    """A false-alarm rate is a share: strictly between 0 and 1."""
    if not 0 < rate < 1:
        raise LightningADError(
            f"false_alarm_rate {rate} must lie strictly between 0 and 1 (e.g. 0.01: one false "
            "alarm in a hundred normal parts)"
        )


@dataclass(frozen=True)
class DetectorSpec:
    """What rebuilds a detector's network and preprocessing (saved as ``detector.json``)."""

    backbone: str
    head: str
    n_classes: int
    head_params: dict
    scorer: str
    image_size: int
    """Side of the square image the network scores; inputs are resized to it (area)."""
    grey: bool
    """Trained on grey images: inputs are converted to grey; else a grey input (one with
    texture: a blank frame is scored) is refused."""
    coreset_fraction: float
    threshold: Threshold | None = None
    map_scale: float | None = None
    """The largest anomaly-map value on a held-out normal image: a heat map's mid-scale."""
    patch_head: bool = False
    """The network has a twin-supervised patch head (the ``twinseg`` scorer's map)."""
    map_stats: dict[str, list[float]] | None = None
    """With a patch head: the mean and standard deviation of PatchCore's distances and of the
    patch head's probabilities over held-out normal patches (``patch-twinseg`` adds them on
    that scale)."""

    @classmethod
    def of(cls, net: NetConfig, scoring: ScoringConfig, grey: bool) -> DetectorSpec:
        """The spec of a detector of network ``net`` scored as ``scoring`` says."""
        return cls(
            backbone=net.backbone,
            head=net.head,
            n_classes=net.n_classes,
            head_params=dict(net.head_params),
            scorer=scoring.scorer,
            image_size=scoring.image_size,
            grey=grey,
            coreset_fraction=scoring.coreset_fraction,
            patch_head=net.patch_head,
        )

    def net_config(self) -> NetConfig:
        """The network's settings, for weights read from a file (nothing pretrained)."""
        return NetConfig(
            self.backbone,
            self.head,
            self.n_classes,
            self.head_params,
            "false",
            bn_mode="frozen",
            patch_head=self.patch_head,
        )


class Detector:
    """Scores uint8 RGB images (B, 3, S, S) with one scorer fitted on normal images.

    Build it with :meth:`fit` (from a network and its normal training images) or :meth:`load`,
    then set its threshold with :meth:`calibrate`; :meth:`score_batch` scores, :meth:`save`
    writes it.

    Args:
        spec: what it is (:class:`DetectorSpec`).
        net: the network whose embeddings and patch features it scores.
        reference: the normal images' embeddings, by view (``model``; ``frozen`` for the
            fused scorer).
        bank: PatchCore's memory bank of normal patch features.
        frozen: the untrained backbone the ``fused`` scorer compares with; None otherwise.
    """

    def __init__(
        self,
        spec: DetectorSpec,
        net: AnomalyNet,
        reference: dict[str, np.ndarray],
        bank: patchcore.MemoryBank,
        frozen: Backbone | None = None,
    ) -> None:
        self.spec, self.net, self.bank, self.frozen = spec, net, bank, frozen
        self.reference = reference
        """Train embeddings, by view (``model``; ``frozen`` for the fused score)."""

    @classmethod
    def fit(
        cls,
        spec: DetectorSpec,
        net: AnomalyNet,
        normals: DataLoader,
        seed: int = 0,
    ) -> Detector:
        """Fit the scorers on the ``normals``.

        Args:
            spec: what the detector is (its network's names, scorer, image side).
            net: the network, trained or frozen; the ``fused`` scorer also builds the
                untrained backbone from the weights ``net`` started from.
            normals: the train split's good images, as loaded (uint8 batches).
            seed: PatchCore's coreset sampling.

        Returns:
            The fitted detector, without a threshold until :meth:`calibrate`.

        Raises:
            LightningADError: ``normals`` is empty.
        """
        frozen = None
        if scoring.needs_frozen_view(spec.scorer, net.trains):
            device = next(net.parameters()).device
            frozen = build_backbone(spec.backbone, net.config.pretrained)
            frozen = frozen.to(device, memory_format=net.memory_format).eval()
        features = _collect(_Embedder(net, frozen), normals)
        bank = patchcore.MemoryBank(spec.coreset_fraction, seed).fit(features.pop("patches"))
        reference = {k: features[k] for k in ("model", "frozen") if k in features}
        return cls(spec, net, reference, bank, frozen)

    def features(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """What every scorer reads of a batch: pooled embeddings, PatchCore patch distances and,
        for a trained network, p(normal), the frozen backbone's embeddings and the patch head's
        twin probabilities."""
        out = _Embedder(self.net, self.frozen)(images)
        out["patch_distances"] = self.bank.distances(out.pop("patches"))
        return out

    def scoring_features(self, features: dict[str, np.ndarray]) -> scoring.Features:
        """``features`` of some images paired with the reference they are scored against."""
        return scoring.Features(
            model=(self.reference["model"], features["model"]),
            frozen=(self.reference["frozen"], features["frozen"]) if "frozen" in features else None,
            p_normal=features.get("p_normal"),
            patch_distances=features["patch_distances"],
            twinseg=features.get("twinseg"),
            map_stats=self.spec.map_stats,
        )

    def prepare(self, image: np.ndarray, source: str) -> np.ndarray:
        """An RGB uint8 image (H, W, 3) as the network takes it: grey when the detector is,
        resized to its side. A grey image for a colour detector is refused: it would be scored
        against colour normals and look anomalous for its colour alone."""
        if self.spec.grey:
            image = np.repeat(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)[..., None], 3, axis=2)
        elif is_grey(image) and image.min() < image.max():  # a blank frame is scored, not refused
            raise LightningADError(
                f"{source}: a grey image, but this detector was trained on colour images; "
                "give it the colour camera's images"
            )
        return resize(image, self.spec.image_size, cv2.INTER_AREA)

    @torch.no_grad()
    def score_batch(self, images: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """uint8 (B, 3, S, S) -> scores (B,) and anomaly maps (B, S, S): those of the detector's
        scorer (PatchCore's, unless the scorer has its own: ``twinseg``, ``patch-twinseg``)."""
        return self._score(self.features(images), images.shape[-1])

    def _score(self, features: dict[str, torch.Tensor], size: int) -> tuple[np.ndarray, np.ndarray]:
        """Scores and anomaly maps (of side ``size``) of a batch's :meth:`features`."""
        scored = self.scoring_features({k: v.float().cpu().numpy() for k, v in features.items()})
        scorer = scoring.SCORERS[self.spec.scorer]
        return scorer.score(scored), anomaly_maps(scorer.map_grid(scored), size)

    @torch.no_grad()
    def calibrate(self, normals: DataLoader, false_alarm_rate: float) -> Threshold:
        """Set the decision threshold on held-out normal images (see :class:`Threshold`); with a
        patch head, first the scale of each patch grid on them (``map_stats``)."""
        batches = [(self.features(images), images.shape[-1]) for images, _ in normals]
        if not batches:
            raise LightningADError("no held-out normal image to set the decision threshold on")
        if self.net.patch_head is not None:
            grids = {
                g: torch.cat([features[g].float().cpu() for features, _ in batches])
                for g in scoring.STANDARDISED_GRIDS
            }
            stats = {g: [float(v.mean()), float(v.std())] for g, v in grids.items()}
            self.spec = replace(self.spec, map_stats=stats)
        scores, maps = zip(*(self._score(*batch) for batch in batches), strict=True)
        threshold = Threshold.at_rate(np.concatenate(scores), false_alarm_rate)
        map_scale = max(float(m.max()) for m in maps)
        self.spec = replace(self.spec, threshold=threshold, map_scale=map_scale)
        return threshold

    def heat(self, maps: np.ndarray) -> np.ndarray:
        """Anomaly maps on one scale for every image this detector scores: 0.5 is the largest
        value seen on a held-out normal image, 1 twice that."""
        return np.clip(maps / (2 * (self.spec.map_scale or 1.0)), 0, 1)

    @property
    def threshold(self) -> Threshold:
        if self.spec.threshold is None:
            raise LightningADError("the detector has no decision threshold: calibrate it first")
        return self.spec.threshold

    # ---- files ----------------------------------------------------------------------------

    def save(self, folder: Path) -> Path:
        """``detector.json`` (readable) and ``weights.pt`` (tensors only) into ``folder``."""
        folder.mkdir(parents=True, exist_ok=True)
        (folder / SPEC_FILE).write_text(json.dumps(asdict(self.spec), indent=2) + "\n")
        tensors = {
            "net": self.net.state_dict(),
            "frozen": self.frozen.state_dict() if self.frozen is not None else None,
            "bank": self.bank.bank.cpu(),
            "reference": {k: torch.from_numpy(v) for k, v in self.reference.items()},
        }
        torch.save(tensors, folder / WEIGHTS_FILE)
        return folder

    @classmethod
    def load(cls, folder: Path, device: str | torch.device = "cpu") -> Detector:
        """A detector saved by :meth:`save`; its weights are read as tensors only."""
        try:
            raw = json.loads((folder / SPEC_FILE).read_text())
            tensors = torch.load(folder / WEIGHTS_FILE, map_location="cpu", weights_only=True)
        except (OSError, ValueError, RuntimeError, pickle.UnpicklingError) as err:
            raise LightningADError(
                f"{folder} is not a saved lightning_ad detector ({err}); point at a trial's "
                "model (runs:/RUN_ID/model) or a registered version (models:/NAME/VERSION)"
            ) from err
        threshold = raw.pop("threshold")
        spec = DetectorSpec(**raw, threshold=Threshold(**threshold) if threshold else None)
        net = AnomalyNet(spec.net_config())
        net.load_state_dict(tensors["net"])
        frozen = None
        if tensors["frozen"] is not None:
            frozen = build_backbone(spec.backbone, "false").to(memory_format=net.memory_format)
            frozen.load_state_dict(tensors["frozen"])
            frozen = frozen.to(device).eval()
        bank = patchcore.MemoryBank(spec.coreset_fraction)
        bank.bank = tensors["bank"].to(device)
        reference = {k: v.numpy() for k, v in tensors["reference"].items()}
        return cls(spec, net.to(device).eval(), reference, bank, frozen)


def anomaly_maps(grid: np.ndarray, size: int) -> np.ndarray:
    """A scorer's patch grid (N, h, w) as anomaly maps (N, ``size``, ``size``), upsampled and
    blurred as PatchCore's (:func:`~lightning_ad.models.patchcore.anomaly_maps`)."""
    pixels = torch.from_numpy(np.ascontiguousarray(grid, np.float32))
    return patchcore.anomaly_maps(pixels, size).numpy()


class _Embedder:
    """One forward pass per batch: everything the scorers read of it, on the network's
    device (patch features stay there for the memory bank)."""

    def __init__(self, net: AnomalyNet, frozen: Backbone | None) -> None:
        self.net, self.frozen = net, frozen

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        device = next(self.net.parameters()).device
        pixels = self.net.normalise(images.to(device))
        embeddings, patches = patchcore.embed(self.net.backbone, pixels)
        out = {"model": embeddings, "patches": patches}
        if self.net.trains:
            out["p_normal"] = F.softmax(self.net.head(embeddings), dim=1)[:, 0]
        if self.net.patch_head is not None:
            out["twinseg"] = torch.sigmoid(self.net.patch_head(patches))
        if self.frozen is not None:
            out["frozen"] = self.frozen(pixels)
        return out


def _collect(embedder: _Embedder, loader: DataLoader) -> dict:
    """Every batch of ``loader`` through ``embedder`` in eval mode: pooled features as float
    numpy (N, D); patch features as one tensor of rows (N * h * w, C), left on the device."""
    was_training = embedder.net.training
    embedder.net.eval()
    batches = []
    for images, _ in loader:
        batch = embedder(images)
        batches.append(batch | {"patches": patchcore.patch_rows(batch["patches"])})
    embedder.net.train(was_training)
    if not batches:
        raise LightningADError("no normal image to fit the scorers on")
    out = {"patches": torch.cat([b["patches"] for b in batches])}
    for key in ("model", "frozen"):
        if key in batches[0]:
            out[key] = torch.cat([b[key] for b in batches]).float().cpu().numpy()
    return out
