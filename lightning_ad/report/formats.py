"""The formats a table is written in, and a display table rendered as Markdown, HTML or LaTeX
(numbers to three decimals, deltas with their sign, the best cell of a row in bold)."""

from __future__ import annotations

import math

import pandas as pd

DISPLAY_FORMATS = ("md", "html", "latex")
DATA_FORMATS = ("csv", "parquet")
FORMATS = (*DISPLAY_FORMATS, *DATA_FORMATS)


def render(table: pd.DataFrame, fmt: str, bold_best: bool = False) -> str:
    """One display table as md, html or latex."""
    if fmt not in DISPLAY_FORMATS:
        raise ValueError(f"{fmt} is not a display format; valid: {', '.join(DISPLAY_FORMATS)}")
    if bold_best:
        marker = {
            "md": lambda s: f"**{s}**",
            "html": lambda s: f"<b>{s}</b>",
            "latex": lambda s: f"\\textbf{{{s}}}",
        }[fmt]
        table = _bold_best(table, marker)
    if fmt == "md":
        return _markdown(table)
    if fmt == "html":
        return table.to_html(index=False, escape=False, float_format=lambda v: f"{v:.3f}")
    return table.to_latex(index=False, escape=False, float_format=lambda v: f"{v:.3f}")


def format_value(column: str, value: object) -> str:
    """Deltas with their sign, p-values down to 0.001, other numbers plain, three decimals."""
    if isinstance(value, float):
        if math.isnan(value):
            return "n/a"
        if column.startswith("p") and value < 0.001:
            return "<0.001"
        return f"{value:+.3f}" if "delta" in column else f"{value:.3f}"
    return str(value)


def _bold_best(table: pd.DataFrame, bold) -> pd.DataFrame:
    """Bold the best median of each row, as the article did."""
    out = table.copy()
    value_columns = [c for c in table.columns if c not in ("backbone", "category")]
    for i, row in table.iterrows():
        values = {c: _median_of(row[c]) for c in value_columns}
        best = max((v for v in values.values() if not math.isnan(v)), default=None)
        for c, v in values.items():
            if best is not None and v == best:
                out.at[i, c] = bold(row[c])
    return out


def _median_of(cell: str) -> float:
    try:
        return float(str(cell).split(" ")[0])
    except ValueError:
        return float("nan")


def _markdown(table: pd.DataFrame) -> str:
    """A GitHub table without the optional ``tabulate`` dependency."""
    if table.empty:
        return "(no finished trials yet)\n"
    header = "| " + " | ".join(map(str, table.columns)) + " |"
    rule = "|" + "|".join("---" for _ in table.columns) + "|"
    body = [
        "| "
        + " | ".join(format_value(c, v) for c, v in zip(table.columns, row, strict=True))
        + " |"
        for row in table.itertuples(index=False)
    ]
    return "\n".join([header, rule, *body]) + "\n"
