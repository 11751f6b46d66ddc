"""What several commands share: the exit codes, the subcommand frame, the parent parsers of
options that more than one command takes, and what those options mean (a category's data, a
sweep file's targets).

Nothing here imports torch: building the parser must stay instant (``--help``).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

EXIT_USAGE = 2
"""An error the user can fix (:class:`~lightning_ad.errors.LightningADError`): one line."""
EXIT_INCOMPLETE = 1
"""The command ran, but some of its work did not finish (a sweep's cells, an image)."""
Commands = argparse._SubParsersAction


def subcommand(
    group: Commands,
    name: str,
    summary: str,
    examples: str,
    handler: Callable,
    parents: Sequence[argparse.ArgumentParser] = (),
) -> argparse.ArgumentParser:
    """Add the command ``name`` to ``group``, its help ending in worked examples.

    Args:
        group: the subparsers the command joins.
        name: the command's name.
        summary: its one-line help, also its description.
        examples: indented command lines, one a line, shown under "examples:".
        handler: called with the parsed arguments; returns the exit status (``None`` = 0).
        parents: parent parsers whose options the command takes (see :func:`shared`).

    Returns:
        The command's parser, for its own options.
    """
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


def shared(*add: Callable[[argparse.ArgumentParser], None]) -> argparse.ArgumentParser:
    """A parent parser holding options shared by several commands.

    Args:
        add: functions that each add options to a parser, e.g. :func:`tracking_uri_option`.

    Returns:
        A parser without ``--help`` for a command's ``parents``.
    """
    parser = argparse.ArgumentParser(add_help=False)
    for adder in add:
        adder(parser)
    return parser


def tracking_uri_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--tracking-uri",
        help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI or sqlite:///mlruns/mlflow.db)",
    )


def data_location_options(parser: argparse.ArgumentParser) -> None:
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


def category_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--category", required=True, help="category name, e.g. screw, grid, transistor"
    )


def sweep_file_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--sweep", default="default", help="a sweep file, or a name in ./sweeps (default: default)"
    )


def resolve_category(args: argparse.Namespace):
    """The data of ``--category``, found through the data location options, said on stderr.

    Args:
        args: parsed arguments with ``category``, ``data_root`` and ``data_dir``.

    Returns:
        The :class:`~lightning_ad.data.resolve.ResolvedCategory`.

    Raises:
        DataError: the category is unknown or its data cannot be found or made.
    """
    from lightning_ad.data.resolve import resolve_category as resolve

    resolved = resolve(args.category, args.data_root, args.data_dir)
    print(resolved.describe(), file=sys.stderr)
    return resolved


def sweep_targets(args: argparse.Namespace) -> list:
    """One ``SweepTarget`` per category of ``--sweep`` (or ``--category`` alone).

    Args:
        args: parsed arguments with ``sweep``, ``category`` and ``tracking_uri``; ``storage``,
            ``heartbeat``, ``data_root`` and ``data_dir`` where the command has them.

    Returns:
        The targets, in the grid's category order.

    Raises:
        LightningADError: the sweep file is missing or wrong, or a category name is unsafe.
    """
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


def to_stderr(line: str) -> None:
    """Print ``line`` on stderr: what a command says about its work, apart from its output."""
    print(line, file=sys.stderr)
