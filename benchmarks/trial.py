"""B4 + B5: the scorers' share of one default trial, and the trial's peak memory.

The trial runs in a fresh process (``python -m benchmarks.trial SETTINGS``, this module's own
entry point), so that its peak RSS is its own and not the benchmark runner's.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.harness import REPO, Row, Setup, benchmark
from lightning_ad.config import TrialConfig
from lightning_ad.data.datamodule import AnomalyDataModule


@benchmark("B4", "B5")
def scoring_share_and_memory(setup: Setup) -> list[Row]:
    probe = _probe(setup)
    trial = probe["trial_seconds"]
    cheap, patch = probe["cheap_seconds"], probe["patchcore_seconds"]
    b4 = Row(
        "B4",
        "scoring / one default trial: lof + knn + prob; PatchCore (coreset, nearest "
        "neighbours, maps, pixel AUROC + AUPRO)",
        "<= 3 %; report",
        f"{100 * cheap / trial:.2f} % ({cheap:.2f} s); PatchCore {100 * patch / trial:.0f} % "
        f"({patch:.1f} s) of {trial:.0f} s",
        100 * cheap / trial,
        100 * cheap / trial,
        100 * cheap / trial,
        cheap / trial <= 0.03,
    )
    b5 = Row(
        "B5",
        "peak RSS of one default trial; in-memory image cache",
        "<= 2.5 GB",
        f"{probe['peak_rss_mb'] / 1024:.2f} GB; cache {probe['image_cache_mb']:.1f} MB",
        probe["peak_rss_mb"],
        probe["peak_rss_mb"],
        probe["peak_rss_mb"],
        probe["peak_rss_mb"] <= 2560,
    )
    return [b4, b5]


def _probe(setup: Setup) -> dict:
    """One trial with sweeps/default.yaml's settings in a fresh process: time, scoring, RSS."""
    settings = {"data_root": str(setup.data_root), "tiny": setup.tiny}
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.trial", json.dumps(settings)],
        capture_output=True,
        text=True,
        timeout=1800,
        cwd=REPO,
    )
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-2000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def measure(settings: dict) -> dict:
    """In the fresh process: one arcface class3 trial of sweeps/default.yaml (tiny: 32 px, one
    epoch, mobilenet_v2), then every scorer timed on features of that trial's real sizes."""
    from lightning_ad.sweep.spec import SweepSpec
    from lightning_ad.train import run_trial

    fixed = SweepSpec.load(REPO / "sweeps" / "default.yaml").fixed
    if settings["tiny"]:
        fixed |= {"image_size": 32, "score_image_size": 32, "epochs": 1, "pretrained": "false"}
    config = TrialConfig(
        **fixed,
        category="screw",
        backbone="mobilenet_v2" if settings["tiny"] else "efficientnet_lite0",
        head="arcface",
        classes=3,
        data_root=settings["data_root"],
    )
    with tempfile.TemporaryDirectory() as tmp:
        result = run_trial(config, tracking_uri=f"sqlite:///{tmp}/mlflow.db", progress_bar=False)
    # The trial's own peak, before the scorer timings below allocate features of their own.
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    dm = AnomalyDataModule(Path(settings["data_root"]) / "screw", config.data)
    dm.setup("fit")
    cache = sum(
        d.images.nbytes
        for d in (dm.train_set, dm.val_set, dm.good_set, dm.val_good_set, dm.test_set)
    )
    return {
        "trial_seconds": result.seconds,
        **_time_scorers(config, len(dm.good_set), len(dm.test_set)),
        "peak_rss_mb": peak,
        "image_cache_mb": cache / 2**20,
    }


def _time_scorers(config: TrialConfig, n_good: int, n_test: int) -> dict[str, float]:
    """The scorers on random features of the trial's sizes: embeddings (lof, knn, prob), and
    patch features at the scoring size (PatchCore, its maps and their pixel metrics)."""
    from lightning_ad import metrics
    from lightning_ad.models import patchcore, scoring
    from lightning_ad.models.backbones import build_backbone

    rng = np.random.default_rng(0)
    dim = 1280
    train, test = rng.normal(size=(n_good, dim)), rng.normal(size=(n_test, dim))
    t0 = time.perf_counter()
    scoring.lof_scores(train, test)
    scoring.knn_scores(train, test)
    torch.softmax(torch.from_numpy(test[:, :3]), dim=1)  # prob: one softmax over the head's logits
    cheap = time.perf_counter() - t0

    channels = build_backbone(config.backbone, pretrained="false").patch_channels
    side, grid = config.data.scoring_size, config.data.scoring_size // 8
    good_patches = torch.randn(n_good, channels, grid, grid)
    test_patches = torch.randn(n_test, channels, grid, grid)
    masks = np.zeros((n_test, side, side), bool)
    masks[n_test // 4 :, side // 3 : side // 2, side // 3 : side // 2] = True
    t0 = time.perf_counter()
    bank = patchcore.MemoryBank(config.coreset_fraction, config.seed).fit(good_patches)
    distances = bank.distances(test_patches)
    maps = patchcore.anomaly_maps(distances, side).numpy()
    metrics.pixel_auroc(maps, masks)
    metrics.aupro(maps, masks)
    return {"cheap_seconds": cheap, "patchcore_seconds": time.perf_counter() - t0}


if __name__ == "__main__":
    print(json.dumps(measure(json.loads(sys.argv[1]))))
