"""``make bench``: where a trial's time goes, measured side by side.

Every ratio alternates A and B over several repeats in one process and reports the median with
the min-max, because absolute times on a shared machine drift. Prints a table and writes it as
JSON under ``reports/bench/``. ``--tiny`` runs every row on minimal inputs (what the tests use).

    python benchmarks/run.py [--tiny] [--only B1,B2] [--out reports/bench]

The rows live by concern (``training``, ``twins``, ``trial``, ``sweeps``) in one registry
(``harness.REGISTRY``). B9 (torch.compile) runs only when named in --only: compiling costs
minutes.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

if __package__ in (None, ""):  # run as a script (make bench): the repository is the root
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from benchmarks import orchestration, predict, sweeps, training, trial, twins  # noqa: F401  (they register their rows)
from benchmarks.harness import REGISTRY, Row, Setup
from lightning_ad.data.synthetic import generate_category


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--tiny", action="store_true", help="minimal inputs: checks that every row runs"
    )
    parser.add_argument("--only", help="comma list of rows, e.g. B1,B2")
    parser.add_argument("--out", type=Path, default=Path("reports/bench"))
    parser.add_argument("--data-dir", type=Path, default=Path("data/synthetic"))
    args = parser.parse_args(argv)
    # Absolute: B7 starts its sweeps in a folder of their own.
    root = Path(tempfile.mkdtemp(prefix="bench-data-")) if args.tiny else args.data_dir.resolve()
    generate_category(
        "screw", root, image_size=64 if args.tiny else 256, max_per_folder=12 if args.tiny else None
    )
    setup = Setup(root, 32 if args.tiny else 96, 2 if args.tiny else 5, args.tiny)
    wanted = set(args.only.split(",")) if args.only else None
    rows: list[Row] = []
    started = time.perf_counter()
    for bench in REGISTRY.values():
        if (bench.default and wanted is None) or (wanted and wanted & set(bench.rows)):
            rows += bench.run(setup)
    _print(rows)
    record = {
        "machine": f"{platform.node()} {platform.machine()}, {torch.get_num_threads()} torch "
        f"threads, torch {torch.__version__}, cuda {torch.cuda.is_available()}",
        "seconds": round(time.perf_counter() - started, 1),
        "tiny": args.tiny,
        "rows": [asdict(r) for r in rows],
    }
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for path in (args.out / f"bench-{stamp}.json", args.out / "latest.json"):
        path.write_text(json.dumps(record, indent=1))
    print(f"wrote {args.out / 'latest.json'} ({record['seconds']:.0f} s)")
    return 0


def _print(rows: list[Row]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="make bench (median; min-max over repeats)")
    for column in ("id", "what", "goal", "result", "min-max", "met"):
        table.add_column(column)
    for r in rows:
        spread = f"{r.low:.3g}-{r.high:.3g}" if r.low != r.high else ""
        table.add_row(
            r.id, r.what, r.goal, r.result, spread, {True: "yes", False: "NO", None: "-"}[r.met]
        )
    Console(width=200).print(table)


if __name__ == "__main__":
    sys.exit(main())
