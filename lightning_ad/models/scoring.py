"""Anomaly scores of test images from the features of a network (see :class:`Features`).

Every scorer is fitted on the embeddings of the normal training images only; no test label is
used for anything but the AUROC itself.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from sklearn.neighbors import LocalOutlierFactor
from sklearn.preprocessing import MinMaxScaler

from lightning_ad.errors import LightningADError, unknown


def lof_scores(train: np.ndarray, test: np.ndarray, n_neighbors: int = 5) -> np.ndarray:
    """MinMax-scale on train, LocalOutlierFactor(novelty=True); higher = more anomalous."""
    scaler = MinMaxScaler().fit(train)
    lof = LocalOutlierFactor(n_neighbors=min(n_neighbors, len(train) - 1), novelty=True)
    lof.fit(scaler.transform(train))
    return -lof.decision_function(scaler.transform(test))


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def knn_scores(train: np.ndarray, test: np.ndarray) -> np.ndarray:
    """Smallest cosine distance from each test embedding to any train embedding."""
    return 1.0 - (_unit(test) @ _unit(train).T).max(axis=1)


def knn_scale(train: np.ndarray) -> float:
    """Median leave-one-out kNN distance among the train embeddings: the typical score of a
    normal image, so scores of different networks can be added on one scale."""
    similarity = _unit(train) @ _unit(train).T
    np.fill_diagonal(similarity, -np.inf)
    return float(max(np.median(1.0 - similarity.max(axis=1)), 1e-12))


def fused_scores(
    trained: tuple[np.ndarray, np.ndarray], frozen: tuple[np.ndarray, np.ndarray]
) -> np.ndarray:
    """kNN score of the trained network plus that of the frozen pretrained one, each divided by
    its own :func:`knn_scale`: training learns added marks and loses some geometry the frozen
    features still see, so the sum keeps both. Each pair is (train, test) embeddings."""
    return sum(knn_scores(tr, te) / knn_scale(tr) for tr, te in (trained, frozen))


@dataclass(frozen=True)
class Features:
    """What the scorers are fitted on and applied to: (train/good, test) embeddings of the
    network; for a trained network those of its frozen pretrained backbone and the
    classifier's p(normal) of each test image; each test patch's distance to the
    PatchCore memory bank of the network's train/good patches (N, h, w); and, with a patch
    head, each test patch's twin probability (N, h, w) and the mean and standard deviation of
    both grids over the patches of held-out normal images (``map_stats``, by field name)."""

    model: tuple[np.ndarray, np.ndarray]
    frozen: tuple[np.ndarray, np.ndarray] | None = None
    p_normal: np.ndarray | None = None
    patch_distances: np.ndarray | None = None
    twinseg: np.ndarray | None = None
    map_stats: Mapping[str, Sequence[float]] | None = None


STANDARDISED_GRIDS = ("patch_distances", "twinseg")
"""The patch grids ``patch-twinseg`` adds, each standardised on held-out normal patches."""
TWINSEG_WEIGHT = 0.25
"""The patch head's share beside PatchCore's in ``patch-twinseg``, chosen on the development
screw (``python -m benchmarks.map_weight``; README, "The patch head"): 0.25 had the best worst
seed on both image AUROC and AUPRO of the weights 0-4 it tried; 1 let the head's false alarms
on the part's outline outvote PatchCore."""


def standardised_sum(features: Features) -> np.ndarray:
    """PatchCore's distances and the patch head's probabilities (N, h, w), each standardised
    by the mean and standard deviation of held-out normal images' patches, then added with the
    head's at :data:`TWINSEG_WEIGHT`: on one scale, neither grid's units decide, and a patch
    either finds unusual counts."""
    patch, twinseg = (standardised(features, grid) for grid in STANDARDISED_GRIDS)
    return patch + TWINSEG_WEIGHT * twinseg


def standardised(features: Features, grid: str) -> np.ndarray:
    """One patch grid of :data:`STANDARDISED_GRIDS` (N, h, w) on the scale of the held-out
    normals' patches (``Features.map_stats``)."""
    mean, std = features.map_stats[grid]
    return (getattr(features, grid) - mean) / max(std, 1e-12)


