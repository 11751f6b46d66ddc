"""B7: ``sweeps/quick.yaml`` end to end by worker count, on the default local stores and on
PostgreSQL + an mlflow server (started here when PostgreSQL is installed)."""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.harness import REPO, Row, Setup, benchmark
from lightning_ad.errors import LightningADError
from lightning_ad.mlflow_server import ServerOptions


@benchmark("B7")
def workers(setup: Setup) -> Row:
    walls = {f"{n} local": _quick_sweep_wall(setup, ["--workers", str(n)]) for n in (1, 2, 4)}
    try:
        walls["2 on PostgreSQL"] = _quick_sweep_on_postgres(setup)
    except LightningADError as err:
        print(f"B7: PostgreSQL row skipped: {err}", file=sys.stderr)
    one = walls["1 local"]
    return Row(
        "B7",
        "sweeps/quick.yaml wall time by workers",
        "report the speed-up",
        "; ".join(f"{k}: {v:.0f} s ({one / v:.2f}x)" for k, v in walls.items()),
        one / walls["2 local"],
        min(one / v for v in walls.values()),
        max(one / v for v in walls.values()),
        None,
    )


def _quick_sweep_wall(setup: Setup, extra: list[str]) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        command = [
            sys.executable, "-m", "lightning_ad", "sweep",
            "--sweep", str(REPO / "sweeps" / "quick.yaml"),
            "--data-root", str(setup.data_root), "--quiet", *extra,
        ]  # fmt: skip
        t0 = time.perf_counter()
        subprocess.run(command, cwd=tmp, check=True, capture_output=True, timeout=1800)
        return time.perf_counter() - t0


def _quick_sweep_on_postgres(setup: Setup) -> float:
    from lightning_ad.services import free_port, local_services

    root = Path(tempfile.mkdtemp(prefix="bench-services-"))
    root.chmod(0o755)  # PostgreSQL runs as its own user
    with local_services(root, free_port(), ServerOptions(port=free_port())) as services:
        where = ["--storage", services.storage, "--tracking-uri", services.tracking_uri]
        return _quick_sweep_wall(setup, ["--workers", "2", *where])
