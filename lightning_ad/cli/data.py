"""``lightning-ad data``: make, fetch, inspect and preview data sets."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from lightning_ad.cli.options import (
    Commands,
    category_option,
    data_location_options,
    resolve_category,
    shared,
    subcommand,
)


def add_data(commands: Commands) -> None:
    """Add ``data`` and its commands (synth, mvtec, preview, info) to ``commands``.

    Args:
        commands: the top-level subparsers.
    """
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


# ---- data synth --------------------------------------------------------------------------------


def _add_synth(group: Commands) -> None:
    from lightning_ad.data.shifts import SHIFTS
    from lightning_ad.data.synthetic import CATEGORIES

    synth = subcommand(
        group,
        "synth",
        "render a built-in MVTec AD look-alike category",
        "  lightning-ad data synth --category screw\n"
        "  lightning-ad data synth --category transistor --root data/synthetic \\\n"
        "      --seed 1 --image-size 512\n"
        "  lightning-ad data synth --category vial --shift lighting\n",
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
    synth.add_argument(
        "--shift",
        choices=tuple(SHIFTS),
        action="append",
        help="also render the test split again under this camera change, into "
        "<category>/shifts/NAME (repeatable); the category itself is rendered only if missing",
    )


def _data_synth(args: argparse.Namespace) -> None:
    from lightning_ad.data.synthetic import generate_category, generate_shift

    started = time.perf_counter()
    folder = generate_category(
        args.category,
        args.root,
        seed=args.seed,
        image_size=args.image_size,
        overwrite=not args.shift,
    )
    print(f"{folder}: ready in {time.perf_counter() - started:.1f} s")
    for shift in args.shift or ():
        started = time.perf_counter()
        shifted = generate_shift(args.category, args.root, shift)
        print(f"wrote {shifted} in {time.perf_counter() - started:.1f} s")


# ---- data mvtec --------------------------------------------------------------------------------


def _add_mvtec(group: Commands) -> None:
    from lightning_ad.data.mvtec import MVTEC_SHA256, MVTEC_URL

    mvtec = subcommand(
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
    preview = subcommand(
        group,
        "preview",
        "draw one PNG: normal images, twins, object masks, test defects",
        "  lightning-ad data preview --category screw --out preview.png\n"
        "  lightning-ad data preview --category bottle --data-root data/mvtec --out bottle.png\n",
        _data_preview,
        parents=[shared(category_option, data_location_options)],
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

    resolved = resolve_category(args)
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
    subcommand(
        group,
        "info",
        "count the images of a category per split and defect type",
        "  lightning-ad data info --category grid\n"
        "  lightning-ad data info --category screw --data-root data/mvtec\n",
        _data_info,
        parents=[shared(category_option, data_location_options)],
    )


def _data_info(args: argparse.Namespace) -> None:
    from rich.console import Console
    from rich.table import Table

    from lightning_ad.data.mvtec import MVTecCategory

    resolved = resolve_category(args)
    category = MVTecCategory.load(resolved.root)
    table = Table(title=resolved.describe())
    table.add_column("split/defect")
    table.add_column("images", justify="right")
    for key, count in category.counts().items():
        table.add_row(key, str(count))
    Console().print(table)
