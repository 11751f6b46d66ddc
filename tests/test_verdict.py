"""The class3 - class2 verdict: its interval covers the truth at its stated rate over simulated
training runs, a ceiling is no information, and Holm's adjustment is the textbook one."""

import numpy as np
import pytest
from scipy.stats import norm

from lightning_ad.verdict import CONFIDENCE, compare, holm

N_POS, N_NEG = 60, 40


def simulate(rng, seeds, shift_a, shift_b, training_sd, identical_seeds=False):
    """One test set and ``seeds`` paired runs of two recipes. A score is an image's own
    difficulty (shared by every run, so runs are correlated on the same images) plus run noise,
    plus the recipe's shift for defective images; training moves each run's shift by
    ``training_sd``. The truth, averaged over training and test sets, is
    ``Phi(shift / sqrt(2 + training_sd^2))`` per recipe."""
    labels = np.r_[np.ones(N_POS, int), np.zeros(N_NEG, int)]
    image = rng.normal(size=len(labels))
    runs = {}
    for arm, shift in (("a", shift_a), ("b", shift_b)):
        rows = []
        for _ in range(seeds):
            run_shift = shift + training_sd * rng.normal()
            rows.append(0.8 * image + 0.6 * rng.normal(size=len(labels)) + labels * run_shift)
        if identical_seeds:
            rows = [rows[0]] * seeds
        runs[arm] = np.array(rows)
    return labels, runs["a"], runs["b"]


def truth(shift_a, shift_b, training_sd):
    scale = np.sqrt(2 + training_sd**2)
    return norm.cdf(shift_b / scale) - norm.cdf(shift_a / scale)


@pytest.mark.parametrize("training_sd", [0.0, 0.5], ids=["test-set-noise-only", "seeds-disagree"])
def test_interval_covers_the_truth_at_its_stated_rate(training_sd: float) -> None:
    rng = np.random.default_rng(0)
    repetitions, covered = 300, 0
    target = truth(1.0, 1.3, training_sd)
    for _ in range(repetitions):
        verdict = compare(*simulate(rng, 5, 1.0, 1.3, training_sd))
        covered += verdict.low <= target <= verdict.high
    coverage = covered / repetitions
    # 300 repetitions: the binomial sd of a 95 % rate is 1.3 points.
    assert CONFIDENCE - 0.04 <= coverage <= 0.995, coverage


def test_identical_seeds_get_no_smaller_p_than_one_seed() -> None:
    rng = np.random.default_rng(1)
    labels, a, b = simulate(rng, 5, 1.0, 1.2, 0.0, identical_seeds=True)
    five, one = compare(labels, a, b), compare(labels, a[:1], b[:1])
    assert five.p >= one.p - 1e-12 and five.high - five.low >= one.high - one.low - 1e-12


def test_seeds_that_disagree_widen_the_interval() -> None:
    rng = np.random.default_rng(2)
    labels, a, b = simulate(rng, 5, 1.0, 1.2, 0.0)
    calm = compare(labels, a, b)
    spread = b + labels * np.linspace(-0.6, 0.6, 5)[:, None]
    assert compare(labels, a, spread).high - compare(labels, a, spread).low > calm.high - calm.low


def test_a_ceiling_is_no_information_not_p_one() -> None:
    labels = np.r_[np.ones(5, int), np.zeros(5, int)]
    perfect = np.tile(labels + 0.1 * np.arange(10), (3, 1))
    verdict = compare(labels, perfect, perfect * 2)
    assert verdict.ceiling and verdict.claim == "ceiling" and np.isnan(verdict.p)
    assert "ceiling" in verdict.sentence()


def test_a_clear_difference_is_a_claim() -> None:
    rng = np.random.default_rng(3)
    verdict = compare(*simulate(rng, 5, 0.5, 2.0, 0.1))
    assert verdict.claim == "better" and verdict.low > 0 and verdict.p < 0.05


def test_too_few_images_of_a_class_give_no_data() -> None:
    verdict = compare(np.array([1, 0, 0]), np.ones((2, 3)), np.ones((2, 3)))
    assert verdict.claim == "no data" and verdict.seeds == 0


def test_holm_matches_the_textbook_example() -> None:
    # Holm (1979) step-down: sorted 0.01, 0.02, 0.03, 0.04 -> x4, x3, x2, x1, kept monotone.
    adjusted = holm([0.03, 0.01, float("nan"), 0.04, 0.02])
    np.testing.assert_allclose(adjusted[[1, 4, 0, 3]], [0.04, 0.06, 0.06, 0.06])
    assert np.isnan(adjusted[2])


def test_one_seed_is_delong_by_hand() -> None:
    # Two positives, two negatives. Scorer a ranks 3 of 4 pairs right: AUROC 3/4, components
    # per positive (1, 1/2), per negative (1/2, 1); scorer b ranks all: AUROC 1, components all 1.
    # Var(delta) = var(1, 1/2) / 2 + var(1/2, 1) / 2 = 0.125 / 2 + 0.125 / 2 = 0.125.
    labels = np.array([1, 1, 0, 0])
    a = np.array([[0.9, 0.4, 0.5, 0.1]])
    b = np.array([[0.8, 0.7, 0.6, 0.2]])
    verdict = compare(labels, a, b)
    assert verdict.mean == pytest.approx(0.25) and np.isinf(verdict.df)
    assert verdict.p == pytest.approx(2 * norm.sf(0.25 / np.sqrt(0.125)))
    assert verdict.p_delong == pytest.approx((verdict.p,))
    assert verdict.high - verdict.low == pytest.approx(2 * norm.ppf(0.975) * np.sqrt(0.125))


def test_a_scorer_against_itself_finds_nothing() -> None:
    rng = np.random.default_rng(1)
    labels, a, _ = simulate(rng, 3, 1.0, 1.0, 0.3)
    verdict = compare(labels, a, a)
    assert verdict.deltas == (0.0, 0.0, 0.0) and verdict.ceiling and np.isnan(verdict.p)
