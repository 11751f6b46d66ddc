"""Anomaly scores from embeddings, and image AUROC overall and per defect type.

Every scorer is fitted on the embeddings of the normal training images only; no test label is
used for anything but the AUROC itself.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.metrics import roc_auc_score
from sklearn.neighbors import LocalOutlierFactor
from sklearn.preprocessing import MinMaxScaler

SCORERS = ("lof", "knn", "prob", "fused")


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


def auroc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Image AUROC with good = 0 and every defect = 1; NaN when only one class is present."""
    if len(np.unique(labels)) < 2:
        return float("nan")
    return float(roc_auc_score(labels, scores))


def auroc_per_defect(
    defects: np.ndarray, scores: np.ndarray, names: Sequence[str]
) -> dict[str, float]:
    """AUROC of good (index 0 in ``names``) against each defect type alone."""
    good = defects == 0
    result = {}
    for index, name in enumerate(names):
        if index == 0 or not (defects == index).any():
            continue
        keep = good | (defects == index)
        result[name] = auroc((defects[keep] == index).astype(int), scores[keep])
    return result
