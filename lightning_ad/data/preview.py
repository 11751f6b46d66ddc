"""One PNG that shows a category: normal images, every twin drawn on them (the pixels it
changed outlined), the category mean and object masks the twins use, and one test image per
defect type with its ground-truth outline."""

from __future__ import annotations

import contextlib
from pathlib import Path

import cv2
import numpy as np

from lightning_ad.data.datamodule import load_images, load_masks
from lightning_ad.data.masks import mean_image, object_masks
from lightning_ad.data.mvtec import MVTecCategory
from lightning_ad.data.twins import TWINS, Twin, draw
from lightning_ad.errors import LightningADError

COLUMNS = 5
OUTLINE = (255, 40, 40)


def render_preview(
    category_dir: Path | str,
    out: Path | str,
    image_size: int = 160,
    seed: int = 0,
    dataset: str = "custom",
) -> Path:
    """Write the preview sheet of the category in ``category_dir`` to ``out`` (PNG).

    The title names the category and its ``dataset`` kind, never the folder: the sheet is
    shared and committed, and an absolute path would only tell where it was made."""
    from lightning_ad.plots import pyplot

    plt = pyplot()

    category = MVTecCategory.load(category_dir)
    train = load_images(tuple(s.path for s in category.train), image_size)
    masks, mode = object_masks(train, "auto")
    rng = np.random.default_rng(seed)
    picks = np.sort(rng.choice(len(train), size=min(COLUMNS, len(train)), replace=False))
    normals = [train[i] for i in picks]

    rows: list[tuple[str, list[np.ndarray | None]]] = [("normal", normals)]
    for name, cls in TWINS.items():
        # Each twin with its mask outlined: a rotated patch can be subtle to the eye.
        twins = [_changing(cls(), train[i], masks[i], rng) for i in picks]
        rows.append((f"twin: {name}", [_outlined(image, mask) for image, mask in twins]))
    mean = mean_image(train).astype(np.uint8)
    rows.append(
        (
            f"mean | masks ({mode})",
            [mean, *[_tint(train[i], masks[i]) for i in picks[: COLUMNS - 1]]],
        )
    )
    rows.append(("test defects", _defect_examples(category, image_size)))

    fig, axes = plt.subplots(
        len(rows), COLUMNS, figsize=(2.0 * COLUMNS, 2.1 * len(rows)), squeeze=False
    )
    for r, (label, images) in enumerate(rows):
        for c in range(COLUMNS):
            ax = axes[r][c]
            ax.set_xticks([])
            ax.set_yticks([])
            image = images[c] if c < len(images) else None
            if image is None:
                ax.axis("off")
                continue
            ax.imshow(image[0] if isinstance(image, tuple) else image)
            if isinstance(image, tuple):
                ax.set_title(image[1], fontsize=8)
        axes[r][0].set_ylabel(label, fontsize=9)
    fig.suptitle(
        f"{category.name} ({dataset} data): {len(category.train)} train/good, "
        f"{len(category.test)} test images",
        fontsize=10,
    )
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def _changing(
    twin: Twin, image: np.ndarray, object_mask: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`draw`, drawn again while a draw changes nothing (a patch on a flat region): the
    sheet is to show what a twin does; five draws that change nothing are an error."""
    for _ in range(4):
        with contextlib.suppress(LightningADError):
            return draw(twin, image, object_mask, rng)
    return draw(twin, image, object_mask, rng)


def _outlined(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The image with the outer outline of ``mask`` drawn on it."""
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    return cv2.drawContours(image.copy(), contours, -1, OUTLINE, 1)


def _tint(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The image with its object mask washed in green."""
    out = image.astype(np.float32)
    out[mask] = 0.5 * out[mask] + 0.5 * np.array([40, 220, 40])
    return out.astype(np.uint8)


def _defect_examples(category: MVTecCategory, size: int) -> list:
    """The first image of each defect type with its mask outlined, titled with the type."""
    firsts = [next(s for s in category.test if s.defect == d) for d in category.defect_types]
    firsts = firsts[:COLUMNS]
    if not firsts:
        return []
    images = load_images(tuple(s.path for s in firsts), size)
    masks = load_masks(tuple(s.mask_path for s in firsts), size)
    examples = []
    for sample, image, mask in zip(firsts, images, masks, strict=True):
        examples.append((_outlined(image, mask), sample.defect))
    return examples
