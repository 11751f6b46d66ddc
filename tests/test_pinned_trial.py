"""What a trial computes is pinned per code version.

Two tiny trials, of the default recipe's shape (a trained head, twins, PatchCore scoring at a
larger side than training, the threshold) and of the patch head's, have their metrics pinned
under ``lightning_ad.__version__``. A change that moves them fails here until the version is bumped
(so sweep fingerprints change and old cells are not reused) and the pins are updated, in the same
commit. The pins hold for this project's torch on an x86-64 CPU; the trial runs on one thread,
because a convolution's sum order (and so the last bits of a float) follows the thread count.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import lightning_ad
from lightning_ad.config import TrialConfig
from lightning_ad.train import run_trial
from tests.helpers import TINY, mlflow_store

PINNED_TRIALS = {
    "default": TINY
    | dict(
        backbone="efficientnet_lite0",
        pretrained="auto",
        head="arcface",
        classes=3,
        score="patch",
        score_image_size=64,
        coreset_fraction=0.1,
    ),
    # The patch head's recipe in small: its maps and patch-twinseg's weighting are pinned too.
    "patch-head": TINY
    | dict(
        head="arcface",
        classes=3,
        score="patch-twinseg",
        patch_head_weight=1.0,
        score_image_size=64,
        coreset_fraction=0.1,
    ),
}
PINNED = {
    "0.3.4": {
        "default": {
            "test/auc": 0.252,
            "test/auc_knn": 0.548,
            "test/auc_lof": 0.456,
            "test/auc_patch": 0.252,
            "test/auc_prob": 0.408,
            "test/aupro": 0.416893,
            "test/detection_rate": 0.58,
            "test/false_alarm_rate": 1.0,
            "test/pixel_auc": 0.74583,
            "test/pixel_auc_patch": 0.74583,
            "val/threshold": 31.826054,
        },
        "patch-head": {
            "test/auc": 0.446,
            "test/auc_knn": 0.524,
            "test/auc_lof": 0.459,
            "test/auc_patch": 0.378,
            "test/auc_patch-twinseg": 0.446,
            "test/auc_prob": 0.5,
            "test/auc_twinseg": 0.507,
            "test/aupro": 0.276691,
            "test/aupro_patch-twinseg": 0.276691,
            "test/aupro_twinseg": 0.002079,
            "test/detection_rate": 0.02,
            "test/false_alarm_rate": 0.1,
            "test/pixel_auc": 0.65961,
            "test/pixel_auc_patch": 0.765027,
            "val/threshold": 3.064785,
        },
    },
}
"""version -> trial -> metric -> value, for ``PINNED_TRIALS`` on seed 0."""


@pytest.fixture
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("trial", PINNED_TRIALS)
def test_a_tiny_trials_metrics_are_pinned_for_this_version(
    trial: str, synthetic_root: Path, tmp_path: Path, one_thread: None
) -> None:
    assert lightning_ad.__version__ in PINNED, (
        f"no pinned metrics for version {lightning_ad.__version__}: add them (run this test, "
        "copy what it prints) in the commit that bumped the version"
    )
    config = TrialConfig(**PINNED_TRIALS[trial], data_root=str(synthetic_root / "screw"))
    result = run_trial(config, tracking_uri=mlflow_store(tmp_path), progress_bar=False)
    measured = {k: v for k, v in result.metrics.items() if k in _PINNED_KEYS}
    print({k: round(v, 6) for k, v in sorted(measured.items())})  # what to pin
    assert measured == pytest.approx(PINNED[lightning_ad.__version__][trial], abs=2e-6), (
        "a trial's metrics moved: bump lightning_ad.__version__ and pin the new values"
    )


_PINNED_KEYS = (
    "test/auc",
    "test/auc_patch-twinseg",
    "test/auc_twinseg",
    "test/aupro_twinseg",
    "test/aupro_patch-twinseg",
    "test/auc_lof",
    "test/auc_knn",
    "test/auc_prob",
    "test/auc_patch",
    "test/pixel_auc",
    "test/pixel_auc_patch",
    "test/aupro",
    "val/threshold",
    "test/detection_rate",
    "test/false_alarm_rate",
)
