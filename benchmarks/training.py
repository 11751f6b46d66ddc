"""Rows about training: Lightning's overhead (B1), waiting for batches (B3), how an epoch grows
with pixels and images (B6), the memory format (B8), ``torch.compile`` (B9) and the patch head's
crops at the scoring scale (B12)."""

from __future__ import annotations

import copy
import statistics
import time

import torch

from benchmarks.harness import (
    Row,
    Setup,
    benchmark,
    data_config,
    datamodule,
    one_epoch_trainer,
    ratio_row,
    side_by_side,
    train_step,
)
from lightning_ad.config import TrialConfig
from lightning_ad.data.datamodule import AnomalyDataModule
from lightning_ad.models.module import AnomalyModule


def _module(
    backbone: str = "mobilenet_v2", pretrained: str = "auto", channels_last: bool = True
) -> AnomalyModule:
    config = TrialConfig(backbone=backbone, head="arcface", classes=3, pretrained=pretrained)
    return AnomalyModule(config.net, config.optimizer, config.scoring, channels_last)


@benchmark("B1")
def trainer_vs_bare_loop(setup: Setup) -> Row:
    """One epoch through the Trainer against the same epoch in plain torch."""
    dm = datamodule(setup)
    template = _module(pretrained="false")

    def bare() -> None:
        model = copy.deepcopy(template)
        model.train()
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-4, amsgrad=True)
        loader = dm.train_dataloader()
        loader.sampler.set_epoch(0)
        for images, targets in loader:
            train_step(model.net, images, targets, optimizer)

    def lightning() -> None:
        model = copy.deepcopy(template)
        one_epoch_trainer().fit(model, train_dataloaders=dm.train_dataloader())

    return ratio_row(
        "B1",
        "Trainer epoch / bare PyTorch epoch (same model, batches, threads)",
        "<= 1.05",
        side_by_side(bare, lightning, setup.repeats),
        "{:.3f}x",
        lambda r: r <= 1.05,
    )


@benchmark("B3")
def data_wait_share(setup: Setup) -> Row:
    dm = datamodule(setup)
    model = _module(pretrained="false")
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    shares = []
    for epoch in range(setup.repeats):
        loader = dm.train_dataloader()
        loader.sampler.set_epoch(epoch)
        waiting = total = 0.0
        iterator = iter(loader)
        while True:
            t0 = time.perf_counter()
            try:
                images, targets = next(iterator)
            except StopIteration:
                break
            t1 = time.perf_counter()
            train_step(model.net, images, targets, optimizer)
            waiting, total = waiting + (t1 - t0), total + (time.perf_counter() - t0)
        shares.append(waiting / total)
    return ratio_row(
        "B3",
        "share of a training step spent waiting for the batch (twins on the fly)",
        "<= 5 %",
        [100 * s for s in shares],
        "{:.1f} %",
        lambda s: s <= 5,
    )


@benchmark("B6")
def scaling(setup: Setup) -> Row:
    sizes = (32, 48) if setup.tiny else (64, 96, 128, 224)
    fractions = (0.25, 0.5, 1.0)
    curve = {}

    def epoch_seconds(size: int, fraction: float) -> float:
        dm = AnomalyDataModule(
            setup.data_root / "screw", data_config(image_size=size), num_workers=0
        )
        dm.setup("fit")
        keep = max(1, int(fraction * len(dm.train_set.images)))
        dm.train_set.images, dm.train_set.object_masks = (
            dm.train_set.images[:keep],
            dm.train_set.object_masks[:keep],
        )
        model = _module(pretrained="false")
        trainer = one_epoch_trainer()
        t0 = time.perf_counter()
        trainer.fit(model, train_dataloaders=dm.train_dataloader())
        return time.perf_counter() - t0

    for size in sizes:
        curve[f"{size}px/100%"] = epoch_seconds(size, 1.0)
    for fraction in fractions[:-1]:
        curve[f"{sizes[1]}px/{fraction:.0%}"] = epoch_seconds(sizes[1], fraction)
    base = curve[f"{sizes[1]}px/100%"]
    text = ", ".join(f"{k}: {v:.1f} s" for k, v in curve.items())
    per_pixel = [curve[f"{s}px/100%"] / base / (s * s / sizes[1] ** 2) for s in sizes]
    return Row(
        "B6",
        "one training epoch (mobilenet_v2) by image size and share of train images",
        "roughly linear in pixels x images",
        text + f"; time/pixels vs {sizes[1]} px: " + " ".join(f"{r:.2f}" for r in per_pixel),
        base,
        min(curve.values()),
        max(curve.values()),
        None,
    )


