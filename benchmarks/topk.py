"""How a map scorer turns its patch grid into an image score, compared on the development split:
the largest patch (what ``twinseg`` and ``patch-twinseg`` do) against the mean of the k largest.

Trains the patch-head lever (``arcface3-patch-head-x4``) per seed on the development screw,
loads each trial's logged detector back, and scores the development test images with every
reduction of both grids, so the reductions are compared on the same networks.

    python -m benchmarks.topk [--category screw] [--seeds 0,1,2] [--out reports/topk]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from benchmarks.levers import BASE, DEV_RENDER_SEED, DEV_ROOT, LEVERS
from lightning_ad import metrics
from lightning_ad.config import TrialConfig
from lightning_ad.data.mvtec import MVTecCategory, read_image
from lightning_ad.data.synthetic import generate_category
from lightning_ad.deploy.predict import load_detector
from lightning_ad.models import scoring
from lightning_ad.train import run_trial

LEVER = "arcface3-patch-head-x4"
TOP_K = (1, 3, 5, 10, 20, 50)
"""Patches averaged per image; 1 is the largest patch (the scorers' current reduction)."""


def top_k_mean(grid: np.ndarray, k: int) -> np.ndarray:
    """(N, h, w) -> (N,): the mean of each image's ``k`` largest patch values."""
    flat = grid.reshape(len(grid), -1)
    return np.sort(flat, axis=1)[:, -k:].mean(axis=1)


def grids(
    run_id: str, tracking_uri: str, category: Path
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """The trial's detector on the category's test images: each map scorer's patch grid
    (N, h, w) by name, and the images' 0/1 labels."""
    detector = load_detector(f"runs:/{run_id}/model", tracking_uri)
    samples = MVTecCategory.load(category).test
    features: dict[str, list[np.ndarray]] = {}
    for start in range(0, len(samples), 16):
        batch = [
            detector.prepare(read_image(s.path), str(s.path)) for s in samples[start : start + 16]
        ]
        images = torch.from_numpy(np.stack(batch).transpose(0, 3, 1, 2).copy())
        for key, value in detector.features(images).items():
            features.setdefault(key, []).append(value.float().cpu().numpy())
    scored = detector.scoring_features({k: np.concatenate(v) for k, v in features.items()})
    named = {name: scoring.SCORERS[name].grid(scored) for name in ("twinseg", "patch-twinseg")}
    return named, np.array([s.label for s in samples])


def main(argv: list[str] | None = None) -> int:
    """Train, reduce every way, print the medians and write ``topk.csv``; returns 0."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--category", default="screw")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--out", type=Path, default=Path("reports/topk"))
    args = parser.parse_args(argv)
    folder = generate_category(args.category, DEV_ROOT, seed=DEV_RENDER_SEED)
    rows = []
    with tempfile.TemporaryDirectory(prefix="lightning_ad-topk-") as tmp:
        uri = f"sqlite:///{tmp}/mlflow.db"
        for seed in map(int, args.seeds.split(",")):
            settings = BASE | LEVERS[LEVER] | {"log_model": True}
            config = TrialConfig(
                **settings, category=args.category, seed=seed, data_root=str(DEV_ROOT)
            )
            result = run_trial(config, tracking_uri=uri, progress_bar=False)
            named, labels = grids(result.run_id, uri, folder)
            for scorer, grid in named.items():
                for k in TOP_K:
                    auc = metrics.auroc(labels, top_k_mean(grid, k))
                    rows.append({"seed": seed, "scorer": scorer, "k": k, "AUROC": auc})
            # k = 1 is the scorers' own reduction: it must reproduce the trial's logged AUROC.
            for scorer, grid in named.items():
                logged = result.metrics[f"test/auc_{scorer}"]
                assert np.isclose(metrics.auroc(labels, top_k_mean(grid, 1)), logged), scorer
            print(seed, rows[-len(TOP_K) * len(named) :], file=sys.stderr, flush=True)
    table = pd.DataFrame(rows)
    args.out.mkdir(parents=True, exist_ok=True)
    table.to_csv(args.out / "topk.csv", index=False)
    summary = table.groupby(["scorer", "k"])["AUROC"].agg(["median", "min", "max"])
    print(summary.round(3).to_string())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
