"""B10: what a sweep costs per trial besides training, and how that grows with the grid.

The real sweep machinery runs (preflight, the Optuna study and its queue of cells, recovery, the
MLflow parent run and one child run per trial with the usual params, tags, ~30 metrics and the
per-image scores artifact, the medians, the parent's description) with the training replaced by
a no-op that logs plausible metrics at once. A trial's orchestration time is the interval
between the starts of two successive no-op trials: everything the sweep does around a trial.
Only for measurement: the no-op lives here, not in the user's command line.

    python benchmarks/run.py --only B10            # grids of 100 and 1,000 cells
    LIGHTNING_AD_B10_CELLS=100,1000,10000 python benchmarks/run.py --only B10
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.harness import Row, Setup, benchmark
from lightning_ad import tracking
from lightning_ad.config import TrialConfig
from lightning_ad.sweep import objective
from lightning_ad.sweep.runner import run_sweep
from lightning_ad.sweep.spec import SweepSpec, SweepTarget
from lightning_ad.train import TrialResult

GOAL_MEDIAN_S = 0.15
GOAL_GROWTH = 1.5
METRICS = 30


class NoOpTrials:
    """``objective.run_trial`` replaced: one MLflow run as ``train.run_trial`` leaves it, no
    training; the start of every call timed."""

    def __init__(self) -> None:
        self.starts: list[float] = []
        self.rss: list[int] = []
        self.rng = np.random.default_rng(0)

    def __call__(
        self, config: TrialConfig, uri: str, experiment: str, tags=None, **_
    ) -> TrialResult:
        self.starts.append(time.perf_counter())
        self.rss.append(_rss_bytes())
        client = tracking.client(uri)
        experiment_id = tracking.ensure_experiment(experiment, uri)
        run = client.create_run(experiment_id, tags={"dataset": "synthetic", **(tags or {})})
        metrics = {"test/auc": float(self.rng.uniform(0.5, 1.0))}
        metrics |= {f"test/auc_x{i}": float(self.rng.uniform(0.5, 1.0)) for i in range(METRICS)}
        from mlflow.entities import Metric, Param

        now = int(time.time() * 1000)
        client.log_batch(
            run.info.run_id,
            metrics=[Metric(k, v, now, 0) for k, v in metrics.items()],
            params=[Param(k, str(v)) for k, v in config.params().items()],
        )
        self._log_scores(client, run.info.run_id)
        client.set_tag(run.info.run_id, tracking.COMPLETE_TAG, "true")
        client.set_terminated(run.info.run_id, "FINISHED")
        return TrialResult(run.info.run_id, metrics, 0.0, 0.5)

    def _log_scores(self, client, run_id: str) -> None:
        labels = np.r_[np.zeros(10, int), np.ones(10, int)]
        rows = ["image,defect,label,knn"] + [
            f"test/{'good' if y == 0 else 'x'}/{i:03d}.png,{'good' if y == 0 else 'x'},{y},"
            f"{self.rng.random() + y:.4f}"
            for i, y in enumerate(labels)
        ]
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "test_scores.csv"
            path.write_text("\n".join(rows) + "\n")
            client.log_artifact(run_id, str(path), artifact_path="scores")


def _rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def measure(cells: int, data_root: Path) -> dict[str, float]:
    """One sweep of ``cells`` no-op cells on fresh local stores: orchestration seconds per
    trial (median, p95), the sweep's wall time, ``table`` time, and the RSS growth."""
    spec = SweepSpec.from_dict(
        {
            "grid": {
                "category": ["screw"],
                "backbone": ["mobilenet_v2"],
                "head": ["arcface"],
                "classes": [2],
                "seed": list(range(cells)),
            },
            "fixed": {"pretrained": "false", "image_size": 32},
        },
        default_name=f"noop{cells}",
    )
    noop = NoOpTrials()
    real = objective.run_trial
    with tempfile.TemporaryDirectory(prefix="bench-b10-") as tmp:
        target = SweepTarget(
            spec.with_category("screw"),
            "screw",
            storage=str(Path(tmp) / "optuna.journal"),
            tracking_uri=f"sqlite:///{Path(tmp) / 'mlflow.db'}",
            data_root=str(data_root),
            reports_dir=str(Path(tmp) / "reports"),
        )
        objective.run_trial = noop
        try:
            t0 = time.perf_counter()
            outcome = run_sweep(target, show_progress=False)
            wall = time.perf_counter() - t0
        finally:
            objective.run_trial = real
        assert outcome.status.all_complete, outcome.status
        table = _table_seconds(target)
    intervals = np.diff(noop.starts)
    early = noop.rss[min(100, len(noop.rss)) - 1]
    return {
        "median": float(np.median(intervals)),
        "p95": float(np.percentile(intervals, 95)),
        "wall": wall,
        "table": table,
        "rss_growth": noop.rss[-1] / early,
    }


def _table_seconds(target: SweepTarget) -> float:
    from lightning_ad import report

    tracking._read_test_scores.cache_clear()  # a fresh ``lightning-ad table`` process
    t0 = time.perf_counter()
    trials = report.fetch_trials(
        target.tracking_uri, target.experiment, target.spec, target.fingerprint
    )
    report.summary_text(trials, target.spec)
    return time.perf_counter() - t0


@benchmark("B10", default=False)
def orchestration(setup: Setup) -> Row:
    sizes = os.environ.get("LIGHTNING_AD_B10_CELLS", "10,30" if setup.tiny else "100,1000")
    cells = [int(n) for n in sizes.split(",")]
    results = {n: measure(n, setup.data_root) for n in cells}
    first, last = results[cells[0]], results[cells[-1]]
    growth = last["median"] / first["median"]
    detail = "; ".join(
        f"{n} cells: median {r['median']:.3f} s, p95 {r['p95']:.3f} s, wall {r['wall']:.0f} s, "
        f"table {r['table']:.1f} s, RSS x{r['rss_growth']:.2f}"
        for n, r in results.items()
    )
    return Row(
        "B10",
        "orchestration per no-op trial, local stores, 1 worker",
        f"median <= {GOAL_MEDIAN_S} s at the largest grid, growth <= {GOAL_GROWTH}x",
        f"{detail}; growth {growth:.2f}x",
        last["median"],
        min(r["median"] for r in results.values()),
        max(r["median"] for r in results.values()),
        last["median"] <= GOAL_MEDIAN_S and growth <= GOAL_GROWTH,
    )
