"""The twin-supervised patch head: a small discriminator on PatchCore's patch features.

Twins are drawn by this project, so it knows which pixels each one changed
(:func:`lightning_ad.data.twins.draw`). The patch head learns from those masks, at the patch
grid PatchCore reads, which patch shows a twin: the idea of DRAEM's discriminative network and
of SimpleNet's patch discriminator, on the features the detector already computes. Its
probability map is the ``twinseg`` scorer's anomaly map.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import sigmoid_focal_loss

HIDDEN = 128
"""Channels of the head's one hidden layer."""
FOCAL_GAMMA = 2.0
"""The focal loss's focusing parameter (Lin et al. 2017; DRAEM's setting): most patches are
plainly normal, and their easy losses would otherwise swamp the few twin patches."""


class PatchHead(nn.Module):
    """1x1 convolutions: (B, C, h, w) patch features -> (B, h, w) twin logits.

    Args:
        in_channels: channels of the patch features
            (:attr:`~lightning_ad.models.backbones.Backbone.patch_channels`).
        hidden: channels of the hidden layer.
    """

    def __init__(self, in_channels: int, hidden: int = HIDDEN) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            nn.Conv2d(in_channels, hidden, 1),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, 1, 1),
        )

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        return self.layers(patches)[:, 0]


def patch_targets(masks: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """(B, H, W) bool twin masks -> (B, h, w) float: 1 where a patch holds a changed pixel.

    A patch's feature sees beyond its own cell, so a patch that holds one changed pixel of a
    thin line is a twin patch: max pooling, not the changed share."""
    return F.adaptive_max_pool2d(masks[:, None].float(), grid)[:, 0]


def patch_loss(logits: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Focal loss of the patch logits (B, h, w) against the twin masks (B, H, W), averaged
    over patches."""
    targets = patch_targets(masks, logits.shape[-2:])
    return sigmoid_focal_loss(logits, targets, alpha=-1, gamma=FOCAL_GAMMA, reduction="mean")