@benchmark("B8")
def channels_last(setup: Setup) -> Row:
    """The default sweep's backbone, 8 training batches through the Trainer, NCHW vs NHWC."""
    dm = datamodule(setup)
    modules = {
        layout: _module("efficientnet_lite0", channels_last=layout) for layout in (False, True)
    }

    def epoch(layout: bool) -> None:
        model = copy.deepcopy(modules[layout])
        one_epoch_trainer(limit_train_batches=8).fit(model, train_dataloaders=dm.train_dataloader())

    return ratio_row(
        "B8",
        "efficientnet_lite0 training: NCHW time / channels_last time",
        "keep channels_last if > 1",
        side_by_side(lambda: epoch(True), lambda: epoch(False), setup.repeats),
        "{:.2f}x faster with channels_last",
        lambda r: r > 1,
    )


@benchmark("B9", default=False)
def torch_compile(setup: Setup) -> Row:
    """``torch.compile`` on the same backbone: the one-off compile cost, then compiled training
    steps against eager ones on the same batch. Not in the default run (it costs minutes)."""
    images, targets = next(iter(datamodule(setup).train_dataloader()))
    models = {}
    for compiled in (False, True):
        module = _module("efficientnet_lite0")
        body = torch.compile(module.net.backbone) if compiled else module.net.backbone
        optimizer = torch.optim.Adam(module.parameters(), lr=1e-4, amsgrad=True)
        models[compiled] = (module.net, body, optimizer)

    def step(compiled: bool) -> None:
        net, body, optimizer = models[compiled]
        train_step(net, images, targets, optimizer, backbone=body)

    started = time.perf_counter()
    step(True)
    compile_seconds = time.perf_counter() - started
    row = ratio_row(
        "B9",
        "efficientnet_lite0 training step: eager time / torch.compile time",
        "keep compile if it pays within a trial",
        side_by_side(lambda: step(True), lambda: step(False), setup.repeats * 2),
        "{:.2f}x",
        None,
    )
    row.result += f" after {compile_seconds:.0f} s of compiling"
    return row


@benchmark("B12")
def patch_head_epoch(setup: Setup) -> Row:
    """One training epoch of the default sweep's network with the patch head (``image_size``
    crops of the images at the scoring side, twins drawn on the crops, their masks, the patch
    loss) against one without it (the pooled head's path: whole images at ``image_size``),
    the same samples per epoch."""
    scoring_size = 64 if setup.tiny else 256
    settings = dict(backbone="efficientnet_lite0", head="arcface", classes=3)
    settings |= dict(image_size=setup.image_size, score_image_size=scoring_size)
    runs = {}
    for patch_head in (False, True):
        config = TrialConfig(**settings, patch_head_weight=1.0 if patch_head else 0.0)
        dm = AnomalyDataModule(setup.data_root / "screw", config.data, num_workers=0)
        dm.setup("fit")
        module = AnomalyModule(config.net, config.optimizer, config.scoring)
        runs[patch_head] = (dm, module)
    seconds: dict[bool, list[float]] = {False: [], True: []}

    def epoch(patch_head: bool) -> None:
        dm, module = runs[patch_head]
        started = time.perf_counter()
        one_epoch_trainer().fit(copy.deepcopy(module), train_dataloaders=dm.train_dataloader())
        seconds[patch_head].append(time.perf_counter() - started)

    row = ratio_row(
        "B12",
        f"efficientnet_lite0 epoch with the patch head ({setup.image_size}-px crops of "
        f"{scoring_size}-px images, masks, patch loss) / without ({setup.image_size}-px images)",
        "report",
        side_by_side(lambda: epoch(False), lambda: epoch(True), setup.repeats),
        "{:.2f}x",
        None,
    )
    medians = {k: statistics.median(v[1:]) for k, v in seconds.items()}  # past the warm-up
    row.result += f" ({medians[True]:.1f} s against {medians[False]:.1f} s)"
    return row
