"""The scorers: a registry that says what each needs, and scores that mean what they say."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from lightning_ad import metrics
from lightning_ad.errors import LightningADError
from lightning_ad.models import scoring


@pytest.fixture
def features() -> scoring.Features:
    rng = np.random.default_rng(0)
    normal, anomalous = 5 * np.eye(8)[0], 5 * np.eye(8)[1]  # two directions: cosine tells them
    train = rng.normal(size=(40, 8)) + normal
    test = np.concatenate([rng.normal(size=(10, 8)) + normal, rng.normal(size=(10, 8)) + anomalous])
    frozen = (rng.normal(size=(40, 4)), rng.normal(size=(20, 4)))
    patch_distances = rng.random((20, 3, 3))
    patch_distances[10:, 1, 2] += 1.0  # one far patch in each anomalous image
    twinseg = rng.random((20, 3, 3)) / 2
    twinseg[10:, 0, 0] = 0.9  # one twin-like patch in each anomalous image
    stats = {"patch_distances": [0.5, 0.25], "twinseg": [0.25, 0.1]}
    return scoring.Features(
        (train, test), frozen, np.linspace(1, 0, 20), patch_distances, twinseg, stats
    )


def test_untrained_networks_get_only_the_scorers_that_need_no_training(features) -> None:
    assert set(scoring.score_all(features, trained=False)) == {"lof", "knn", "patch"}
    assert set(scoring.score_all(features, trained=True)) == set(scoring.SCORERS)
    without_patch_head = replace(features, twinseg=None)
    assert set(scoring.score_all(without_patch_head, trained=True)) == set(scoring.SCORERS) - {
        "twinseg",
        "patch-twinseg",
    }


def test_far_test_points_score_higher(features) -> None:
    labels = np.r_[np.zeros(10), np.ones(10)]
    for name in ("lof", "knn", "patch"):
        scores = scoring.score_all(features, trained=False)[name]
        assert metrics.auroc(labels, scores) > 0.9, name


def test_knn_is_the_smallest_cosine_distance() -> None:
    train = np.array([[1.0, 0.0], [0.0, 1.0]])
    test = np.array([[1.0, 0.0], [1.0, 1.0], [-1.0, 0.0]])
    np.testing.assert_allclose(scoring.knn_scores(train, test), [0.0, 1 - np.sqrt(0.5), 1.0])


def test_patch_is_the_largest_patch_distance(features) -> None:
    np.testing.assert_allclose(
        scoring.score_all(features, trained=False)["patch"],
        features.patch_distances.max(axis=(1, 2)),
    )


def test_twinseg_is_the_most_twin_like_patch(features) -> None:
    scores = scoring.score_all(features, trained=True)["twinseg"]
    np.testing.assert_allclose(scores, features.twinseg.max(axis=(1, 2)))
    assert metrics.auroc(np.r_[np.zeros(10), np.ones(10)], scores) == 1.0


def test_patch_twinseg_adds_both_grids_on_the_held_out_normals_scale(features) -> None:
    """Each grid is standardised by its own normal mean and spread, then added, the head's at
    a quarter: a patch that is 2 spreads out in PatchCore's grid and 4 in the head's scores 3."""
    assert scoring.TWINSEG_WEIGHT == 0.25
    expected = (features.patch_distances - 0.5) / 0.25 + 0.25 * (features.twinseg - 0.25) / 0.1
    scores = scoring.score_all(features, trained=True)["patch-twinseg"]
    np.testing.assert_allclose(scores, expected.max(axis=(1, 2)))
    np.testing.assert_allclose(scoring.SCORERS["patch-twinseg"].map_grid(features), expected)
    assert scoring.SCORERS["knn"].map_grid(features) is features.patch_distances


def test_prob_is_one_minus_p_normal(features) -> None:
    np.testing.assert_allclose(
        scoring.score_all(features, trained=True)["prob"], 1 - features.p_normal
    )


def test_scorer_choice_for_an_untrained_network() -> None:
    assert scoring.scorer_for("fused", trained=False) == "knn"
    # A map scorer's frozen baseline serves maps too: PatchCore's.
    assert scoring.scorer_for("twinseg", trained=False) == "patch"
    assert scoring.scorer_for("patch-twinseg", trained=False) == "patch"
    assert scoring.scorer_for("lof", trained=False) == "lof"
    assert scoring.scorer_for("prob", trained=True) == "prob"
    with pytest.raises(LightningADError, match="unknown score 'fusd'"):
        scoring.check_scorer("fusd")
