"""How hard each built-in category is, per defect type, on the development split.

For every defect type: the mask's share of the image; the median over its images of the
median |defect - clean scene| over the pixels the defect changed (above the category's mask
threshold); the defect's contrast, the same median of |defect - clean scene| divided by the
normals' own variation at each pixel (the per-pixel standard deviation over the train split's
normals, plus one grey level: what a detector must see past; a part that lies anywhere, like
the screw, varies at every pixel it may cover); and frozen PatchCore's image AUROC and AUPRO
on that defect type (the default sweep's frozen cell, one seed). Never run on the test split:
the renderer's settings are chosen here.

    python -m benchmarks.difficulty [--categories screw,...,vial] [--out reports/difficulty]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from benchmarks.levers import BASE, DEV_RENDER_SEED, DEV_ROOT, LEVERS
from lightning_ad.config import TrialConfig
from lightning_ad.data.synthetic import (
    CATEGORIES,
    SPECS,
    generate_category,
    render_clean,
    render_sample,
)
from lightning_ad.train import run_trial

SIZE = 256
NORMALS = 48
"""Normals whose per-pixel spread is the variation a defect is measured against."""
PER_DEFECT = 10


def contrast(category: str) -> dict[str, dict[str, float]]:
    """Defect type -> mask share and median contrast against the normals' variation."""
    spec = SPECS[category]
    normals = [
        render_sample(spec, DEV_RENDER_SEED, "train/good", i, SIZE)[0] for i in range(NORMALS)
    ]
    spread = np.stack(normals).astype(np.float32).std(axis=0).max(axis=2) + 1.0
    rows = {}
    for defect, count in spec.defect_counts.items():
        folder = f"test/{defect}"
        ratios, deltas, areas = [], [], []
        for i in range(min(count, PER_DEFECT)):
            image, mask = render_sample(spec, DEV_RENDER_SEED, folder, i, SIZE)
            clean = render_clean(spec, DEV_RENDER_SEED, folder, i, SIZE)
            delta = np.abs(image.astype(np.float32) - clean).max(axis=2)
            changed = delta > spec.mask_threshold
            if not changed.any():  # a defect that changed nothing visible at this size
                continue
            deltas.append(np.median(delta[changed]))
            ratios.append(np.median(delta[changed] / spread[changed]))
            areas.append(mask.mean())
        rows[defect] = {
            "mask %": 100 * float(np.median(areas)),
            "median |delta|": float(np.median(deltas)),
            "contrast": float(np.median(ratios)),
        }
    return rows


def frozen_patchcore(category: str, tracking_uri: str) -> dict[str, dict[str, float]]:
    """Defect type -> frozen PatchCore's image AUROC and AUPRO, and the same for ``all``."""
    generate_category(category, DEV_ROOT, seed=DEV_RENDER_SEED)
    config = TrialConfig(**BASE | LEVERS["frozen-256"], category=category, data_root=str(DEV_ROOT))
    metrics = run_trial(config, tracking_uri=tracking_uri, progress_bar=False).metrics
    out = {"all": {"AUROC": metrics["test/auc"], "AUPRO": metrics["test/aupro"]}}
    for defect in SPECS[category].defect_counts:
        out[defect] = {
            "AUROC": metrics[f"test/auc/{defect}"],
            "AUPRO": metrics[f"test/aupro/{defect}"],
        }
    return out


def markdown(table: pd.DataFrame) -> str:
    """``table`` as a GitHub markdown table, numbers to three decimals, blanks for none."""
    cells = table.map(lambda v: "" if pd.isna(v) else f"{v:.3f}" if isinstance(v, float) else v)
    lines = ["| " + " | ".join(table.columns) + " |", "|" + "---|" * len(table.columns)]
    return "\n".join(lines + ["| " + " | ".join(map(str, row)) + " |" for row in cells.values])


def main(argv: list[str] | None = None) -> int:
    """Measure every category, print the table and write ``difficulty.csv``; returns 0."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--categories", default=",".join(CATEGORIES))
    parser.add_argument("--out", type=Path, default=Path("reports/difficulty"))
    args = parser.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory(prefix="lightning_ad-difficulty-") as tmp:
        for category in args.categories.split(","):
            scores = frozen_patchcore(category, f"sqlite:///{tmp}/mlflow.db")
            rows.append({"category": category, "defect": "all", **scores["all"]})
            for defect, values in contrast(category).items():
                rows.append({"category": category, "defect": defect, **values, **scores[defect]})
    table = pd.DataFrame(rows)
    args.out.mkdir(parents=True, exist_ok=True)
    table.to_csv(args.out / "difficulty.csv", index=False)
    print(markdown(table))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
