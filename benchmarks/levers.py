"""The resolution and fine-tuning levers of issue 12, side by side on the built-in categories.

Each lever is one set of TrialConfig overrides; every lever runs on every category with the same
seeds, so a row compares like with like. Prints a Markdown table (image AUROC of the patch and
kNN scorers, pixel AUROC, AUPRO, seconds) and writes every trial's numbers as CSV.

    python -m benchmarks.levers [--categories screw,grid,transistor] [--seeds 0]
        [--levers frozen-96,frozen-256,...] [--out reports/levers]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import pandas as pd

from lightning_ad.config import TrialConfig
from lightning_ad.train import run_trial

BASE = {
    "backbone": "efficientnet_lite0",
    "image_size": 96,
    "epochs": 3,
    "score": "patch",
    "artifacts": "minimal",
}
LEVERS: dict[str, dict] = {
    "frozen-96": {"head": "none"},
    "frozen-256": {"head": "none", "score_image_size": 256},
    "arcface3-96": {"head": "arcface", "classes": 3},
    "arcface3-256": {"head": "arcface", "classes": 3, "score_image_size": 256},
    "arcface3-256-backbone-lr-1e-5": {
        "head": "arcface",
        "classes": 3,
        "score_image_size": 256,
        "backbone_lr": 1e-5,
    },
    "arcface3-128-train-256-score": {
        "head": "arcface",
        "classes": 3,
        "image_size": 128,
        "score_image_size": 256,
    },
    "lite1-frozen-256": {"head": "none", "backbone": "efficientnet_lite1", "score_image_size": 256},
    "lite2-frozen-256": {"head": "none", "backbone": "efficientnet_lite2", "score_image_size": 256},
}
COLUMNS = {
    "test/auc_patch": "patch AUROC",
    "test/auc_knn": "kNN AUROC",
    "test/pixel_auc": "pixel AUROC",
    "test/aupro": "AUPRO",
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--categories", default="screw,grid,transistor")
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--levers", default=",".join(LEVERS))
    parser.add_argument("--out", type=Path, default=Path("reports/levers"))
    args = parser.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory(prefix="lightning_ad-levers-") as tmp:
        uri = f"sqlite:///{tmp}/mlflow.db"
        for lever in args.levers.split(","):
            for category in args.categories.split(","):
                for seed in map(int, args.seeds.split(",")):
                    config = TrialConfig(**BASE | LEVERS[lever], category=category, seed=seed)
                    result = run_trial(config, tracking_uri=uri, progress_bar=False)
                    row = {"lever": lever, "category": category, "seed": seed}
                    row |= {name: result.metrics.get(key) for key, name in COLUMNS.items()}
                    rows.append(row | {"seconds": round(result.seconds)})
                    print(row | {"seconds": round(result.seconds)}, file=sys.stderr, flush=True)
    table = pd.DataFrame(rows)
    args.out.mkdir(parents=True, exist_ok=True)
    table.to_csv(args.out / "levers.csv", index=False)
    medians = table.groupby(["lever", "category"], sort=False).median(numeric_only=True)
    print(medians.drop(columns="seed").round(3).to_string())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
