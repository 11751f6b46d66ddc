"""B10: what a sweep costs per trial besides training, and how that grows with the grid.

The real sweep machinery runs (preflight, the Optuna study and its queue of cells, recovery, the
MLflow parent run and one child run per trial with the usual params, tags, ~30 metrics and the
per-image scores artifact, the medians, the parent's description) with the training replaced by
a no-op that logs plausible metrics at once (``tests.fakes.NoOpTrials``, given to ``run_sweep``
as its trial runner). A trial's orchestration time is the interval between the starts of two
successive no-op trials of one worker: everything the sweep does around a trial. Only for
measurement: the no-op lives with the tests, not in the user's command line.

    python benchmarks/run.py --only B10            # local stores, grids of 100 and 1,000 cells
    LIGHTNING_AD_B10_CELLS=100,10000 python benchmarks/run.py --only B10
    LIGHTNING_AD_B10_STORES=postgres LIGHTNING_AD_B10_WORKERS=4 python benchmarks/run.py --only B10

On PostgreSQL + ``mlflow server`` (what ``lightning-ad services`` starts; a fresh pair per grid)
the row also times the MLflow UI's pages over the finished sweep (the REST calls the run page
of the parent run and the experiment page make), and counts the server's connections to the
Optuna database while the sweep runs: at most ``RDB_CONNECTIONS`` per process (one storage, one
pool each), so ``LIGHTNING_AD_B10_WORKERS=16`` stays under 17 x 4 = 68.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from benchmarks.harness import Row, Setup, benchmark
from lightning_ad import tracking
from lightning_ad.sweep import parent as parent_module
from lightning_ad.sweep import runner
from lightning_ad.sweep.parent import SweepParent
from lightning_ad.sweep.recovery import trial_count
from lightning_ad.sweep.runner import run_sweep
from lightning_ad.sweep.spec import SweepSpec, SweepTarget
from lightning_ad.sweep.storage import RDB_CONNECTIONS
from lightning_ad.sweep.study import load_study
from tests.fakes import NoOpTrials, rss_bytes

GOAL_MEDIAN_S = 0.15
GOAL_GROWTH = 1.5
GOAL_TABLE_S = 30.0
GOAL_RSS_GROWTH = 1.10
STARTS = "noop-starts-{pid}.json"
"""What each worker process leaves in the sweep's reports folder: its no-op trials' starts."""
DESCRIBED = "described-{pid}.json"
"""What each description process leaves there: its RSS at its start and its peak. Spawned by
this benchmark, it imports what this benchmark imports (torch, ~1 GB), unlike one spawned by
``lightning-ad sweep``; its growth over its start is what the description itself costs."""


def _peak_rss_bytes() -> int:
    """This process's peak RSS since it started (``VmHWM``; ``ru_maxrss`` would carry the
    high-water mark of the process that forked it across the exec)."""
    with open("/proc/self/status") as status:
        [line] = [line for line in status if line.startswith("VmHWM:")]
    return int(line.split()[1]) * 1024


def measure(
    cells: int, data_root: Path, stores: str = "local", workers: int = 1
) -> dict[str, float]:
    """One sweep of ``cells`` no-op cells on fresh ``stores`` (``local``: journal + SQLite;
    ``postgres``: PostgreSQL + ``mlflow server``) with ``workers`` processes: orchestration
    seconds per trial (median, p95), the sweep's wall time, ``table`` time, the RSS growth of
    the worker with the most trials from its 100th trial to its last, the largest peak RSS of
    a description process and its largest growth over its start (0: none ran), and on
    ``postgres`` the UI's page load."""
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
    with (
        tempfile.TemporaryDirectory(prefix="bench-b10-") as tmp,
        _stores(stores, Path(tmp)) as (
            storage,
            tracking_uri,
        ),
    ):
        target = SweepTarget(
            spec.with_category("screw"),
            "screw",
            storage=storage,
            tracking_uri=tracking_uri,
            data_root=str(data_root),
            reports_dir=str(Path(tmp) / "reports"),
        )
        Path(target.reports).mkdir(parents=True, exist_ok=True)
        with _noop_workers(target.reports) as noop, _connections(stores, storage) as connections:
            t0 = time.perf_counter()
            outcome = run_sweep(target, workers=workers, show_progress=False, train=noop)
            wall = time.perf_counter() - t0
        assert outcome.status.all_complete, outcome.status
        result = _trial_times(target.reports, workers)
        result |= {"wall": wall, "table": _table_seconds(target)}
        result |= _exactly_once(target)
        if stores == "postgres":
            result["ui"] = _ui_seconds(target)
            result["connections"] = max(connections, default=0)
    return result


