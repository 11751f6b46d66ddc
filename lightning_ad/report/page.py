"""The sweep's report as one page a person opens: ``reports/<sweep>/<category>/<fingerprint>/
index.html`` (and the parent run's ``report/index.html``, which MLflow's artifact view renders).

The verdict first, then the tables, the two plots, and a few anomaly maps per defect type of
the best trained cell and of the frozen baseline, each beside its image. The images are inside
the page (data URIs): MLflow's artifact view shows an HTML artifact in a sandboxed frame of its
own, where links to the files beside it do not resolve, and a mailed page works alone too.
"""

from __future__ import annotations

import base64
import html
from pathlib import Path

import pandas as pd

from lightning_ad.plots import CELL_PLOT, FOREST_PLOT
from lightning_ad.report.files import replace_whole
from lightning_ad.report.formats import render
from lightning_ad.report.tables import TITLES, display_table, tables_for
from lightning_ad.report.trials import Sweep
from lightning_ad.report.verdicts import Verdicts, verdict_sentences

PAGE = "index.html"
STYLE = (
    "body{font-family:sans-serif;max-width:72rem;margin:1.5rem auto;padding:0 1rem}"
    "table{border-collapse:collapse;font-size:.85rem;margin-bottom:1rem}"
    "td,th{border:1px solid #ccc;padding:.2rem .5rem;text-align:right}"
    "figure{display:inline-block;margin:.3rem;font-size:.75rem}"
    "figure img{height:9rem}.plot{max-width:100%}"
)


def write_page(
    trials: pd.DataFrame,
    spec: Sweep,
    out_dir: Path,
    maps: dict[str, list[Path]],
    verdicts: Verdicts | None = None,
) -> Path:
    """``index.html`` in ``out_dir``, where the plots and ``maps`` already are.

    Args:
        trials: the runs of one fingerprint (``report.fetch_trials``).
        spec: their sweep.
        out_dir: the report's folder.
        maps: a section title (``best cell: ...``) -> its map images.
        verdicts: those of ``trials``, when the caller has them.

    Returns:
        The page's path.
    """
    verdicts = verdicts or Verdicts(trials)
    sentences = verdict_sentences(trials, verdicts) or ["(no pair of class2 and class3 runs yet)"]
    parts = [
        f"<h1>{html.escape(spec.name)}: class3 vs class2</h1>",
        "<h2>Verdict (the trials' own scorer)</h2><ul>",
        *(f"<li>{html.escape(line)}</li>" for line in sentences),
        "</ul>",
    ]
    for name in tables_for(trials, ("median", "delta", "frozen", "pixel", "aupro", "shift")):
        table, bold = display_table(trials, spec, name, "html", verdicts)
        title = html.escape(TITLES[name])
        parts += [f"<h2>{title}</h2>", render(table, "html", bold_best=bold)]
    parts.append("<h2>Plots</h2>")
    for plot in (CELL_PLOT, FOREST_PLOT):
        if (out_dir / plot).is_file():
            parts.append(f'<img class="plot" src="{_inline(out_dir / plot)}" alt="{plot}"><br>')
    for title, images in maps.items():
        parts.append(f"<h2>Anomaly maps: {html.escape(title)}</h2>")
        for image in images:
            caption = html.escape(f"{image.parent.name}: {image.name}")
            parts.append(
                f'<figure><img src="{_inline(image)}"><figcaption>{caption}</figcaption></figure>'
            )
    text = (
        f'<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(spec.name)}'
        f"</title><style>{STYLE}</style></head><body>{''.join(parts)}</body></html>\n"
    )
    return replace_whole(out_dir / PAGE, lambda path: path.write_text(text))


def _inline(image: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(image.read_bytes()).decode()
