"""The class sets a model learns: ``normal`` (class 0), then one class per twin
(:mod:`lightning_ad.data.twins`); the grid's ``classes`` values and the runs' labels."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from lightning_ad.data.twins import NORMAL, TWINS
from lightning_ad.errors import LightningADError, unknown


@dataclass(frozen=True)
class TwinClasses:
    """The classes a model learns: ``normal`` (class 0), then one class per twin.

    :meth:`parse` takes every way a user writes them: ``2`` or ``3`` (the article's presets,
    [normal, line] and [normal, line, distortion]), ``class2``, a label such as
    ``normal+cutpaste+scar``, the CLI's ``normal,cutpaste``, or a list. :attr:`label` writes them
    back the way the grid, the runs and the tables do, and ``parse(label)`` gives them again.
    """

    names: tuple[str, ...]

    @classmethod
    def parse(cls, value: int | str | Sequence[str] | TwinClasses) -> TwinClasses:
        if isinstance(value, TwinClasses):
            return value
        if isinstance(value, str) and value.removeprefix("class").isdigit():
            value = int(value.removeprefix("class"))
        if isinstance(value, int):
            if value not in PRESETS:
                raise LightningADError(
                    f"classes={value} has no preset; use {' or '.join(map(str, PRESETS))}, "
                    f"or twin names such as {NORMAL},cutpaste,scar"
                )
            return cls(PRESETS[value])
        names = tuple(value.replace(",", "+").split("+")) if isinstance(value, str) else value
        names = tuple(names)
        if not names or names[0] != NORMAL:
            raise LightningADError(f"classes {list(names)} must start with '{NORMAL}' (class 0)")
        for name in names[1:]:
            if name not in TWINS:
                raise unknown("twin", name, [NORMAL, *TWINS])
        if len(set(names)) != len(names) or len(names) < 2:
            raise LightningADError(f"classes {list(names)} need at least two distinct names")
        return cls(names)

    @property
    def label(self) -> str:
        """``class2`` / ``class3`` for the article's presets, else the names joined by ``+``."""
        for count, names in PRESETS.items():
            if names == self.names:
                return f"class{count}"
        return "+".join(self.names)

    def __len__(self) -> int:
        return len(self.names)


PRESETS: dict[int, tuple[str, ...]] = {
    2: (NORMAL, "line"),
    3: (NORMAL, "line", "distortion"),
}
CLASS2, CLASS3 = TwinClasses(PRESETS[2]).label, TwinClasses(PRESETS[3]).label
"""The two class sets the comparison table sets side by side (class3 - class2)."""