@contextlib.contextmanager
def _connections(stores: str, storage: str) -> Iterator[list[int]]:
    """The PostgreSQL server's connections to the Optuna database while the block runs (on the
    local stores: none)."""
    if stores != "postgres":
        yield []
        return
    from lightning_ad.services import sampled_connections

    with sampled_connections(storage) as counts:
        yield counts


@contextlib.contextmanager
def _stores(stores: str, root: Path) -> Iterator[tuple[str, str]]:
    """(Optuna storage, MLflow tracking URI) of fresh ``stores`` under ``root``."""
    if stores == "local":
        yield str(root / "optuna.journal"), f"sqlite:///{root / 'mlflow.db'}"
        return
    from lightning_ad.services import free_port, local_services

    root.chmod(0o755)  # PostgreSQL runs as "postgres": its folder below must be reachable
    with local_services(root / "services", free_port()) as services:
        yield services.storage, services.tracking_uri


@contextlib.contextmanager
def _noop_workers(reports: Path) -> Iterator[NoOpTrials]:
    """The no-op trial runner to give ``run_sweep``; every worker, in this process or a spawned
    one (which gets a copy of it), leaves its no-op trials' starts in ``reports``."""
    real_worker, real_describe = runner._worker_process, parent_module._describe
    noop = NoOpTrials()
    runner._worker_process = _noop_worker_process
    parent_module._describe = _measured_describe
    try:
        yield noop
    finally:
        runner._worker_process = real_worker
        parent_module._describe = real_describe
        if noop.starts:  # one worker, this process
            noop.save(reports / STARTS.format(pid=os.getpid()))


def _noop_worker_process(
    parent: SweepParent, first_trial: int, threads: int, train: NoOpTrials
) -> None:
    """``runner._worker_process``, then its copy of the no-op's starts saved (a spawned process
    imports ``runner`` afresh, so the real worker function is the one it calls)."""
    try:
        runner._worker_process(parent, first_trial, threads, train)
    finally:
        train.save(Path(parent.target.reports) / STARTS.format(pid=os.getpid()))


def _measured_describe(target: SweepTarget, run_id: str, *args) -> None:
    """``parent._describe`` (the body of a description process), leaving its peak RSS in the
    reports folder (a spawned process imports ``parent`` afresh: the real one is what it
    calls)."""
    start_mb = rss_bytes() / 2**20
    try:
        parent_module._describe(target, run_id, *args)
    finally:
        peak_mb = _peak_rss_bytes() / 2**20
        path = Path(target.reports) / DESCRIBED.format(pid=os.getpid())
        path.write_text(json.dumps({"start_mb": start_mb, "peak_mb": peak_mb}))


def _trial_times(reports: Path, started: int) -> dict[str, float]:
    """Median and p95 of the intervals between one worker's successive trial starts, over all
    ``started`` workers (each leaves its file, trials or none); the RSS growth of the worker
    with the most trials; the largest peak RSS of a description process and its largest
    growth over its start (0: none ran)."""
    workers = [json.loads(p.read_text()) for p in reports.glob(STARTS.format(pid="*"))]
    assert len(workers) == started, f"{len(workers)} of {started} workers finished"
    intervals = np.concatenate([np.diff(w["starts"]) for w in workers])
    rss = max(workers, key=lambda w: len(w["rss"]))["rss"]
    described = [json.loads(p.read_text()) for p in reports.glob(DESCRIBED.format(pid="*"))]
    return {
        "describer_mb": max((d["peak_mb"] for d in described), default=0.0),
        "describer_growth_mb": max((d["peak_mb"] - d["start_mb"] for d in described), default=0.0),
        "median": float(np.median(intervals)),
        "p95": float(np.percentile(intervals, 95)),
        "rss_growth": rss[-1] / rss[min(100, len(rss)) - 1],
        "workers": len(workers),
    }


def _exactly_once(target: SweepTarget) -> dict[str, float]:
    """Each cell COMPLETE once in the study and FINISHED once in MLflow; no trial FAILed."""
    from optuna.trial import TrialState

    from lightning_ad import report

    study = load_study(target)
    states = [t.state for t in study.get_trials(deepcopy=False)]
    runs = list(
        tracking.finished_trial_runs(
            target.tracking_uri, target.experiment, target.spec.name, target.fingerprint
        )
    )
    seeds = report.trials_frame(runs)["seed"]
    cells = len(target.spec.runnable_cells())
    assert states.count(TrialState.COMPLETE) == cells and TrialState.FAIL not in states
    assert len(runs) == cells and seeds.nunique() == cells, (len(runs), seeds.nunique())
    return {"trials": trial_count(study)}


