"""``AnomalyNet``: the network as plain torch, with no Lightning in it.

uint8 images -> ImageNet normalisation -> backbone -> pooled embeddings; the metric head turns
embeddings into logits (with its margin only when labels are given); the optional patch head
turns PatchCore's patch features into twin logits per patch. ``AnomalyModule`` trains
it, ``explain.py`` asks it for Grad-CAM and the benchmarks time it.
"""

from __future__ import annotations

import torch
from torch import nn

from lightning_ad.errors import LightningADError
from lightning_ad.models import patchcore
from lightning_ad.models.backbones import Backbone, build_backbone
from lightning_ad.models.config import NetConfig
from lightning_ad.models.heads import build_head
from lightning_ad.models.patch_head import PatchHead

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class Classifier(nn.Module):
    """Normalised float images -> logits without margin: the view Grad-CAM needs."""

    def __init__(self, backbone: Backbone, head: nn.Module) -> None:
        super().__init__()
        self.backbone, self.head = backbone, head

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(images))


class AnomalyNet(nn.Module):
    """Backbone + metric-learning head (+ the twin-supervised patch head).

    Args:
        config: the backbone, the head and how they start (:class:`NetConfig`).
        channels_last: keep weights and images in NHWC. oneDNN's CPU convolutions and cuDNN's
            tensor-core ones are faster that way (``make bench`` B8 measures it).

    Raises:
        LightningADError: pretrained weights that cannot be found or read.
    """

    def __init__(self, config: NetConfig, channels_last: bool = True) -> None:
        super().__init__()
        self.config = config
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        backbone = build_backbone(config.backbone, config.pretrained)
        self.backbone = backbone.to(memory_format=self.memory_format)
        self.head = (
            build_head(
                config.head, self.backbone.out_features, config.n_classes, **config.head_params
            )
            if config.trains
            else None
        )
        self.patch_head = PatchHead(self.backbone.patch_channels) if config.patch_head else None
        self.register_buffer("pixel_mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1) * 255)
        self.register_buffer("pixel_std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1) * 255)

    @property
    def trains(self) -> bool:
        """False for the frozen baseline: there is nothing to train."""
        return self.head is not None

    def train(self, mode: bool = True) -> AnomalyNet:
        """As ``nn.Module.train``, but with ``bn_mode`` frozen the BatchNorm layers stay in
        eval mode: they normalise with, and never update, the pretrained statistics."""
        super().train(mode)
        if mode and self.config.bn_mode == "frozen":
            for layer in self.modules():
                if isinstance(layer, nn.modules.batchnorm._BatchNorm):
                    layer.eval()
        return self

    def normalise(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (B, 3, H, W) -> float, ImageNet-normalised, in the network's memory format."""
        pixels = (images.float() - self.pixel_mean) / self.pixel_std
        return pixels.contiguous(memory_format=self.memory_format)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 images -> pooled embeddings (B, D)."""
        return self.backbone(self.normalise(images))

    def embed(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """uint8 images -> pooled embeddings (B, D) and PatchCore's patch features (B, C, h, w),
        from one forward pass."""
        return patchcore.embed(self.backbone, self.normalise(images))

    def classifier(self) -> Classifier:
        if self.head is None:
            raise LightningADError("the frozen baseline (head none) has no classifier")
        return Classifier(self.backbone, self.head)
