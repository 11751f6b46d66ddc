"""Image, pixel and region metrics, and DeLong's paired test, against values worked by hand."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from lightning_ad import metrics


def test_auroc_per_defect_compares_good_with_each_defect_alone() -> None:
    defects = np.array([0, 0, 1, 1, 2, 2])
    scores = np.array([0.1, 0.2, 0.9, 0.8, 0.15, 0.05])
    result = metrics.auroc_per_defect(defects, scores, ("good", "crack", "stain"))
    assert result == {"crack": 1.0, "stain": 0.25}


def test_pixel_auroc_matches_the_exact_one() -> None:
    rng = np.random.default_rng(0)
    masks = np.zeros((6, 32, 32), bool)
    masks[:3, 10:16, 8:20] = True
    maps = rng.random(masks.shape) + 0.4 * masks
    exact = roc_auc_score(masks.ravel(), maps.ravel())
    assert metrics.pixel_auroc(maps, masks) == pytest.approx(exact, abs=1e-4)
    assert np.isnan(metrics.pixel_auroc(maps, np.zeros_like(masks)))


@pytest.fixture
def one_row() -> tuple[np.ndarray, np.ndarray]:
    """One image, one row of six pixels: region A = pixels 0-1, region B = pixel 3, the other
    three defect-free."""
    masks = np.array([[[1, 1, 0, 1, 0, 0]]], bool)
    maps = np.array([[[0.9, 0.3, 0.5, 0.8, 0.1, 0.2]]])
    return maps, masks


def test_aupro_by_hand(one_row) -> None:
    # Thresholds from the top, (FPR, PRO = mean over regions of the share above):
    #   0.9: A 1/2, B 0 -> (0, 0.25);   0.8: B 1 -> (0, 0.75);   0.5: a negative -> (1/3, 0.75)
    #   0.3: A 2/2 -> (1/3, 1.0);       0.2 -> (2/3, 1.0);        0.1 -> (1, 1.0)
    # Up to FPR 0.3 the curve sits at PRO 0.75: area 0.225, / 0.3 = 0.75.
    # Up to FPR 0.5: 0.75 * 1/3 + 1.0 * (0.5 - 1/3) = 5/12, / 0.5 = 5/6.
    maps, masks = one_row
    assert metrics.aupro(maps, masks) == pytest.approx(0.75, abs=1e-4)
    assert metrics.aupro(maps, masks, max_fpr=0.5) == pytest.approx(5 / 6, abs=1e-4)


def test_aupro_weighs_regions_not_pixels() -> None:
    """A large region found and a small one missed: pixel AUROC is high, AUPRO only half."""
    masks = np.zeros((1, 20, 20), bool)
    masks[0, :10, :10] = True  # 100 pixels, scored high
    masks[0, 15, 15] = True  # 1 pixel, scored like the background
    maps = np.where(masks, 1.0, 0.0) + np.linspace(0, 0.5, 400).reshape(1, 20, 20)
    maps[0, 15, 15] = 0.0
    assert metrics.pixel_auroc(maps, masks) > 0.95
    assert metrics.aupro(maps, masks) == pytest.approx(0.5, abs=0.01)
