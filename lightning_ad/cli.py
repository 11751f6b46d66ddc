"""``lightning-ad``: one command with subcommands. Thin: parse, call one function, print.

Each subcommand's parser stands right above its handler; options several commands share are
declared once (``parents=``). Building the parser imports no torch: ``lightning-ad --help``
answers at once, and a command imports what it needs when it runs. Errors the user can fix
(:class:`LightningADError`) print one line and exit with status 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
import types
from collections.abc import Callable, Sequence
from pathlib import Path

from lightning_ad import interrupts
from lightning_ad.environment import apply_mlflow_defaults
from lightning_ad.errors import LightningADError, redact

EXIT_USAGE = 2
EXIT_INCOMPLETE = 1
Commands = argparse._SubParsersAction


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    apply_mlflow_defaults()  # before MLflow is imported: see lightning_ad.environment
    try:
        with interrupts.sigterm_as_interrupt():
            return args.handler(args) or 0
    except LightningADError as err:
        print(f"lightning-ad: error: {redact(str(err))}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        what = "terminated (SIGTERM)" if interrupts.received_sigterm() else "interrupted"
        print(f"lightning-ad: {what}", file=sys.stderr)
        return interrupts.exit_status()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lightning-ad",
        description="Sweep self-supervised image anomaly detectors with Optuna and MLflow.",
        epilog="examples:\n"
        "  lightning-ad data synth --category screw\n"
        "  lightning-ad sweep --sweep quick --category screw\n"
        "  lightning-ad table --sweep quick --category screw\n"
        "  lightning-ad register --sweep default --category screw \\\n"
        "      --cell backbone=efficientnet_lite0,head=arcface,classes=3 --name screw-detector\n"
        "  lightning-ad predict --model models:/screw-detector/1 photos/ --out results.csv\n",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(title="commands", required=True, metavar="COMMAND")
    data = commands.add_parser(
        "data",
        help="make, fetch, inspect and preview data sets",
        description="Make, fetch, inspect and preview data sets.",
    )
    data_commands = data.add_subparsers(
        title="data commands", required=True, metavar="DATA_COMMAND"
    )
    for add in (_add_synth, _add_mvtec, _add_preview, _add_info):
        add(data_commands)
    for add in (
        _add_train,
        _add_sweep,
        _add_table,
        _add_register,
        _add_predict,
        _add_serve,
        _add_ui,
        _add_services,
    ):
        add(commands)
    return parser


# ---- shared ----------------------------------------------------------------------------------


def _subcommand(
    group: Commands,
    name: str,
    summary: str,
    examples: str,
    handler: Callable,
    parents: Sequence[argparse.ArgumentParser] = (),
) -> argparse.ArgumentParser:
    parser = group.add_parser(
        name,
        help=summary,
        description=summary,
        epilog="examples:\n" + examples,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=list(parents),
    )
    parser.set_defaults(handler=handler)
    return parser


def _options(*add: Callable[[argparse.ArgumentParser], None]) -> argparse.ArgumentParser:
    """A parent parser holding options shared by several commands."""
    parser = argparse.ArgumentParser(add_help=False)
    for adder in add:
        adder(parser)
    return parser


def _tracking_uri(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--tracking-uri",
        help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI or sqlite:///mlruns/mlflow.db)",
    )


def _data_location(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data-root",
        type=Path,
        help="a folder in MVTec AD layout (wins over data/mvtec and the built-in data)",
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=Path("data"),
        help="where data/mvtec and data/synthetic live (default: ./data)",
    )


def _category(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--category", required=True, help="category name, e.g. screw, grid, transistor"
    )


def _resolve(args: argparse.Namespace):
    from lightning_ad.data.resolve import resolve_category

    resolved = resolve_category(args.category, args.data_root, args.data_dir)
    print(resolved.describe(), file=sys.stderr)
    return resolved


# ---- data synth --------------------------------------------------------------------------------


def _add_synth(group: Commands) -> None:
    from lightning_ad.data.synthetic import CATEGORIES

    synth = _subcommand(
        group,
        "synth",
        "render a built-in MVTec AD look-alike category",
        "  lightning-ad data synth --category screw\n"
        "  lightning-ad data synth --category transistor --root data/synthetic \\\n"
        "      --seed 1 --image-size 512\n",
        _data_synth,
    )
    synth.add_argument("--category", required=True, choices=CATEGORIES)
    synth.add_argument(
        "--root", type=Path, default=Path("data/synthetic"), help="default: data/synthetic"
    )
    synth.add_argument("--seed", type=int, default=0, help="default: 0")
    synth.add_argument(
        "--image-size", type=int, default=256, help="image side in pixels (default: 256)"
    )


def _data_synth(args: argparse.Namespace) -> None:
    from lightning_ad.data.synthetic import generate_category

    started = time.perf_counter()
    folder = generate_category(
        args.category, args.root, seed=args.seed, image_size=args.image_size, overwrite=True
    )
    print(f"wrote {folder} in {time.perf_counter() - started:.1f} s")


# ---- data mvtec --------------------------------------------------------------------------------


def _add_mvtec(group: Commands) -> None:
    from lightning_ad.data.mvtec import MVTEC_SHA256, MVTEC_URL

    mvtec = _subcommand(
        group,
        "mvtec",
        "download, verify and extract MVTec AD (4.9 GB, CC BY-NC-SA 4.0)",
        "  lightning-ad data mvtec --root data/mvtec\n"
        "  lightning-ad data mvtec --root /big/disk/mvtec \\\n"
        "      --url https://mirror/mvtec.tar.xz --sha256 <hex>\n",
        _data_mvtec,
    )
    mvtec.add_argument("--root", type=Path, default=Path("data/mvtec"), help="default: data/mvtec")
    mvtec.add_argument("--url", default=MVTEC_URL, help="archive URL (default: the official one)")
    mvtec.add_argument("--sha256", default=MVTEC_SHA256, help="expected SHA-256 of the archive")


def _data_mvtec(args: argparse.Namespace) -> None:
    from lightning_ad.data.mvtec import MVTEC_LICENCE, download_mvtec

    print(MVTEC_LICENCE)
    categories = download_mvtec(
        args.root, url=args.url, sha256=args.sha256, show_progress=sys.stderr.isatty()
    )
    print(f"{args.root}: {len(categories)} categories ({', '.join(categories)})")


# ---- data preview ------------------------------------------------------------------------------


def _add_preview(group: Commands) -> None:
    preview = _subcommand(
        group,
        "preview",
        "draw one PNG: normal images, twins, object masks, test defects",
        "  lightning-ad data preview --category screw --out preview.png\n"
        "  lightning-ad data preview --category bottle --data-root data/mvtec --out bottle.png\n",
        _data_preview,
        parents=[_options(_category, _data_location)],
    )
    preview.add_argument(
        "--out", type=Path, default=Path("preview.png"), help="default: preview.png"
    )
    preview.add_argument(
        "--image-size", type=int, default=160, help="side of each tile (default: 160)"
    )
    preview.add_argument("--seed", type=int, default=0)


def _data_preview(args: argparse.Namespace) -> None:
    from lightning_ad.data.preview import render_preview

    resolved = _resolve(args)
    out = render_preview(
        resolved.root,
        args.out,
        image_size=args.image_size,
        seed=args.seed,
        dataset=resolved.dataset,
    )
    print(f"wrote {out}")


# ---- data info ---------------------------------------------------------------------------------


def _add_info(group: Commands) -> None:
    _subcommand(
        group,
        "info",
        "count the images of a category per split and defect type",
        "  lightning-ad data info --category grid\n"
        "  lightning-ad data info --category screw --data-root data/mvtec\n",
        _data_info,
        parents=[_options(_category, _data_location)],
    )


def _data_info(args: argparse.Namespace) -> None:
    from rich.console import Console
    from rich.table import Table

    from lightning_ad.data.mvtec import MVTecCategory

    resolved = _resolve(args)
    category = MVTecCategory.load(resolved.root)
    table = Table(title=resolved.describe())
    table.add_column("split/defect")
    table.add_column("images", justify="right")
    for key, count in category.counts().items():
        table.add_row(key, str(count))
    Console().print(table)


# ---- train -------------------------------------------------------------------------------------


def _add_train(group: Commands) -> None:
    from lightning_ad.config import SETTINGS
    from lightning_ad.tracking import DEFAULT_EXPERIMENT

    train = _subcommand(
        group,
        "train",
        "train one model on a category, test it, and log it to MLflow",
        "  lightning-ad train --category screw --backbone mobilenet_v2 --head arcface --classes 3\n"
        "  lightning-ad train --category grid --head none          # the frozen baseline\n"
        "  lightning-ad train --category transistor --classes normal,cutpaste,scar \\\n"
        "      --tracking-uri http://127.0.0.1:5000 --experiment mine\n",
        _train,
        parents=[_options(_tracking_uri)],
    )
    for setting in SETTINGS.values():  # one flag per TrialConfig field, with its help
        _add_setting(train, setting)
    train.add_argument(
        "--experiment", default=DEFAULT_EXPERIMENT, help="MLflow experiment (default: %(default)s)"
    )


def _add_setting(parser: argparse.ArgumentParser, setting: dataclasses.Field) -> None:
    """``--image-size INT`` from ``image_size: int``; ``--swa/--no-swa`` from a bool; a dict
    as YAML (``--head-params '{m: 0.1}'``); everything else as text ``TrialConfig`` checks."""
    import yaml

    kind = _plain_type(setting.type)
    kwargs: dict = {"type": str, "default": argparse.SUPPRESS}
    if kind is bool:
        kwargs = {"action": argparse.BooleanOptionalAction, "default": argparse.SUPPRESS}
    elif kind in (int, float):
        kwargs["type"] = kind
    elif kind is dict:
        kwargs["type"] = yaml.safe_load
    default = setting.default if setting.default is not dataclasses.MISSING else None
    shown = f" (default: {default})" if default not in (None, "") else ""
    flag = "--" + setting.name.replace("_", "-")
    parser.add_argument(flag, dest=setting.name, help=setting.metadata["help"] + shown, **kwargs)


def _plain_type(annotation: str) -> type:
    """``int``, ``float``, ``bool``, ``dict`` or ``str`` for a field's annotation (a string:
    the module uses postponed annotations)."""
    text = str(annotation).replace(" ", "")
    for kind in (bool, int, float, dict):
        if text.split("|")[0].split("[")[0] == kind.__name__:
            return kind
    return str


def _train(args: argparse.Namespace) -> None:
    import json

    from lightning_ad.config import SETTINGS, TrialConfig
    from lightning_ad.train import run_trial

    config = TrialConfig(**{name: getattr(args, name) for name in SETTINGS if name in args})
    result = run_trial(config, tracking_uri=args.tracking_uri, experiment=args.experiment)
    # The last stdout line is one JSON object, for scripts.
    print(json.dumps({"run_id": result.run_id, **result.metrics}, sort_keys=True))


# ---- sweep -------------------------------------------------------------------------------------


def _sweep_file(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--sweep", default="default", help="a sweep file, or a name in ./sweeps (default: default)"
    )


def _add_sweep(group: Commands) -> None:
    sweep = _subcommand(
        group,
        "sweep",
        "run (or resume) a sweep: Optuna over the grid, every trial an MLflow run",
        "  lightning-ad sweep --sweep default --category screw\n"
        "  lightning-ad sweep --sweep sweeps/quick.yaml --workers 2\n"
        "  lightning-ad sweep --sweep article --storage postgresql+psycopg://me@db/optuna \\\n"
        "      --tracking-uri http://mlflow-host:5000\n",
        _sweep,
        parents=[_options(_sweep_file, _data_location, _tracking_uri)],
    )
    sweep.add_argument("--category", help="run only this category of the grid")
    sweep.add_argument("--workers", type=int, default=1, help="local worker processes (default: 1)")
    sweep.add_argument(
        "--storage",
        default=os.environ.get("LIGHTNING_AD_STORAGE") or None,
        help="Optuna storage URL or journal file (default: $LIGHTNING_AD_STORAGE, else "
        "mlruns/optuna.journal); a URL with a password is best given through that variable",
    )
    sweep.add_argument(
        "--heartbeat",
        type=int,
        default=60,
        metavar="SECONDS",
        help="RDB storages: a trial silent for 3 beats (its worker died) is failed and its cell "
        "queued again (default: 60)",
    )
    sweep.add_argument("--quiet", action="store_true", help="no live progress view")


def _sweep(args: argparse.Namespace) -> int:
    from lightning_ad.sweep.preflight import preflight

    if args.workers < 1:
        raise LightningADError(f"--workers must be at least 1, got {args.workers}")
    if args.heartbeat < 1:
        raise LightningADError(f"--heartbeat must be at least 1 second, got {args.heartbeat}")
    targets = _targets(args)
    preflight(targets)  # every category, before the first one starts
    # After the preflight: a typo in a URL is told before training's imports (seconds).
    from lightning_ad.sweep.runner import run_sweep

    incomplete, failed = 0, 0
    for target in targets:
        started = time.perf_counter()
        outcome = run_sweep(target, workers=args.workers, show_progress=not args.quiet)
        minutes = (time.perf_counter() - started) / 60
        where = outcome.files[0].parent if outcome.files else "-"
        status = outcome.status
        print(
            f"{target.study_name}: {status.complete} of {status.cells} cells complete in "
            f"{minutes:.1f} min; tables in {where}"
        )
        for cell, error in status.failed.items():
            print(f"  failed: {' '.join(map(str, cell))}: {error}", file=sys.stderr)
        incomplete += status.cells - status.complete
        failed += len(status.failed)
    if incomplete:
        cells = "1 cell is" if incomplete == 1 else f"{incomplete} cells are"
        why = f" ({failed} failed: errors above)" if failed else ""
        print(
            f"lightning-ad: {cells} not complete{why}; fix the cause and run the same "
            "command again: only those cells are run",
            file=sys.stderr,
        )
        return EXIT_INCOMPLETE
    return 0


def _targets(args: argparse.Namespace) -> list:
    """One ``SweepTarget`` per category of ``--sweep`` (or ``--category`` alone)."""
    from lightning_ad.sweep.spec import SweepSpec, SweepTarget
    from lightning_ad.tracking import resolve_tracking_uri

    path = Path(args.sweep)  # a path, or a name in ./sweeps (default = sweeps/default.yaml)
    if not path.suffix and not path.exists():
        path = Path("sweeps") / f"{args.sweep}.yaml"
    spec = SweepSpec.load(path)
    categories = [args.category] if args.category else list(spec.grid["category"])
    uri = resolve_tracking_uri(args.tracking_uri)
    return [
        SweepTarget(
            spec.with_category(c),
            c,
            storage=getattr(args, "storage", None),
            heartbeat=getattr(args, "heartbeat", 60),
            tracking_uri=uri,
            data_root=str(args.data_root) if getattr(args, "data_root", None) else None,
            data_dir=str(getattr(args, "data_dir", "data")),
        )
        for c in categories
    ]


# ---- table -------------------------------------------------------------------------------------

TABLE_FORMATS = ("md", "html", "latex", "csv", "parquet")
"""``report.FORMATS``, spelled out here so that ``--help`` need not import pandas (a test keeps
the two the same)."""
TABLE_NAMES = ("median", "pixel", "aupro", "delta", "defects")
"""``report.TABLES``, likewise."""


def _add_table(group: Commands) -> None:
    table = _subcommand(
        group,
        "table",
        "print and write the comparison tables of a sweep, from MLflow",
        "  lightning-ad table --sweep default --category screw\n"
        "  lightning-ad table --sweep default --category screw --format csv --out medians.csv\n"
        "  lightning-ad table --sweep article --category screw --format latex --out tables/\n",
        _table,
        parents=[_options(_sweep_file, _data_location, _tracking_uri)],
    )
    table.add_argument("--category", help="only this category")
    table.add_argument(
        "--fingerprint",
        help="the runs of an earlier settings fingerprint of the sweep (default: the one its "
        "file and data have now; the table lists the others)",
    )
    table.add_argument(
        "--format",
        default="md",
        choices=TABLE_FORMATS,
        help="md, html, latex: the display tables; csv, parquet: tidy data, one row per cell "
        "(default: md)",
    )
    table.add_argument(
        "--table",
        action="append",
        choices=TABLE_NAMES,
        help="only this table (repeatable): median AUC per cell, class3 - class2, or per defect "
        "type (default: all; one table, median, for --out FILE and for csv on stdout)",
    )
    table.add_argument(
        "--out",
        help="a FILE (one table) or a FOLDER (a file per table) instead of printing; "
        "reports/<sweep>/<category>/<fingerprint>/ always gets every table in every format",
    )


def _table(args: argparse.Namespace) -> None:
    from lightning_ad import report

    targets = _targets(args)
    out = Path(args.out) if args.out else None
    # A folder: one that exists, a name ending in "/", or a new name without a suffix.
    to_folder = out is not None and (
        out.is_dir() or args.out.endswith("/") or not (out.suffix or out.exists())
    )
    _check_table_destination(args, out, to_folder, len(targets))
    if args.fingerprint and len(targets) > 1:
        raise LightningADError(
            "--fingerprint belongs to one category, but the sweep has "
            f"{len(targets)}; pass --category NAME too"
        )
    for target in targets:
        fingerprint, current = _announce_fingerprint(target, args.fingerprint)
        trials = report.fetch_trials(
            target.tracking_uri, target.experiment, target.spec, fingerprint
        )
        if current:  # reports/<sweep>/<category>/latest: the tables of today's settings
            report.write_report(trials, target.spec, target.settings, target.reports)
        if out is None:
            _print_tables(report, trials, target.spec, args)
            continue
        folder = (out / target.category if len(targets) > 1 else out) if to_folder else None
        names = args.table or (report.tables_in(args.format) if to_folder else ("median",))
        for name in names:
            path = out
            if folder is not None:
                path = folder / f"{report.FILE_NAMES[name]}{report.suffix(args.format)}"
            path.parent.mkdir(parents=True, exist_ok=True)
            report.write_table(trials, target.spec, name, args.format, path)
            print(f"wrote {path}")


def _announce_fingerprint(target, chosen: str | None) -> tuple[str, bool]:
    """The fingerprint a table shows, said on stderr with its settings and the sweep's others,
    and whether it is the one the sweep file and data here give: ``chosen``; else that one, when
    it has runs; else the newest that has (a machine without the data, reading a shared
    server's runs)."""
    from lightning_ad import tracking
    from lightning_ad.sweep.fingerprint import Settings

    parents = tracking.sweep_parents(
        target.tracking_uri, target.experiment, target.spec.name, target.category
    )
    fingerprints = {}  # newest first
    for run in parents:
        fingerprints.setdefault(run.data.tags.get(tracking.FINGERPRINT_TAG), run)
    fingerprints.pop(None, None)  # parent runs made before fingerprints
    name = f"{target.spec.name}-{target.category}"
    current = None
    if chosen is None:
        try:
            current = target.fingerprint
        except LightningADError as err:  # no data here: the shared server's runs still count
            print(f"{name}: the data is not here ({err})", file=sys.stderr)
        chosen = current
        if current not in fingerprints and fingerprints:
            chosen = next(iter(fingerprints))
            print(
                f"{name}: fingerprint {current} (this sweep file and data) has no runs yet; "
                f"showing the newest, {chosen}",
                file=sys.stderr,
            )
    if chosen is not None and chosen == current:
        settings = target.settings
    elif chosen in fingerprints:
        run_id = fingerprints[chosen].info.run_id
        settings = Settings(tracking.parent_settings(target.tracking_uri, run_id))
    else:
        known = ", ".join(fingerprints) or "none"
        raise LightningADError(
            f"--fingerprint {chosen}: not a fingerprint of sweep {target.spec.name}, category "
            f"{target.category}; known: {known}"
        )
    print(f"{name}: settings {settings.describe()}", file=sys.stderr)
    others = [f for f in fingerprints if f != chosen]
    if others:
        print(
            f"  other settings of this sweep (--fingerprint): {', '.join(others)}",
            file=sys.stderr,
        )
    return chosen, chosen == current


def _check_table_destination(
    args: argparse.Namespace, out: Path | None, to_folder: bool, n_categories: int
) -> None:
    """A file, or csv on stdout, holds one table of one category: never several CSVs in one."""
    if out is None and args.format == "parquet":
        raise LightningADError("parquet is binary: pass --out FILE (or --out FOLDER)")
    one_table = not to_folder and (out is not None or args.format == "csv")
    where = f"--out {out}" if out is not None else "csv on stdout"
    if one_table and args.table and len(args.table) > 1:
        raise LightningADError(
            f"{where} holds one table, got --table {' '.join(args.table)}; "
            "pass one --table, or --out FOLDER for a file per table"
        )
    if one_table and n_categories > 1:
        raise LightningADError(
            f"{where} holds one category's table, but the sweep has {n_categories} "
            "categories; pass --category NAME, or --out FOLDER"
        )


def _print_tables(report: types.ModuleType, trials, spec, args: argparse.Namespace) -> None:
    """Display formats print every table under its title; csv prints one tidy table, so that
    the output is one CSV a program can read."""
    if args.format == "csv":
        [name] = args.table or ("median",)
        print(report.tidy_table(trials, spec, name).to_csv(index=False), end="")
    else:
        print(report.summary_text(trials, spec, args.format, args.table or report.TABLES))


# ---- register ----------------------------------------------------------------------------------


def _add_register(group: Commands) -> None:
    register = _subcommand(
        group,
        "register",
        "register a trial's detector in MLflow's model registry: a run, or a sweep cell's run",
        "  lightning-ad register 3f2c9e... --name screw-detector\n"
        "  lightning-ad register --sweep default --category screw \\\n"
        "      --cell backbone=efficientnet_lite0,head=arcface,classes=3 --seed 0 \\\n"
        "      --name screw-detector\n",
        _register,
        parents=[_options(_sweep_file, _data_location, _tracking_uri)],
    )
    register.add_argument("run_id", nargs="?", metavar="RUN_ID", help="a trial run's id")
    register.add_argument(
        "--name", help="the registered model's name (default: <category>-detector)"
    )
    register.add_argument("--category", help="with --cell: the sweep's category")
    register.add_argument(
        "--cell",
        help="the sweep cell, e.g. backbone=efficientnet_lite0,head=arcface,classes=3",
    )
    register.add_argument(
        "--seed", type=int, help="with --cell: which seed's run (default: the lowest)"
    )
    register.add_argument(
        "--fingerprint", help="with --cell: an earlier settings fingerprint of the sweep"
    )


def _register(args: argparse.Namespace) -> None:
    from lightning_ad import tracking
    from lightning_ad.deploy import registry

    if (args.run_id is None) == (args.cell is None):
        raise LightningADError("name a RUN_ID, or a sweep cell with --category and --cell")
    given = [f for f in ("category", "seed", "fingerprint") if getattr(args, f) is not None]
    if args.run_id is not None and given:
        raise LightningADError(f"--{given[0]} goes with --cell; a RUN_ID names its run alone")
    uri = tracking.resolve_tracking_uri(args.tracking_uri)
    run_id, runs = args.run_id, None
    if args.cell is not None:
        if not args.category:
            raise LightningADError("--cell needs --category")
        cell = registry.parse_cell(args.cell)
        [target] = _targets(args)
        fingerprint, _ = _announce_fingerprint(target, args.fingerprint)
        spec = target.spec
        runs = registry.cell_runs(
            uri,
            target.experiment,
            spec.name,
            fingerprint,
            target.category,
            cell,
            spec.runnable_keys,
        )
        run, chosen = registry.run_of_seed(runs, args.seed)
        print(chosen, file=sys.stderr)
        run_id = run.info.run_id
    registered = registry.register(uri, run_id, args.name, runs)
    for key, value in registered.tags.items():
        print(f"  {key}: {value}", file=sys.stderr)
    print(f"registered run {registered.run_id} as {registered.uri}")


# ---- predict -----------------------------------------------------------------------------------


def _add_predict(group: Commands) -> None:
    predict = _subcommand(
        group,
        "predict",
        "score image files with a logged or registered detector",
        "  lightning-ad predict --model models:/screw-detector/1 photos/ --out results.csv\n"
        "  lightning-ad predict --model runs:/3f2c9e.../model part.png --maps maps/\n",
        _predict,
        parents=[_options(_tracking_uri)],
    )
    predict.add_argument(
        "--model", required=True, help="models:/NAME/VERSION, runs:/RUN_ID/model or a folder"
    )
    predict.add_argument("images", nargs="+", type=Path, metavar="IMAGES_OR_FOLDER")
    predict.add_argument("--out", type=Path, help="write the CSV here (default: print it)")
    predict.add_argument(
        "--max-pixels",
        type=int,
        help="refuse images over this many pixels, read from their headers before decoding "
        "(default: 16 x the detector's side, squared, at least 4096 x 4096)",
    )
    predict.add_argument(
        "--maps", type=Path, metavar="DIR", help="write each image beside its anomaly map here"
    )


def _predict(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.progress import Progress

    from lightning_ad import tracking
    from lightning_ad.deploy import predict

    images = predict.find_images(args.images)
    detector = predict.load_detector(args.model, tracking.resolve_tracking_uri(args.tracking_uri))
    print(f"{args.model}: {detector.threshold.describe()}", file=sys.stderr)
    console = Console(stderr=True)  # stdout may be the CSV
    with Progress(console=console, transient=True, disable=not console.is_terminal) as bar:
        task = bar.add_task("scoring", total=len(images))
        rows = predict.predict(
            detector, images, args.maps, lambda n: bar.advance(task, n), max_pixels=args.max_pixels
        )
    failed = rows[rows.error != ""]
    for error in failed.error:
        print(f"lightning-ad: skipped: {error}", file=sys.stderr)  # the error names the file
    _write_scores(rows, args.out)
    scored = len(rows) - len(failed)
    print(
        f"{scored} of {len(rows)} images scored, {int(rows.anomalous.sum())} anomalous"
        + (f"; wrote {args.out}" if args.out else "")
        + (f" and maps in {args.maps}" if args.maps else ""),
        file=sys.stderr,
    )
    return EXIT_INCOMPLETE if len(failed) else 0


def _write_scores(rows, out: Path | None) -> None:
    """The CSV to ``out`` or stdout; if ``out`` cannot be written, the scores go to stdout and
    the error says so: finished scores are never lost to an output error."""
    text = rows.to_csv(index=False)
    if out is not None:
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(text, encoding="utf-8")
            return
        except OSError as err:
            sys.stdout.write(text)
            raise LightningADError(
                f"cannot write {out} ({err.strerror or err}); the scores went to stdout instead"
            ) from err
    sys.stdout.write(text)


# ---- serve -------------------------------------------------------------------------------------


def _add_serve(group: Commands) -> None:
    from lightning_ad.deploy.serving import DEFAULT_MAX_BODY_MB, DEFAULT_MAX_IMAGES

    serve = _subcommand(
        group,
        "serve",
        "serve a detector over HTTP (MLflow's scoring server): POST images to /invocations",
        "  lightning-ad serve --model models:/screw-detector/1 --port 5001\n",
        _serve,
        parents=[_options(_tracking_uri)],
    )
    serve.add_argument(
        "--model", required=True, help="models:/NAME/VERSION, runs:/RUN_ID/model or a folder"
    )
    serve.add_argument("--host", default="127.0.0.1", help="loopback only (default: 127.0.0.1)")
    serve.add_argument("--port", type=int, default=5001, help="(default: 5001)")
    serve.add_argument(
        "--max-body-mb",
        type=float,
        default=DEFAULT_MAX_BODY_MB,
        help=f"a larger request is refused with 413 (default: {DEFAULT_MAX_BODY_MB})",
    )
    serve.add_argument(
        "--max-images",
        type=int,
        default=DEFAULT_MAX_IMAGES,
        help=f"the most images one request may hold (default: {DEFAULT_MAX_IMAGES})",
    )


def _serve(args: argparse.Namespace) -> None:
    from lightning_ad.mlflow_server import is_loopback
    from lightning_ad.tracking import resolve_tracking_uri

    if not is_loopback(args.host):
        raise LightningADError(
            f"--host {args.host}: the scoring server has no login, and anyone who reaches the "
            "port could use the model; serve on 127.0.0.1 behind a reverse proxy that asks for one"
        )
    if args.max_body_mb <= 0 or args.max_images < 1:
        raise LightningADError(
            f"--max-body-mb {args.max_body_mb} / --max-images {args.max_images}: both must be "
            "positive"
        )
    from lightning_ad.deploy.serving import server_process
    from lightning_ad.packaging.digests import servable_model

    uri = resolve_tracking_uri(args.tracking_uri)
    model = servable_model(args.model, uri)
    command, env = server_process(
        model, args.host, args.port, int(args.max_body_mb * 1e6), args.max_images
    )
    print(" ".join(command), file=sys.stderr)
    os.execve(command[0], command, env | {"MLFLOW_TRACKING_URI": uri})


# ---- ui ----------------------------------------------------------------------------------------


def _server(parser: argparse.ArgumentParser) -> None:
    """How an MLflow server listens (``ui``, ``services``): see ``mlflow_server``."""
    parser.add_argument(
        "--host", default="127.0.0.1", help="default: 127.0.0.1 (this machine only)"
    )
    parser.add_argument("--port", type=int, default=5000, help="MLflow's port (default: 5000)")
    parser.add_argument(
        "--auth",
        action="store_true",
        help="MLflow's basic-auth app: a login (user admin, a generated password kept in a 0600 "
        "file); needed for a --host beyond loopback",
    )
    parser.add_argument(
        "--allowed-hosts",
        help="Host headers MLflow accepts (its DNS-rebinding guard, not a login), e.g. "
        "mlflow-host,mlflow-host:5000",
    )
    parser.add_argument(
        "--cors-allowed-origins",
        help="origins whose web pages may call MLflow's API (its cross-site guard), e.g. "
        "https://dashboards.example",
    )


def _server_options(args: argparse.Namespace, auth_dir: Path):
    from lightning_ad.mlflow_server import ServerOptions

    options = ServerOptions(
        args.host,
        args.port,
        args.allowed_hosts,
        args.cors_allowed_origins,
        auth_dir if args.auth else None,
    )
    options.check()
    return options


def _add_ui(group: Commands) -> None:
    _subcommand(
        group,
        "ui",
        "start the MLflow UI over the tracking store",
        "  lightning-ad ui\n"
        "  lightning-ad ui --port 5001\n"
        "  lightning-ad ui --host 0.0.0.0 --auth --allowed-hosts my-host:5000   # a login\n",
        _ui,
        parents=[_options(_tracking_uri, _server)],
    )


def _ui(args: argparse.Namespace) -> None:
    from lightning_ad.mlflow_server import run_ui
    from lightning_ad.tracking import parent_links, resolve_tracking_uri

    uri = resolve_tracking_uri(args.tracking_uri)
    options = _server_options(args, auth_dir=Path("mlruns"))
    process = options.process("ui", uri)
    # A line per request the browser makes would bury the links below (unless asked for).
    process.env.setdefault("MLFLOW_UVICORN_OPTS", "--no-access-log")
    if args.auth:
        from lightning_ad.mlflow_server import ADMIN, BasicAuth

        password = BasicAuth(Path("mlruns")).password_file.resolve()
        print(f"MLflow login: {ADMIN}, password in {password}", file=sys.stderr)
    print(f"{' '.join(process.command)}  (store: {redact(uri)})", file=sys.stderr)
    url = options.local_url

    def announce() -> list[str]:
        links = parent_links(uri, url)
        heading = f"MLflow UI: {url}; each sweep's parent run (the verdict first):"
        return (
            [heading, *(f"  {line}" for line in links)]
            if links
            else [f"MLflow UI: {url} (no sweep in {redact(uri)} yet: make sweep CATEGORY=screw)"]
        )

    status = run_ui(process, url, announce)
    if status:
        raise SystemExit(status)


# ---- services ----------------------------------------------------------------------------------


def _add_services(group: Commands) -> None:
    services = _subcommand(
        group,
        "services",
        "start a PostgreSQL (Optuna, on 127.0.0.1 only) and an MLflow server to try the "
        "distributed mode on this machine; for workers on other machines, see the README's "
        '"Many workers, many machines" recipe',
        "  lightning-ad services                       # until Ctrl-C; data kept in .services/\n"
        "  lightning-ad services --host 0.0.0.0 --auth --allowed-hosts mlflow-host:5000\n",
        _services,
        parents=[_options(_server)],
    )
    services.add_argument(
        "--dir", type=Path, default=Path(".services"), help="data folder (default: .services)"
    )
    services.add_argument(
        "--pg-port", type=int, default=5433, help="PostgreSQL port on 127.0.0.1 (default: 5433)"
    )


def _services(args: argparse.Namespace) -> None:
    from lightning_ad.services import local_services

    options = _server_options(args, auth_dir=args.dir)
    with local_services(args.dir, args.pg_port, options) as services:
        lines = [
            f"Optuna storage (PostgreSQL): {services.storage}",
            f"MLflow server:               {services.tracking_uri}",
            f"PostgreSQL's password:       {services.password_file} (for PGPASSFILE)",
        ]
        login = ""
        if services.mlflow_auth is not None:
            password = services.mlflow_auth.password_file.resolve()
            lines.append(f"MLflow's admin password:     {password} (user admin)")
            login = f"  {services.mlflow_auth.login_hint()}\n"
        lines.append(
            f"data in {args.dir}/; Ctrl-C stops both. Workers on this machine (PostgreSQL "
            "listens on 127.0.0.1 only; for other machines see the README's 'Many workers, "
            "many machines' recipe):\n"
            f"  export PGPASSFILE={services.password_file}\n{login}"
            f"  make sweep CATEGORY=screw WORKERS=2 STORAGE={services.storage} "
            f"TRACKING_URI={services.tracking_uri}"
        )
        print("\n".join(lines), flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            print("stopping the services", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
