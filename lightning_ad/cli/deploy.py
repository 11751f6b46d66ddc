"""``lightning-ad register``, ``predict`` and ``serve``: a trained detector put to use."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from lightning_ad.cli.options import (
    EXIT_INCOMPLETE,
    Commands,
    data_location_options,
    shared,
    subcommand,
    sweep_file_option,
    sweep_targets,
    to_stderr,
    tracking_uri_option,
)
from lightning_ad.errors import LightningADError


def add_deploy(commands: Commands) -> None:
    """Add ``register``, ``predict`` and ``serve`` to ``commands``.

    Args:
        commands: the top-level subparsers.
    """
    for add in (_add_register, _add_predict, _add_serve):
        add(commands)


# ---- register ----------------------------------------------------------------------------------


def _add_register(group: Commands) -> None:
    register = subcommand(
        group,
        "register",
        "register a trial's detector in MLflow's model registry: a run, or a sweep cell's run",
        "  lightning-ad register 3f2c9e... --name screw-detector\n"
        "  lightning-ad register --sweep default --category screw \\\n"
        "      --cell backbone=efficientnet_lite0,head=arcface,classes=3 --seed 0 \\\n"
        "      --name screw-detector\n",
        _register,
        parents=[shared(sweep_file_option, data_location_options, tracking_uri_option)],
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
    from lightning_ad.sweep.history import choose_fingerprint

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
        [target] = sweep_targets(args)
        fingerprint, _ = choose_fingerprint(target, args.fingerprint, say=to_stderr)
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
    predict = subcommand(
        group,
        "predict",
        "score image files with a logged or registered detector",
        "  lightning-ad predict --model models:/screw-detector/1 photos/ --out results.csv\n"
        "  lightning-ad predict --model runs:/3f2c9e.../model part.png --maps maps/\n",
        _predict,
        parents=[shared(tracking_uri_option)],
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

    serve = subcommand(
        group,
        "serve",
        "serve a detector over HTTP (MLflow's scoring server): POST images to /invocations",
        "  lightning-ad serve --model models:/screw-detector/1 --port 5001\n",
        _serve,
        parents=[shared(tracking_uri_option)],
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
