import math
import re

import pytest
import torch
import torch.nn.functional as F
from pytorch_metric_learning.losses import ArcFaceLoss, CosFaceLoss

from lightning_ad.errors import LightningADError
from lightning_ad.models.heads import HEADS, build_head

D, C, B = 16, 3, 12


@pytest.fixture
def batch() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return torch.randn(B, D, generator=generator), torch.arange(B) % C


def _cosine(head, x: torch.Tensor) -> torch.Tensor:
    return F.normalize(x, dim=1) @ F.normalize(head.weight, dim=1).T


@pytest.mark.parametrize("name", sorted(HEADS))
def test_weight_shape_and_logits_shape(name: str, batch) -> None:
    head = build_head(name, D, C)
    assert head.weight.shape == (C, D)
    assert head(batch[0]).shape == (B, C) and head(*batch).shape == (B, C)


def test_softmax_is_linear(batch) -> None:
    head = build_head("softmax", D, C)
    torch.testing.assert_close(head(batch[0]), batch[0] @ head.weight.T + head.bias)


def test_l2softmax_scales_the_unit_embedding(batch) -> None:
    head = build_head("l2softmax", D, C, alpha=15.0)
    expected = 15.0 * F.normalize(batch[0], dim=1) @ head.weight.T + head.bias
    torch.testing.assert_close(head(batch[0]), expected)


def test_arcface_formula(batch) -> None:
    x, y = batch
    head = build_head("arcface", D, C, s=30.0, m=0.05)
    cos = _cosine(head, x)
    expected = cos.clone()
    rows = torch.arange(B)
    expected[rows, y] = torch.cos(torch.acos(cos[rows, y]) + 0.05)
    torch.testing.assert_close(head(x, y), 30 * expected)
    torch.testing.assert_close(head(x), 30 * cos)  # no label, no margin


def test_cosface_formula(batch) -> None:
    x, y = batch
    head = build_head("cosface", D, C)
    expected = _cosine(head, x)
    expected[torch.arange(B), y] -= 0.4
    torch.testing.assert_close(head(x, y), 30 * expected)


def test_adacos_fixed_scale(batch) -> None:
    head = build_head("adacos", D, 4)
    assert float(head.s) == pytest.approx(math.sqrt(2) * math.log(3))
    torch.testing.assert_close(head(*batch), head(batch[0]))  # no margin at all


def test_adacos_dynamic_scale_moves_only_in_training() -> None:
    head = build_head("adacos", D, C, dynamic=True)
    x, y = torch.randn(B, D), torch.arange(B) % C
    before = float(head.s)
    head.eval()
    head(x, y)
    assert float(head.s) == before
    head.train()
    head(x, y)
    assert float(head.s) != before and math.isfinite(float(head.s))


def test_adacos_needs_three_classes() -> None:
    with pytest.raises(LightningADError, match="adacos needs 3 or more classes"):
        build_head("adacos", D, 2)


@pytest.mark.parametrize(
    ("name", "reference"), [("arcface", ArcFaceLoss), ("cosface", CosFaceLoss)]
)
def test_matches_pytorch_metric_learning(name: str, reference, batch) -> None:
    x, y = batch
    head = build_head(name, D, C, s=30.0, m=0.05 if name == "arcface" else 0.4)
    # The library's margin is in degrees for ArcFace; its W is (D, C), ours (C, D).
    margin = math.degrees(0.05) if name == "arcface" else 0.4
    loss_fn = reference(num_classes=C, embedding_size=D, margin=margin, scale=30.0)
    loss_fn.W.data = head.weight.detach().T.clone()
    torch.testing.assert_close(head(x), loss_fn.get_logits(x))  # same logits without margin
    torch.testing.assert_close(F.cross_entropy(head(x, y), y), loss_fn(x, y))  # same loss with it


@pytest.mark.parametrize("name", sorted(HEADS))
def test_gradients_finite_at_cos_plus_minus_one(name: str) -> None:
    head = build_head(name, D, C)
    x = torch.cat([head.weight.detach()[:1], -head.weight.detach()[:1]]).requires_grad_(True)
    y = torch.tensor([0, 0])  # cos = +1 for the first row, -1 for the second, on the target
    F.cross_entropy(head(x, y), y).backward()
    assert torch.isfinite(x.grad).all()
    assert all(torch.isfinite(p.grad).all() for p in head.parameters())


def test_unknown_head_and_parameter() -> None:
    with pytest.raises(
        LightningADError,
        match=re.escape(
            "unknown head 'arcfce' (did you mean 'arcface'?); "
            "valid: softmax, l2softmax, arcface, cosface, adacos, none"
        ),
    ):
        build_head("arcfce", D, C)
    with pytest.raises(
        LightningADError, match="unknown parameter 'margin' for head 'arcface'; valid: s, m"
    ):
        build_head("arcface", D, C, margin=0.5)
