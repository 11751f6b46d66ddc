"""What every benchmark row shares: the row record, the setup, side-by-side timing, the registry,
and the pieces of training the rows time (one DataModule, one Trainer epoch, one plain step)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from lightning_ad.config import TrialConfig
from lightning_ad.data.config import DataConfig
from lightning_ad.data.datamodule import AnomalyDataModule
from lightning_ad.models.net import AnomalyNet

REPO = Path(__file__).resolve().parents[1]


@dataclass
class Row:
    id: str
    what: str
    goal: str
    result: str
    median: float
    low: float
    high: float
    met: bool | None


@dataclass(frozen=True)
class Setup:
    data_root: Path
    image_size: int
    repeats: int
    tiny: bool


@dataclass(frozen=True)
class Benchmark:
    run: Callable[[Setup], list[Row]]
    rows: tuple[str, ...]
    """The row ids it produces (B4 also produces B5)."""
    default: bool
    """Part of a plain ``make bench`` (B9 compiles for minutes: only when named)."""


REGISTRY: dict[str, Benchmark] = {}


def benchmark(*rows: str, default: bool = True):
    """Register a function ``Setup -> Row | list[Row]`` as the benchmark producing ``rows``."""

    def register(function: Callable[[Setup], Row | list[Row]]):
        def run(setup: Setup) -> list[Row]:
            result = function(setup)
            return result if isinstance(result, list) else [result]

        REGISTRY[rows[0]] = Benchmark(run, rows, default)
        return function

    return register


def side_by_side(a: Callable[[], object], b: Callable[[], object], repeats: int) -> list[float]:
    """Times of b / times of a, alternating a, b, a, b ... (one warm-up each first)."""
    a()
    b()
    ratios = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        a()
        t1 = time.perf_counter()
        b()
        t2 = time.perf_counter()
        ratios.append((t2 - t1) / (t1 - t0))
    return ratios


def ratio_row(
    id_: str,
    what: str,
    goal: str,
    values: list[float],
    fmt: str,
    met: Callable[[float], bool] | None,
) -> Row:
    """A row from repeated measurements: the median (formatted by ``fmt``) and the min-max."""
    median = statistics.median(values)
    return Row(
        id_,
        what,
        goal,
        fmt.format(median),
        median,
        min(values),
        max(values),
        None if met is None else bool(met(median)),
    )


def data_config(**settings: object) -> DataConfig:
    """The data part of a trial with these ``settings`` (the rest at their defaults)."""
    return TrialConfig(**({"backbone": "mobilenet_v2"} | settings)).data


def datamodule(setup: Setup, batch_size: int = 32) -> AnomalyDataModule:
    dm = AnomalyDataModule(
        setup.data_root / "screw",
        data_config(image_size=setup.image_size, batch_size=batch_size),
        num_workers=0,
    )
    dm.setup("fit")
    return dm


def category(setup: Setup):
    from lightning_ad.data.mvtec import MVTecCategory

    return MVTecCategory.load(setup.data_root / "screw")


def one_epoch_trainer(limit_train_batches: int | float = 1.0):
    """A Trainer for exactly one training epoch and nothing else (no validation, logs, saves)."""
    import pytorch_lightning as pl

    return pl.Trainer(
        max_epochs=1,
        limit_train_batches=limit_train_batches,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )


def train_step(
    net: AnomalyNet,
    images: torch.Tensor,
    targets: torch.Tensor,
    optimizer: torch.optim.Optimizer,
    backbone: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """One optimisation step of the twin task in plain torch: what ``AnomalyModule`` does in a
    training step (its margin-free accuracy included), without Lightning. ``backbone`` replaces
    ``net.backbone`` (a compiled one, for B9)."""
    body = net.backbone if backbone is None else backbone  # (a compiled module has no truth value)
    embeddings = body(net.normalise(images))
    loss = F.cross_entropy(net.head(embeddings, targets), targets)
    net.head(embeddings).argmax(dim=1)  # the module's train/acc
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return loss
