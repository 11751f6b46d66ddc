"""The recipe's levers side by side on the built-in categories' development split.

Each lever is one set of TrialConfig overrides; every lever runs on every category with the same
seeds, so a row compares like with like. Prints a table (image AUROC of the patch and kNN
scorers, PatchCore's pixel AUROC and AUPRO, the patch head's image AUROC, pixel AUROC and
AUPRO where it has one, the detector's detection and false-alarm rates, seconds) and writes
every trial's numbers as CSV.

Settings are chosen here, on the development split (the same renderer, another seed: new
scenes, rendered on first use), never on the test images the README's results report.

    python -m benchmarks.levers [--categories screw,grid,transistor] [--seeds 0]
        [--levers frozen-96,frozen-256,...] [--data-root data/synthetic-dev] [--out reports/levers]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import pandas as pd

from lightning_ad.config import TrialConfig
from lightning_ad.data.synthetic import generate_category
from lightning_ad.train import run_trial

DEV_ROOT = Path("data/synthetic-dev")
DEV_RENDER_SEED = 1
"""The development split: the built-in renderer's scenes for this seed (the test split's are
seed 0's)."""

BASE = {  # sweeps/default.yaml's fixed settings
    "backbone": "efficientnet_lite0",
    "image_size": 96,
    "score_image_size": 256,
    "epochs": 3,
    "backbone_lr": 1e-5,
    "score": "patch",
    "coreset_fraction": 0.01,
    "artifacts": "minimal",
    "log_model": False,
}
PATCH_HEAD = {"patch_head_weight": 1.0, "score": "twinseg"}
PATCH_HEAD_X4 = {**PATCH_HEAD, "samples_per_epoch": 1024}  # 4x the default's 256 per epoch
LEVERS: dict[str, dict] = {
    "frozen-96": {"head": "none", "score_image_size": 96},
    "frozen-256": {"head": "none"},
    "arcface2": {"head": "arcface", "classes": 2},
    "arcface3": {"head": "arcface", "classes": 3},
    "arcface3-backbone-lr-1e-4": {"head": "arcface", "classes": 3, "backbone_lr": 1e-4},
    "arcface3-bn-train": {"head": "arcface", "classes": 3, "bn_mode": "train"},
    "arcface3-train-128": {"head": "arcface", "classes": 3, "image_size": 128},
    "lite1-frozen-256": {"head": "none", "backbone": "efficientnet_lite1"},
    "lite2-frozen-256": {"head": "none", "backbone": "efficientnet_lite2"},
    "arcface2-patch-head": {"head": "arcface", "classes": 2, **PATCH_HEAD},
    "arcface3-patch-head": {"head": "arcface", "classes": 3, **PATCH_HEAD},
    "arcface3-patch-head-x4": {"head": "arcface", "classes": 3, **PATCH_HEAD_X4},
    "arcface3-patch-head-x4-lr-1e-2": {
        "head": "arcface",
        "classes": 3,
        **PATCH_HEAD_X4,
        "patch_head_lr": 1e-2,
    },
    "arcface3-patch-head-x4-backbone-lr-1e-4": {
        "head": "arcface",
        "classes": 3,
        **PATCH_HEAD_X4,
        "backbone_lr": 1e-4,
    },
    "arcface3-patch-head-x4-backbone-lr-1e-3": {
        "head": "arcface",
        "classes": 3,
        **PATCH_HEAD_X4,
        "backbone_lr": 1e-3,
    },
    "arcface3-patch-head-x16": {
        "head": "arcface",
        "classes": 3,
        **PATCH_HEAD,
        "samples_per_epoch": 4096,
    },
}
COLUMNS = {
    "test/auc_patch": "patch AUROC",
    "test/auc_knn": "kNN AUROC",
    "test/pixel_auc_patch": "pixel AUROC",
    "test/aupro_patch": "AUPRO",
    "test/auc_twinseg": "twinseg AUROC",
    "test/pixel_auc_twinseg": "twinseg pixel AUROC",
    "test/aupro_twinseg": "twinseg AUPRO",
    "test/auc_patch-twinseg": "patch-twinseg AUROC",
    "test/aupro_patch-twinseg": "patch-twinseg AUPRO",
    "test/detection_rate": "detected",
    "test/false_alarm_rate": "false alarms",
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--categories", default="screw,grid,transistor")
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--levers", default=",".join(LEVERS))
    parser.add_argument("--data-root", type=Path, default=DEV_ROOT)
    parser.add_argument("--out", type=Path, default=Path("reports/levers"))
    args = parser.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory(prefix="lightning_ad-levers-") as tmp:
        uri = f"sqlite:///{tmp}/mlflow.db"
        for lever in args.levers.split(","):
            for category in args.categories.split(","):
                if args.data_root == DEV_ROOT:
                    generate_category(category, DEV_ROOT, seed=DEV_RENDER_SEED)
                for seed in map(int, args.seeds.split(",")):
                    config = TrialConfig(
                        **BASE | LEVERS[lever],
                        category=category,
                        seed=seed,
                        data_root=str(args.data_root),
                    )
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
