"""PatchCore (Roth et al., "Towards Total Recall in Industrial Anomaly Detection", CVPR 2022).

A backbone's mid-level feature maps (its patch stages, stride 8 and 16), each 3x3-average
pooled for local context, the coarser one upsampled to the finer grid, concatenated: one feature
vector per patch. The memory bank is a greedy k-center coreset of the train/good patches; a test
patch's anomaly score is its distance to the nearest bank vector; an image's score is its
largest patch score; the anomaly map is the patch scores upsampled to the image and blurred.

Works on any :class:`~lightning_ad.models.backbones.Backbone`, frozen or trained.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from lightning_ad.errors import LightningADError
from lightning_ad.models.backbones import Backbone

PROJECTION_DIM = 32
"""Coreset selection runs on a random projection of the patches to this many dimensions (the
paper's Johnson-Lindenstrauss step): the distances barely move, the selection gets cheaper."""
BLUR_SIGMA_AT_256 = 4.0
"""The paper's Gaussian blur of the anomaly map, sigma 4 pixels, for a 256-pixel image; scaled
with the image side."""
CHUNK = 4096
"""Rows per block of a distance matrix: bounds memory at ``CHUNK x len(bank)`` floats."""


def embed(backbone: Backbone, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One forward pass over normalised ``pixels``: the pooled embeddings (B, D) and the patch
    features (B, C, H/8, W/8), read from the patch stages on the way."""
    with backbone.capture(backbone.patch_stages) as outputs:
        embeddings = backbone(pixels)
    maps = [F.avg_pool2d(outputs[s], 3, stride=1, padding=1) for s in backbone.patch_stages]
    grid = maps[0].shape[-2:]
    maps = [m if m.shape[-2:] == grid else F.interpolate(m, grid, mode="bilinear") for m in maps]
    return embeddings, torch.cat(maps, dim=1).float()


def patch_features(backbone: Backbone, pixels: torch.Tensor) -> torch.Tensor:
    """(B, C, H/8, W/8) patch features of normalised ``pixels`` (see :func:`embed`)."""
    return embed(backbone, pixels)[1]


def check_coreset_fraction(fraction: float) -> None:
    if not 0 < fraction <= 1:
        raise LightningADError(
            f"coreset_fraction {fraction} must lie in (0, 1]: the share of train/good patches "
            "kept in the memory bank (the paper: 0.01 to 0.25)"
        )


def greedy_coreset(features: torch.Tensor, size: int, seed: int = 0) -> torch.Tensor:
    """Indices of ``size`` rows of ``features`` (N, D) chosen by greedy k-center selection.

    Start from a random row; then repeatedly add the row farthest from every row chosen so far
    (the paper's Algorithm 1). The result covers the feature space with the smallest largest
    gap a greedy choice can give, so rare normal patches stay in the bank.
    """
    generator = torch.Generator(device="cpu").manual_seed(seed)
    n, dim = features.shape
    size = max(1, min(size, n))
    points = features
    if dim > PROJECTION_DIM:
        projection = torch.randn(dim, PROJECTION_DIM, generator=generator) / math.sqrt(
            PROJECTION_DIM
        )
        points = features @ projection.to(features.device, features.dtype)
    chosen = torch.empty(size, dtype=torch.long)
    chosen[0] = int(torch.randint(n, (1,), generator=generator))
    nearest = torch.full((n,), math.inf, device=features.device, dtype=points.dtype)
    # |x - c|^2 = |x|^2 - 2 x.c + |c|^2: one matrix-vector product per step, no N x D temporary.
    squares = points.pow(2).sum(dim=1)
    gap = torch.empty_like(nearest)
    for i in range(1, size + 1):
        last = chosen[i - 1]
        torch.addmv(squares, points, points[last], alpha=-2, out=gap).add_(squares[last])
        torch.minimum(nearest, gap, out=nearest)
        nearest[last] = 0.0  # exactly: the expansion above leaves rounding noise
        if i < size:
            chosen[i] = int(nearest.argmax())
    return chosen


class MemoryBank:
    """The coreset of train/good patch features, and nearest-neighbour distances to it.

    Args:
        coreset_fraction: share of the train/good patches kept (greedy k-center).
        seed: the coreset's random start and projection.
    """

    def __init__(self, coreset_fraction: float = 0.01, seed: int = 0) -> None:
        check_coreset_fraction(coreset_fraction)
        self.coreset_fraction, self.seed = coreset_fraction, seed
        self.bank: torch.Tensor | None = None

    def fit(self, patches: torch.Tensor) -> MemoryBank:
        """``patches``: (N, C, h, w) features of the train/good images, or their rows (M, C)
        (:func:`patch_rows`: built batch by batch, they spare a second copy of every patch)."""
        rows = patches if patches.dim() == 2 else patch_rows(patches)
        size = math.ceil(self.coreset_fraction * len(rows))
        self.bank = rows if size >= len(rows) else rows[greedy_coreset(rows, size, self.seed)]
        return self

    def distances(self, patches: torch.Tensor) -> torch.Tensor:
        """(N, h, w) Euclidean distance of every patch of ``patches`` to its nearest bank row."""
        if self.bank is None:
            raise LightningADError("MemoryBank.distances before fit")
        n, _, h, w = patches.shape
        rows = patch_rows(patches)
        nearest = torch.cat(
            [torch.cdist(chunk, self.bank).amin(dim=1) for chunk in rows.split(CHUNK)]
        )
        return nearest.view(n, h, w)


def patch_rows(patches: torch.Tensor) -> torch.Tensor:
    """(N, C, h, w) -> (N * h * w, C), one row per patch."""
    return patches.permute(0, 2, 3, 1).reshape(-1, patches.shape[1]).contiguous()


def anomaly_maps(distances: torch.Tensor, image_size: int) -> torch.Tensor:
    """(N, h, w) patch distances -> (N, S, S) maps: bilinear upsampling, then the paper's blur."""
    maps = F.interpolate(distances[:, None], (image_size, image_size), mode="bilinear")
    return gaussian_blur(maps, BLUR_SIGMA_AT_256 * image_size / 256)[:, 0]


def gaussian_blur(images: torch.Tensor, sigma: float) -> torch.Tensor:
    """(N, 1, H, W) blurred by a Gaussian of ``sigma`` pixels, truncated at +-4 sigma (as
    scipy's ``gaussian_filter``), edges reflected: torchvision's ``gaussian_blur``, but as two
    1-D passes (33 + 33 products a pixel at sigma 4, not 33 x 33)."""
    size = 2 * int(4 * sigma + 0.5) + 1
    x = torch.arange(size, dtype=images.dtype, device=images.device) - size // 2
    kernel = torch.exp(-0.5 * (x / sigma) ** 2)
    kernel = kernel / kernel.sum()
    padded = F.pad(images, [size // 2] * 4, mode="reflect")
    rows = F.conv2d(padded, kernel.view(1, 1, size, 1))
    return F.conv2d(rows, kernel.view(1, 1, 1, size))
