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
from collections.abc import Iterator
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
from lightning_ad.train import TrialResult, run_trial

LEVER = "arcface3-patch-head-x4"
TOP_K = (1, 3, 5, 10, 20, 50)
"""Patches averaged per image; 1 is the largest patch (the scorers' current reduction)."""


def top_k_mean(grid: np.ndarray, k: int) -> np.ndarray:
    """(N, h, w) -> (N,): the mean of each image's ``k`` largest patch values."""
    flat = grid.reshape(len(grid), -1)
    return np.sort(flat, axis=1)[:, -k:].mean(axis=1)


def test_features(
    run_id: str, tracking_uri: str, category: Path
) -> tuple[scoring.Features, np.ndarray]:
    """The trial's logged detector on the category's test images: what its scorers read
    (:class:`~lightning_ad.models.scoring.Features`), and the images' 0/1 labels."""
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
    return scored, np.array([s.label for s in samples])


def patch_head_trials(
    category: str, seeds: list[int]
) -> Iterator[tuple[int, TrialResult, scoring.Features, np.ndarray]]:
    """Train ``LEVER`` on the development ``category`` per seed, into a store of its own;
    yield each seed, its trial and its detector's :func:`test_features` with the labels."""
    folder = generate_category(category, DEV_ROOT, seed=DEV_RENDER_SEED)
    with tempfile.TemporaryDirectory(prefix="lightning_ad-patch-head-") as tmp:
        uri = f"sqlite:///{tmp}/mlflow.db"
        for seed in seeds:
            settings = BASE | LEVERS[LEVER] | {"log_model": True}
            config = TrialConfig(**settings, category=category, seed=seed, data_root=str(DEV_ROOT))
            result = run_trial(config, tracking_uri=uri, progress_bar=False)
            yield seed, result, *test_features(result.run_id, uri, folder)


def study_arguments(doc: str, out: str, argv: list[str] | None) -> argparse.Namespace:
    """A development study's command line: ``--category``, ``--seeds`` (a list of ints),
    ``--out``."""
    parser = argparse.ArgumentParser(description=doc)
    parser.add_argument("--category", default="screw")
    parser.add_argument("--seeds", default="0,1,2", type=lambda s: [int(x) for x in s.split(",")])
    parser.add_argument("--out", type=Path, default=Path(out))
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Train, reduce every way, print the medians and write ``topk.csv``; returns 0."""
    args = study_arguments(__doc__, "reports/topk", argv)
    rows = []
    for seed, result, features, labels in patch_head_trials(args.category, args.seeds):
        named = {n: scoring.SCORERS[n].grid(features) for n in ("twinseg", "patch-twinseg")}
        for scorer, grid in named.items():
            # k = 1 is the scorers' own reduction: it must reproduce the logged AUROC.
            logged = result.metrics[f"test/auc_{scorer}"]
            assert np.isclose(metrics.auroc(labels, top_k_mean(grid, 1)), logged), scorer
            for k in TOP_K:
                auc = metrics.auroc(labels, top_k_mean(grid, k))
                rows.append({"seed": seed, "scorer": scorer, "k": k, "AUROC": auc})
        print(seed, rows[-len(TOP_K) * len(named) :], file=sys.stderr, flush=True)
    table = pd.DataFrame(rows)
    args.out.mkdir(parents=True, exist_ok=True)
    table.to_csv(args.out / "topk.csv", index=False)
    summary = table.groupby(["scorer", "k"])["AUROC"].agg(["median", "min", "max"])
    print(summary.round(3).to_string())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
