"""``lightning-ad train``: one model, with a flag for every ``TrialConfig`` setting."""

from __future__ import annotations

import argparse
import dataclasses

from lightning_ad.cli.options import Commands, shared, subcommand, tracking_uri_option


def add_train(commands: Commands) -> None:
    """Add ``train`` to ``commands``: one flag per ``TrialConfig`` field, with its help.

    Args:
        commands: the top-level subparsers.
    """
    from lightning_ad.config import SETTINGS
    from lightning_ad.tracking import DEFAULT_EXPERIMENT

    train = subcommand(
        commands,
        "train",
        "train one model on a category, test it, and log it to MLflow",
        "  lightning-ad train --category screw --backbone mobilenet_v2 --head arcface --classes 3\n"
        "  lightning-ad train --category grid --head none          # the frozen baseline\n"
        "  lightning-ad train --category transistor --classes normal,cutpaste,scar \\\n"
        "      --tracking-uri http://127.0.0.1:5000 --experiment mine\n",
        _train,
        parents=[shared(tracking_uri_option)],
    )
    for setting in SETTINGS.values():
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