@dataclass(frozen=True)
class Scorer:
    """An anomaly score: fitted on train/good features, higher = more anomalous."""

    score: Callable[[Features], np.ndarray]
    needs_training: bool
    """Needs a trained head (its classifier, or a trained network beside the frozen one)."""
    needs_frozen: bool = False
    """Reads the frozen backbone's embeddings: a second backbone pass over every image, made
    only when this scorer is the trial's own (:func:`needs_frozen_view`)."""
    needs_patch_head: bool = False
    """Reads the patch head's map (:mod:`~lightning_ad.models.patch_head`)."""
    grid: Callable[[Features], np.ndarray] | None = None
    """The patch grid (N, h, w) of the scorer's own anomaly map, whose largest value is its
    score; None: it has none, and is served with PatchCore's."""
    fallback: str = "knn"
    """What scores the frozen baseline in this scorer's place when it needs a trained head:
    kNN on the pooled embedding, or PatchCore for a scorer with maps, so that every cell of a
    sweep serves maps and a map table compares map with map."""

    def map_grid(self, features: Features) -> np.ndarray:
        """The patch grid (N, h, w) upsampled into the anomaly map served with this score."""
        return features.patch_distances if self.grid is None else self.grid(features)


def map_scorer(grid: Callable[[Features], np.ndarray], **needs: bool) -> Scorer:
    """A scorer with a map of its own: an image scores its largest patch value; the frozen
    baseline is scored by PatchCore in its place."""
    return Scorer(lambda f: largest(grid(f)), grid=grid, fallback="patch", **needs)


def largest(maps: np.ndarray) -> np.ndarray:
    """Each image's largest patch value (N, h, w) -> (N,): a defect is anomalous wherever it
    is, however small."""
    return maps.reshape(len(maps), -1).max(axis=1)


SCORERS: dict[str, Scorer] = {
    "lof": Scorer(lambda f: lof_scores(*f.model), needs_training=False),
    "knn": Scorer(lambda f: knn_scores(*f.model), needs_training=False),
    "prob": Scorer(lambda f: 1.0 - f.p_normal, needs_training=True),
    "fused": Scorer(
        lambda f: fused_scores(f.model, f.frozen), needs_training=True, needs_frozen=True
    ),
    # PatchCore's image score: the largest patch distance (lightning_ad.models.patchcore).
    "patch": map_scorer(lambda f: f.patch_distances, needs_training=False),
    # The patch head's image score: its most twin-like patch, as PatchCore's score is its most
    # distant one. No mean of the k largest (k 3-50) beat it on all three development seeds,
    # for either map scorer (python -m benchmarks.topk; README, "The patch head").
    "twinseg": map_scorer(lambda f: f.twinseg, needs_training=True, needs_patch_head=True),
    "patch-twinseg": map_scorer(standardised_sum, needs_training=True, needs_patch_head=True),
}


def check_scorer(name: str) -> None:
    if name not in SCORERS:
        raise unknown("score", name, SCORERS)


def scorer_for(name: str, trained: bool, patch_head: bool = False) -> str:
    """``name``, or its :attr:`Scorer.fallback` when ``name`` needs a trained head and there
    is none (a choice ``TrialConfig`` makes and logs as ``score_used``).

    Raises:
        LightningADError: ``name`` is no scorer, or reads a patch head a trained network lacks.
    """
    check_scorer(name)
    if trained and SCORERS[name].needs_patch_head and not patch_head:
        raise LightningADError(
            f"score '{name}' reads the patch head's map: set patch_head_weight above 0 "
            "(e.g. 1.0) or pick another score"
        )
    return SCORERS[name].fallback if SCORERS[name].needs_training and not trained else name


def needs_frozen_view(name: str, trained: bool) -> bool:
    """Whether scoring with ``name`` needs the frozen backbone beside a trained network."""
    return trained and SCORERS[name].needs_frozen


def score_all(features: Features, trained: bool) -> dict[str, np.ndarray]:
    """Every scorer that applies: those that need a trained head only for a trained network,
    those that read the frozen backbone or the patch head only when their features were
    computed."""
    return {
        name: scorer.score(features)
        for name, scorer in SCORERS.items()
        if (trained or not scorer.needs_training)
        and (features.frozen is not None or not scorer.needs_frozen)
        and (features.twinseg is not None or not scorer.needs_patch_head)
    }
