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
    share = 100 * probe["scoring_seconds"] / probe["trial_seconds"]
    b4 = Row(
        "B4",
        "fitting + applying lof, knn, prob / whole trial",
        "<= 3 %",
        f"{share:.2f} % ({probe['scoring_seconds']:.2f} s of {probe['trial_seconds']:.0f} s)",
        share,
        share,
        share,
        share <= 3,
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
    settings = {
        "data_root": str(setup.data_root),
        "image_size": setup.image_size,
        "epochs": 1 if setup.tiny else 3,
        "tiny": setup.tiny,
    }
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
    """In the fresh process: the trial, then the scorers timed on embeddings of its sizes."""
    from lightning_ad import scoring
    from lightning_ad.train import run_trial

    config = TrialConfig(
        category="screw",
        backbone="mobilenet_v2" if settings["tiny"] else "efficientnet_lite0",
        head="arcface",
        classes=3,
        epochs=settings["epochs"],
        image_size=settings["image_size"],
        data_root=settings["data_root"],
        artifacts="minimal",
        pretrained="false" if settings["tiny"] else "auto",
    )
    with tempfile.TemporaryDirectory() as tmp:
        result = run_trial(config, tracking_uri=f"sqlite:///{tmp}/mlflow.db", progress_bar=False)
    dm = AnomalyDataModule(Path(settings["data_root"]) / "screw", image_size=settings["image_size"])
    dm.setup("fit")
    cache = dm.train_set.images.nbytes + dm.val_set.images.nbytes + dm.test_set.images.nbytes
    # The scorers on embeddings of the trial's real sizes: all train/good images and the test split.
    dim = 1280
    rng = np.random.default_rng(0)
    train, test = rng.normal(size=(len(dm.good_set), dim)), rng.normal(size=(len(dm.test_set), dim))
    t0 = time.perf_counter()
    scoring.lof_scores(train, test)
    scoring.knn_scores(train, test)
    torch.softmax(torch.from_numpy(test[:, :3]), dim=1)  # prob: one softmax over the head's logits
    return {
        "trial_seconds": result.seconds,
        "scoring_seconds": time.perf_counter() - t0,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "image_cache_mb": cache / 2**20,
    }


if __name__ == "__main__":
    print(json.dumps(measure(json.loads(sys.argv[1]))))
