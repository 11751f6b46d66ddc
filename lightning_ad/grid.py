"""The words of a sweep's grid, shared by every layer that names cells; nothing but Python.

A *cell* is one combination of category, backbone, head and class set; its *seeds* are the
independent training runs whose median the comparison table shows.
"""

from __future__ import annotations

GRID_KEYS = ("category", "backbone", "head", "classes", "seed")
"""The settings a sweep's grid spans; the seeds are what medians are taken over."""
CELL_KEYS = GRID_KEYS[:-1]
"""What names a cell: every grid key but the seed."""
MODEL_KEYS = CELL_KEYS[1:]
"""What picks a detector within one category: ``--cell`` names these (the category and the
seed have flags of their own)."""
NO_HEAD = "none"
"""The frozen baseline's head: nothing is trained, the backbone's embeddings are scored as they
are. Its table column is :data:`FROZEN_LABEL`."""
FROZEN_LABEL = "frozen"


def cell_label(head: str, classes: str) -> str:
    """Column label of a (head, classes) pair: the frozen baseline has one column."""
    return FROZEN_LABEL if head == NO_HEAD else f"{head} {classes}"
