"""How much of the patch head's map ``patch-twinseg`` should add to PatchCore's, compared on the
development split: ``z(PatchCore) + w * z(twinseg)``, each grid standardised on the validation
normals' patches as the scorer does (``w = scoring.TWINSEG_WEIGHT`` is ``patch-twinseg``,
``w = 0`` PatchCore).

Trains the patch-head lever (``arcface3-patch-head-x4``) per seed on the development screw,
loads each trial's logged detector back and scores the development test images with every
weight, so the weights are compared on the same networks: image AUROC (largest patch) and
AUPRO of the maps.

    python -m benchmarks.map_weight [--category screw] [--seeds 0,1,2] [--out reports/map_weight]
"""

from __future__ import annotations

import sys

import numpy as np
import pandas as pd

from benchmarks.levers import BASE, DEV_RENDER_SEED, DEV_ROOT
from benchmarks.topk import patch_head_trials, study_arguments
from lightning_ad import metrics
from lightning_ad.data.datamodule import load_masks
from lightning_ad.data.mvtec import MVTecCategory
from lightning_ad.data.synthetic import generate_category
from lightning_ad.models import scoring
from lightning_ad.models.detector import anomaly_maps

WEIGHTS = (0.0, 0.25, 0.5, 1.0, 2.0, 4.0)
"""The patch head's weights beside PatchCore's; 1 was ``patch-twinseg``'s before this study."""


def main(argv: list[str] | None = None) -> int:
    """Train, weigh every way, print the medians and write ``map_weight.csv``; returns 0."""
    args = study_arguments(__doc__, "reports/map_weight", argv)
    samples = MVTecCategory.load(
        generate_category(args.category, DEV_ROOT, seed=DEV_RENDER_SEED)
    ).test
    masks = load_masks(tuple(s.mask_path for s in samples), BASE["score_image_size"])
    rows = []
    for seed, result, features, labels in patch_head_trials(args.category, args.seeds):
        patch, twinseg = (scoring.standardised(features, g) for g in scoring.STANDARDISED_GRIDS)
        for weight in WEIGHTS:
            grid = patch + weight * twinseg
            auc = metrics.auroc(labels, scoring.largest(grid))
            aupro = metrics.aupro(anomaly_maps(grid, masks.shape[-1]), masks)
            rows.append({"seed": seed, "weight": weight, "AUROC": auc, "AUPRO": aupro})
        # Two weights are the trial's own scorers: they must reproduce its metrics.
        for weight, scorer in ((0.0, "patch"), (scoring.TWINSEG_WEIGHT, "patch-twinseg")):
            [row] = [r for r in rows[-len(WEIGHTS) :] if r["weight"] == weight]
            for name, metric in (("AUROC", "auc"), ("AUPRO", "aupro")):
                logged = result.metrics[f"test/{metric}_{scorer}"]
                assert np.isclose(row[name], logged, atol=1e-4), (scorer, name)
        print(seed, rows[-len(WEIGHTS) :], file=sys.stderr, flush=True)
    table = pd.DataFrame(rows)
    args.out.mkdir(parents=True, exist_ok=True)
    table.to_csv(args.out / "map_weight.csv", index=False)
    summary = table.groupby("weight")[["AUROC", "AUPRO"]].agg(["median", "min", "max"])
    print(summary.round(3).to_string())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
