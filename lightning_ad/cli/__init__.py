"""``lightning-ad``: one command with subcommands. Thin: parse, call one function, print.

A module per command group (``data``, ``train``, ``sweep``, ``table``, ``deploy``: register,
predict and serve; ``servers``: ui and services), each command's parser right above its
handler; options several commands share are declared once in :mod:`.options` (``parents=``).
Building the parser imports no torch: ``lightning-ad --help`` answers at once, and a command
imports what it needs when it runs. Errors the user can fix (:class:`LightningADError`) print
one line and exit with status 2.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from lightning_ad import interrupts
from lightning_ad.cli.data import add_data
from lightning_ad.cli.deploy import add_deploy
from lightning_ad.cli.options import EXIT_INCOMPLETE, EXIT_USAGE
from lightning_ad.cli.servers import add_servers
from lightning_ad.cli.sweep import add_sweep
from lightning_ad.cli.table import add_table
from lightning_ad.cli.train import add_train
from lightning_ad.environment import apply_mlflow_defaults
from lightning_ad.errors import LightningADError, redact

__all__ = ["EXIT_INCOMPLETE", "EXIT_USAGE", "build_parser", "main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``lightning-ad`` with ``argv``.

    Args:
        argv: the arguments after the program's name (default: ``sys.argv[1:]``).

    Returns:
        The exit status: 0; ``EXIT_INCOMPLETE`` when some of the work did not finish;
        ``EXIT_USAGE`` after an error the user can fix (one line on stderr); on Ctrl-C or
        SIGTERM, the status a shell gives a process ended by that signal.

    Raises:
        SystemExit: from argparse (``--help``, a usage error) and from ``ui`` (MLflow's status).
    """
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
    """The whole command line, every command with its options and examples (no torch import).

    Returns:
        The parser; each command's parsed arguments carry its ``handler``.
    """
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
    for add in (add_data, add_train, add_sweep, add_table, add_deploy, add_servers):
        add(commands)
    return parser