def _table_seconds(target: SweepTarget) -> float:
    from lightning_ad import report

    t0 = time.perf_counter()
    trials = report.fetch_trials(
        target.tracking_uri, target.experiment, target.spec, target.fingerprint
    )
    report.summary_text(trials, target.spec)
    return time.perf_counter() - t0


def _ui_seconds(target: SweepTarget) -> float:
    """The REST calls of the MLflow UI's parent-run page (the run, its experiment, artifacts,
    the history of one median metric) and of its experiment page (the first 100 runs, newest
    first), over HTTP, one after another as a browser's first paint waits for them."""
    from lightning_ad import report

    client = tracking.client(target.tracking_uri)
    [parent] = tracking.sweep_parents(
        target.tracking_uri, target.experiment, target.spec.name, target.category
    )
    experiment = parent.info.experiment_id
    metric = report.median_metric("mobilenet_v2", "arcface", "class2")
    api = f"{target.tracking_uri}/ajax-api/2.0/mlflow"
    calls = [
        ("GET", f"runs/get?run_id={parent.info.run_id}", None),
        ("GET", f"experiments/get?experiment_id={experiment}", None),
        ("GET", f"artifacts/list?run_id={parent.info.run_id}", None),
        ("GET", f"metrics/get-history?run_id={parent.info.run_id}&metric_key={metric}", None),
        (
            "POST",
            "runs/search",
            {"experiment_ids": [experiment], "max_results": 100, "order_by": ["start_time DESC"]},
        ),
    ]
    assert client.get_run(parent.info.run_id).data.metrics.get(metric) is not None, metric
    t0 = time.perf_counter()
    for method, path, body in calls:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(
            f"{api}/{path}", data=data, method=method, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=120) as response:
            response.read()
    return time.perf_counter() - t0


@benchmark("B10", default=False)
def orchestration(setup: Setup) -> list[Row]:
    sizes = os.environ.get("LIGHTNING_AD_B10_CELLS", "10,30" if setup.tiny else "100,1000")
    cells = [int(n) for n in sizes.split(",")]
    rows = []
    for stores in os.environ.get("LIGHTNING_AD_B10_STORES", "local").split(","):
        for workers in os.environ.get("LIGHTNING_AD_B10_WORKERS", "1").split(","):
            results = {n: measure(n, setup.data_root, stores, int(workers)) for n in cells}
            rows.append(_row(stores, int(workers), results))
    return rows


def _row(stores: str, workers: int, results: dict[int, dict[str, float]]) -> Row:
    first, last = results[min(results)], results[max(results)]
    growth = last["median"] / first["median"]
    detail = "; ".join(
        f"{n} cells: median {r['median']:.3f} s, p95 {r['p95']:.3f} s, wall {r['wall']:.0f} s, "
        f"table {r['table']:.1f} s, RSS x{r['rss_growth']:.2f}, {r['trials']} trials"
        + (
            f", description process peak {r['describer_mb']:.0f} MB "
            f"(+{r['describer_growth_mb']:.0f} MB over its start)"
            if r["describer_mb"]
            else ""
        )
        + (f", UI {r['ui']:.2f} s" if "ui" in r else "")
        + (
            f", at most {r['connections']} PostgreSQL connections (bound "
            f"{_connection_bound(workers)})"
            if "connections" in r
            else ""
        )
        for n, r in results.items()
    )
    medians = [r["median"] for r in results.values()]
    return Row(
        "B10",
        f"orchestration per no-op trial, {stores} stores, {workers} worker(s)",
        f"median <= {GOAL_MEDIAN_S} s at the largest grid, growth <= {GOAL_GROWTH}x, "
        f"table <= {GOAL_TABLE_S:.0f} s, RSS last / at trial 100 <= {GOAL_RSS_GROWTH}",
        f"{detail}; growth {growth:.2f}x",
        last["median"],
        min(medians),
        max(medians),
        last["median"] <= GOAL_MEDIAN_S
        and growth <= GOAL_GROWTH
        and last["table"] <= GOAL_TABLE_S
        and last["rss_growth"] <= GOAL_RSS_GROWTH
        and last.get("connections", 0) <= _connection_bound(workers),
    )


def _connection_bound(workers: int) -> int:
    """The most connections a sweep of ``workers`` processes may hold: ``RDB_CONNECTIONS`` for
    each worker and for the command's own process (it plans and shows the progress)."""
    return (workers + 1) * RDB_CONNECTIONS
