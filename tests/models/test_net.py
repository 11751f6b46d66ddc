"""AnomalyNet, the network in plain torch."""

from __future__ import annotations

import pytest
import torch

from lightning_ad.errors import LightningADError
from lightning_ad.models.config import NetConfig
from lightning_ad.models.net import AnomalyNet


def _net(backbone: str, head: str, bn_mode: str = "frozen") -> AnomalyNet:
    """An untrained network of three classes."""
    return AnomalyNet(NetConfig(backbone, head, 3, {}, pretrained="false", bn_mode=bn_mode))


def test_normalises_uint8_like_imagenet() -> None:
    net = _net("resnet18", "arcface")
    grey = torch.full((1, 3, 4, 4), 124, dtype=torch.uint8)
    pixels = net.normalise(grey)
    assert pixels.dtype == torch.float32
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    expected = [(124 / 255 - m) / s for m, s in zip(mean, std, strict=True)]
    assert torch.allclose(pixels[0, :, 0, 0], torch.tensor(expected), atol=1e-4)


def test_embeddings_and_logits_have_the_expected_shapes() -> None:
    net = _net("mobilenet_v2", "arcface")
    images = torch.randint(0, 255, (2, 3, 32, 32), dtype=torch.uint8)
    net.eval()
    with torch.no_grad():
        embeddings = net(images)
        logits = net.classifier()(net.normalise(images))
    assert embeddings.shape == (2, net.backbone.out_features) and logits.shape == (2, 3)
    assert net.trains


def test_the_frozen_baseline_has_no_head_and_no_classifier() -> None:
    net = _net("mobilenet_v2", "none")
    assert not net.trains and net.head is None
    with pytest.raises(LightningADError, match="has no classifier"):
        net.classifier()


@pytest.mark.parametrize(("bn_mode", "moves"), [("frozen", False), ("train", True)])
def test_bn_mode_decides_whether_training_moves_the_batchnorm_statistics(
    bn_mode: str, moves: bool
) -> None:
    torch.manual_seed(0)
    net = _net("mobilenet_v2", "arcface", bn_mode)
    before = {k: v.clone() for k, v in net.state_dict().items() if "running_mean" in k}
    net.train()
    net(torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8))
    after = {k: v for k, v in net.state_dict().items() if "running_mean" in k}
    changed = any(not torch.equal(before[k], after[k]) for k in before)
    assert changed == moves and net.training  # the rest of the net still trains
