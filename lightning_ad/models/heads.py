"""Metric-learning heads: embeddings (B, D) -> logits (B, C).

Every head keeps its class weights in ``head.weight`` of shape (n_classes, in_features) and is
called as ``head(embeddings, labels=None)``. Margins are applied only when ``labels`` are given
(training and the validation loss); scoring calls the head without labels, so no margin.

Unlike the article's Keras layers, which L2-normalise over the whole batch tensor (no ``axis``),
these normalise each embedding and each class weight on its own, as the papers define it.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from lightning_ad.errors import LightningADError, unknown
from lightning_ad.grid import NO_HEAD

# acos has an infinite slope at +-1; clamping just inside keeps gradients finite there.
COS_EPS = 1e-6


class SoftmaxHead(nn.Module):
    """A plain linear classifier (daisukelab's "conventional" softmax head)."""

    min_classes = 2
    """The fewest classes the head is defined for (``normal`` included)."""

    def __init__(self, in_features: int, n_classes: int) -> None:
        super().__init__()
        linear = nn.Linear(in_features, n_classes)
        self.weight, self.bias = linear.weight, linear.bias

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return F.linear(embeddings, self.weight, self.bias)


class L2SoftmaxHead(SoftmaxHead):
    """L2-constrained softmax: ``alpha * x / ||x||``, then a linear classifier (Ranjan et al.,
    "L2-constrained Softmax Loss for Discriminative Face Verification", 2017)."""

    def __init__(self, in_features: int, n_classes: int, alpha: float = 15.0) -> None:
        super().__init__(in_features, n_classes)
        self.alpha = alpha

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return F.linear(self.alpha * F.normalize(embeddings, dim=1), self.weight, self.bias)


class CosineHead(nn.Module):
    """Base of the cosine-margin heads: logits = s * cos(theta), where the target class's cosine
    is changed by :meth:`margin_cosine` when labels are given. A new head is that one method."""

    min_classes = 2

    def __init__(self, in_features: int, n_classes: int, s: float) -> None:
        super().__init__()
        self.n_classes = n_classes
        self.weight = nn.Parameter(torch.empty(n_classes, in_features))
        nn.init.xavier_uniform_(self.weight)
        self.register_buffer("s", torch.tensor(float(s)))

    def cosine(self, embeddings: torch.Tensor) -> torch.Tensor:
        return F.linear(F.normalize(embeddings, dim=1), F.normalize(self.weight, dim=1))

    def margin_cosine(self, cosine: torch.Tensor) -> torch.Tensor:
        """The target class's cosine with the margin applied."""
        return cosine

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        cosine = self.cosine(embeddings)
        if labels is not None:
            target = F.one_hot(labels, self.n_classes).bool()
            cosine = torch.where(target, self.margin_cosine(cosine), cosine)
        return self.s * cosine


class ArcFaceHead(CosineHead):
    """Additive angular margin: cos(theta + m) on the target class (Deng et al., "ArcFace:
    Additive Angular Margin Loss for Deep Face Recognition", CVPR 2019). The article used s=30,
    m=0.05 rad. Past theta = pi - m, where cos(theta + m) would rise again, it uses
    cos(theta) - m sin(m), as pytorch-metric-learning does, to stay monotonic."""

    def __init__(self, in_features: int, n_classes: int, s: float = 30.0, m: float = 0.05) -> None:
        super().__init__(in_features, n_classes, s)
        self.m = m

    def margin_cosine(self, cosine: torch.Tensor) -> torch.Tensor:
        theta = torch.acos(cosine.clamp(-1 + COS_EPS, 1 - COS_EPS))
        return torch.where(
            theta <= math.pi - self.m, torch.cos(theta + self.m), cosine - self.m * math.sin(self.m)
        )


class CosFaceHead(CosineHead):
    """Additive cosine margin: cos(theta) - m on the target class (Wang et al., "CosFace: Large
    Margin Cosine Loss for Deep Face Recognition", CVPR 2018). daisukelab: s=30, m=0.4."""

    def __init__(self, in_features: int, n_classes: int, s: float = 30.0, m: float = 0.4) -> None:
        super().__init__(in_features, n_classes, s)
        self.m = m

    def margin_cosine(self, cosine: torch.Tensor) -> torch.Tensor:
        return cosine - self.m


class AdaCosHead(CosineHead):
    """No margin; the scale s set from the class count (Zhang et al., "AdaCos: Adaptively Scaling
    Cosine Logits for Effectively Learning Deep Face Representations", CVPR 2019).

    Fixed AdaCos (the article's): s = sqrt(2) ln(C - 1), which is 0 at C = 2, so it needs three
    classes or more. ``dynamic=True`` updates s from each training batch as the paper's dynamic
    AdaCos does: s = ln(B_avg) / cos(min(pi/4, median target angle)).
    """

    min_classes = 3  # s = sqrt(2) ln(C - 1) is 0 at C = 2: no gradient, nothing learnt

    def __init__(self, in_features: int, n_classes: int, dynamic: bool = False) -> None:
        super().__init__(in_features, n_classes, math.sqrt(2) * math.log(n_classes - 1))
        self.dynamic = dynamic

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        cosine = self.cosine(embeddings)
        if self.dynamic and labels is not None and self.training:
            self._update_scale(cosine.detach(), labels)
        return self.s * cosine

    @torch.no_grad()
    def _update_scale(self, cosine: torch.Tensor, labels: torch.Tensor) -> None:
        target = F.one_hot(labels, self.n_classes).bool()
        b_avg = (
            torch.where(target, torch.zeros_like(cosine), torch.exp(self.s * cosine)).sum(1).mean()
        )
        theta = torch.acos(cosine[target].clamp(-1 + COS_EPS, 1 - COS_EPS))
        self.s.fill_(torch.log(b_avg) / torch.cos(theta.median().clamp(max=math.pi / 4)))


HEADS: dict[str, type[nn.Module]] = {
    "softmax": SoftmaxHead,
    "l2softmax": L2SoftmaxHead,
    "arcface": ArcFaceHead,
    "cosface": CosFaceHead,
    "adacos": AdaCosHead,
}


def check_head(name: str, n_classes: int, params: Mapping[str, object] | None = None) -> None:
    """Every rule about a head, in one place: its name, its class count, its parameters."""
    if name == NO_HEAD:
        return
    if name not in HEADS:
        raise unknown("head", name, [*HEADS, NO_HEAD])
    if n_classes < HEADS[name].min_classes:
        raise LightningADError(head_class_count_problem(name, n_classes))
    allowed = head_parameters(name)
    extra = sorted(set(params or {}) - set(allowed))
    if extra:
        raise unknown("parameter", extra[0], allowed, of=f"head '{name}'")


def head_class_count_problem(name: str, n_classes: int) -> str | None:
    """Why head ``name`` cannot learn ``n_classes`` classes, or None when it can (or when the
    name is unknown: :func:`check_head` says so)."""
    if name not in HEADS or n_classes >= HEADS[name].min_classes:
        return None
    return (
        f"head {name} needs {HEADS[name].min_classes} or more classes, got {n_classes}; "
        "use more classes or another head"
    )


def build_head(name: str, in_features: int, n_classes: int, **params: float | bool) -> nn.Module:
    """The head called ``name``; ``params`` are its paper's parameters (alpha, s, m, dynamic)."""
    check_head(name, n_classes, params)
    return HEADS[name](in_features, n_classes, **params)


def head_parameters(name: str) -> dict[str, object]:
    """The tunable parameters of head ``name`` and their defaults (what gets logged)."""
    signature = inspect.signature(HEADS[name].__init__)
    skip = {"self", "in_features", "n_classes"}
    return {k: p.default for k, p in signature.parameters.items() if k not in skip}
