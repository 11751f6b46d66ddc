"""Which folder a category name means, the same way for every command.

1. An explicit ``--data-root DIR`` wins: ``DIR/<category>`` in MVTec AD layout, or ``DIR`` itself
   when it is a category folder (it has train/good). Dataset ``custom``.
2. Otherwise ``<data_dir>/mvtec/<category>`` if it exists (see ``lightning-ad data mvtec``).
   Dataset ``mvtec``.
3. Otherwise the built-in look-alike, generated on first use into ``<data_dir>/synthetic``.
   Dataset ``synthetic``.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path

from lightning_ad.data.mvtec import GOOD, find_category_dir
from lightning_ad.data.synthetic import CATEGORIES, generate_category
from lightning_ad.errors import DataError

DEFAULT_DATA_DIR = Path("data")


@dataclass(frozen=True)
class ResolvedCategory:
    """A category name resolved to a folder, and which kind of data set that folder is."""

    name: str
    root: Path
    dataset: str  # mvtec | synthetic | custom

    def describe(self) -> str:
        return f"category '{self.name}': {self.dataset} data in {self.root}"


def resolve_category(
    name: str, data_root: Path | str | None = None, data_dir: Path | str = DEFAULT_DATA_DIR
) -> ResolvedCategory:
    """Resolve ``name`` to a category folder; generates a built-in category when needed.

    Args:
        name: a category: a folder under ``data_root``, else under ``data_dir``/mvtec, else a
            built-in one (rendered into ``data_dir``/synthetic when missing).
        data_root: a folder of categories in MVTec AD layout, searched first.
        data_dir: where ``mvtec/`` and ``synthetic/`` live.

    Returns:
        The category's folder and which kind of data set it is.

    Raises:
        DataError: no such category (the closest built-in name suggested).
    """
    if data_root is not None:
        data_root = Path(data_root)
        if (data_root / "train" / GOOD).is_dir():
            return ResolvedCategory(name, data_root, "custom")
        return ResolvedCategory(name, find_category_dir(data_root, name), "custom")
    mvtec = Path(data_dir) / "mvtec" / name
    if mvtec.is_dir():
        return ResolvedCategory(name, mvtec, "mvtec")
    if name in CATEGORIES:
        return ResolvedCategory(
            name, generate_category(name, Path(data_dir) / "synthetic"), "synthetic"
        )
    hint = difflib.get_close_matches(name, CATEGORIES, n=1)
    did_you_mean = f" Did you mean '{hint[0]}'?" if hint else ""
    raise DataError(
        f"unknown category '{name}': not in {mvtec.parent} and not built in "
        f"({', '.join(CATEGORIES)}).{did_you_mean} For your own images pass --data-root DIR "
        "(MVTec AD layout)."
    )
