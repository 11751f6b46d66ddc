"""``make bench``: where a trial's time goes, measured side by side.

Every ratio alternates A and B over several repeats in one process and reports the median with
the min-max, because absolute times on a shared machine drift. Prints a table and writes it as
JSON under ``reports/bench/``. ``--tiny`` runs every row on minimal inputs (what the tests use).

    python benchmarks/run.py [--tiny] [--only B1,B2] [--out reports/bench]

B9 (torch.compile) is left out unless named in --only: compiling costs minutes.
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from lightning_ad.config import TrialConfig
from lightning_ad.data.datamodule import AnomalyDataModule, load_images
from lightning_ad.data.synthetic import generate_category
from lightning_ad.data.twins import (
    DistortionTwin,
    keras_reference_transform,
    object_masks,
    warp_patch,
)
from lightning_ad.errors import LightningADError

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


def _row(
    id_: str,
    what: str,
    goal: str,
    values: list[float],
    fmt: str,
    met: Callable[[float], bool] | None,
) -> Row:
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


def _datamodule(setup: Setup, batch_size: int = 32) -> AnomalyDataModule:
    dm = AnomalyDataModule(
        setup.data_root / "screw",
        classes=3,
        image_size=setup.image_size,
        batch_size=batch_size,
        seed=0,
        num_workers=0,
    )
    dm.setup("fit")
    return dm


def _one_epoch_trainer(limit_train_batches: int | float = 1.0):
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


# ---- B1: Lightning's cost per epoch --------------------------------------------------------


def b1_trainer_vs_bare_loop(setup: Setup) -> Row:
    import torch.nn.functional as F

    from lightning_ad.models.module import AnomalyModule

    dm = _datamodule(setup)
    template = AnomalyModule(
        backbone="mobilenet_v2", head="arcface", n_classes=3, pretrained="false"
    )

    def bare() -> None:
        model = copy.deepcopy(template)
        model.train()
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-4, amsgrad=True)
        loader = dm.train_dataloader()
        loader.sampler.set_epoch(0)
        for images, targets in loader:
            embeddings = model(images)
            loss = F.cross_entropy(model.head(embeddings, targets), targets)
            model.head(embeddings).argmax(dim=1)  # the module's train/acc: margin-free logits
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()

    def lightning() -> None:
        model = copy.deepcopy(template)
        _one_epoch_trainer().fit(model, train_dataloaders=dm.train_dataloader())

    ratios = side_by_side(bare, lightning, setup.repeats)
    return _row(
        "B1",
        "Trainer epoch / bare PyTorch epoch (same model, batches, threads)",
        "<= 1.05",
        ratios,
        "{:.3f}x",
        lambda r: r <= 1.05,
    )


# ---- B2: the distortion twin against the article's Keras/scipy way --------------------------


def b2_distortion_vs_keras(setup: Setup) -> Row:
    """At the trial's image size (the goal) and at the article's 224 px (for the trend)."""
    ratios, diffs = _distortion_ratios(setup, setup.image_size)
    large_ratios, _ = _distortion_ratios(setup, 224)
    row = _row(
        "B2",
        "distortion twin: scipy (Keras' way) time / OpenCV time",
        ">= 10x, outputs agree",
        ratios,
        f"{{:.1f}}x faster at {setup.image_size} px, "
        f"{statistics.median(large_ratios):.1f}x at 224 px",
        lambda r: r >= 10,
    )
    row.result += f"; mean |diff| {np.mean(diffs):.3f} grey levels"
    return row


def _distortion_ratios(setup: Setup, size: int) -> tuple[list[float], list[float]]:
    """Keras/OpenCV time ratios over the same 200 patches and angles, and the mean |difference|
    per patch. Both sides transform the patch only; cutting and pasting it is the same work.
    OpenCV runs single-threaded, as ``AnomalyDataModule.setup`` sets it for training."""
    cv2.setNumThreads(1)
    images = load_images(tuple(s.path for s in _category(setup).train[:64]), size)
    masks, _ = object_masks(images, "auto")
    twin = DistortionTwin()
    rng = np.random.default_rng(0)
    jobs = []
    for i in range(200):
        params = twin.sample(images[i % len(images)], masks[i % len(images)], rng)
        x0, y0, x1, y1 = params.box
        jobs.append((images[i % len(images)][y0:y1, x0:x1], params.theta, params.tx, params.ty))

    def opencv() -> list[np.ndarray]:
        return [warp_patch(*job) for job in jobs]

    def keras() -> list[np.ndarray]:
        return [keras_reference_transform(*job) for job in jobs]

    ratios = side_by_side(opencv, keras, setup.repeats)
    diffs = [
        float(np.abs(ours.astype(np.float32) - reference).mean())
        for ours, reference in zip(opencv(), keras(), strict=True)
    ]
    return ratios, diffs


# ---- B3: waiting for batches ---------------------------------------------------------------


def b3_data_wait_share(setup: Setup) -> Row:
    import torch.nn.functional as F

    from lightning_ad.models.module import AnomalyModule

    dm = _datamodule(setup)
    model = AnomalyModule(backbone="mobilenet_v2", head="arcface", n_classes=3, pretrained="false")
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
            loss = F.cross_entropy(model.head(model(images), targets), targets)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            waiting, total = waiting + (t1 - t0), total + (time.perf_counter() - t0)
        shares.append(waiting / total)
    return _row(
        "B3",
        "share of a training step spent waiting for the batch (twins on the fly)",
        "<= 5 %",
        [100 * s for s in shares],
        "{:.1f} %",
        lambda s: s <= 5,
    )


# ---- B4 + B5: scoring share and memory of one trial -----------------------------------------


def _trial_probe(setup: Setup) -> dict:
    """One trial with sweeps/default.yaml's settings in a fresh process: time, scoring, peak RSS."""
    config = {
        "data_root": str(setup.data_root),
        "image_size": setup.image_size,
        "epochs": 1 if setup.tiny else 3,
        "tiny": setup.tiny,
    }
    out = subprocess.run(
        [sys.executable, __file__, "--trial-probe", json.dumps(config)],
        capture_output=True,
        text=True,
        timeout=1800,
        cwd=REPO,
    )
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-2000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def probe_main(raw: str) -> None:
    from lightning_ad import scoring
    from lightning_ad.train import run_trial

    settings = json.loads(raw)
    backbone = "mobilenet_v2" if settings["tiny"] else "efficientnet_lite0"
    config = TrialConfig(
        category="screw",
        backbone=backbone,
        head="arcface",
        classes=3,
        epochs=settings["epochs"],
        image_size=settings["image_size"],
        data_root=settings["data_root"],
        artifacts="minimal",
        pretrained="false" if settings["tiny"] else "auto",
    )
    with tempfile.TemporaryDirectory() as tmp:
        result = run_trial(config, tracking_uri=f"sqlite:///{tmp}/mlflow.db", progress_bar=False)
    dm = AnomalyDataModule(Path(settings["data_root"]) / "screw", image_size=settings["image_size"])
    dm.setup("fit")
    cache = dm.train_set.images.nbytes + dm.val_set.images.nbytes + dm.test_set.images.nbytes
    # The scorers on embeddings of the trial's real sizes: all train/good images and the test split.
    dim = 1280
    rng = np.random.default_rng(0)
    train, test = rng.normal(size=(len(dm.good_set), dim)), rng.normal(size=(len(dm.test_set), dim))
    t0 = time.perf_counter()
    scoring.lof_scores(train, test)
    scoring.knn_scores(train, test)
    torch.softmax(torch.from_numpy(test[:, :3]), dim=1)  # prob: one softmax over the head's logits
    scoring_seconds = time.perf_counter() - t0
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(
        json.dumps(
            {
                "trial_seconds": result.seconds,
                "scoring_seconds": scoring_seconds,
                "peak_rss_mb": peak_kb / 1024,
                "image_cache_mb": cache / 2**20,
            }
        )
    )


def b4_b5_trial(setup: Setup) -> list[Row]:
    probe = _trial_probe(setup)
    share = 100 * probe["scoring_seconds"] / probe["trial_seconds"]
    b4 = Row(
        "B4",
        "fitting + applying lof, knn, prob / whole trial",
        "<= 3 %",
        f"{share:.2f} % ({probe['scoring_seconds']:.2f} s of {probe['trial_seconds']:.0f} s)",
        share,
        share,
        share,
        share <= 3,
    )
    b5 = Row(
        "B5",
        "peak RSS of one default trial; in-memory image cache",
        "<= 2.5 GB",
        f"{probe['peak_rss_mb'] / 1024:.2f} GB; cache {probe['image_cache_mb']:.1f} MB",
        probe["peak_rss_mb"],
        probe["peak_rss_mb"],
        probe["peak_rss_mb"],
        probe["peak_rss_mb"] <= 2560,
    )
    return [b4, b5]


# ---- B6: how cost grows ----------------------------------------------------------------------


def b6_scaling(setup: Setup) -> Row:

    from lightning_ad.models.module import AnomalyModule

    sizes = (32, 48) if setup.tiny else (64, 96, 128, 224)
    fractions = (0.25, 0.5, 1.0)
    curve = {}

    def epoch_seconds(size: int, fraction: float) -> float:
        dm = AnomalyDataModule(
            setup.data_root / "screw", classes=3, image_size=size, batch_size=32, num_workers=0
        )
        dm.setup("fit")
        keep = max(1, int(fraction * len(dm.train_set.images)))
        dm.train_set.images, dm.train_set.object_masks = (
            dm.train_set.images[:keep],
            dm.train_set.object_masks[:keep],
        )
        model = AnomalyModule(
            backbone="mobilenet_v2", head="arcface", n_classes=3, pretrained="false"
        )
        trainer = _one_epoch_trainer()
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


# ---- B7: local workers -------------------------------------------------------------------------


def b7_workers(setup: Setup) -> Row:
    """quick.yaml end to end: 1, 2 and 4 local workers on the default stores, then 2 workers on
    PostgreSQL + an mlflow server (started here when PostgreSQL is installed)."""
    walls = {f"{n} local": _quick_sweep_wall(setup, ["--workers", str(n)]) for n in (1, 2, 4)}
    try:
        walls["2 on PostgreSQL"] = _quick_sweep_on_postgres(setup)
    except LightningADError as err:
        print(f"B7: PostgreSQL row skipped: {err}", file=sys.stderr)
    one = walls["1 local"]
    return Row(
        "B7",
        "sweeps/quick.yaml wall time by workers",
        "report the speed-up",
        "; ".join(f"{k}: {v:.0f} s ({one / v:.2f}x)" for k, v in walls.items()),
        one / walls["2 local"],
        min(one / v for v in walls.values()),
        max(one / v for v in walls.values()),
        None,
    )


def _quick_sweep_wall(setup: Setup, extra: list[str]) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        command = [
            sys.executable, "-m", "lightning_ad", "sweep",
            "--sweep", str(REPO / "sweeps" / "quick.yaml"),
            "--data-root", str(setup.data_root), "--quiet", *extra,
        ]  # fmt: skip
        t0 = time.perf_counter()
        subprocess.run(command, cwd=tmp, check=True, capture_output=True, timeout=1800)
        return time.perf_counter() - t0


def _quick_sweep_on_postgres(setup: Setup) -> float:
    from lightning_ad.services import free_port, local_services

    root = Path(tempfile.mkdtemp(prefix="bench-services-"))
    root.chmod(0o755)  # PostgreSQL runs as its own user
    with local_services(root, free_port(), free_port()) as services:
        return _quick_sweep_wall(
            setup,
            [
                "--workers",
                "2",
                "--storage",
                services.storage,
                "--tracking-uri",
                services.tracking_uri,
            ],
        )


# ---- B8: memory format ----------------------------------------------------------------------


def b8_channels_last(setup: Setup) -> Row:
    """The default sweep's backbone, 8 training batches through the Trainer, NCHW vs NHWC."""
    from lightning_ad.models.module import AnomalyModule

    dm = _datamodule(setup)
    modules = {
        layout: AnomalyModule(
            backbone="efficientnet_lite0", head="arcface", n_classes=3, channels_last=layout
        )
        for layout in (False, True)
    }

    def epoch(channels_last: bool) -> None:
        model = copy.deepcopy(modules[channels_last])
        _one_epoch_trainer(limit_train_batches=8).fit(
            model, train_dataloaders=dm.train_dataloader()
        )

    ratios = side_by_side(lambda: epoch(True), lambda: epoch(False), setup.repeats)
    return _row(
        "B8",
        "efficientnet_lite0 training: NCHW time / channels_last time",
        "keep channels_last if > 1",
        ratios,
        "{:.2f}x faster with channels_last",
        lambda r: r > 1,
    )


def b9_torch_compile(setup: Setup) -> Row:
    """``torch.compile`` on the same backbone: the one-off compile cost, then compiled training
    steps against eager ones on the same batch. Not in the default run (it costs minutes)."""
    import torch.nn.functional as F

    from lightning_ad.models.module import AnomalyModule

    images, targets = next(iter(_datamodule(setup).train_dataloader()))
    models = {}
    for compiled in (False, True):
        module = AnomalyModule(backbone="efficientnet_lite0", head="arcface", n_classes=3)
        body = torch.compile(module.backbone) if compiled else module.backbone
        optimizer = torch.optim.Adam(module.parameters(), lr=1e-4, amsgrad=True)
        models[compiled] = (module, body, optimizer)

    def step(compiled: bool) -> None:
        module, body, optimizer = models[compiled]
        loss = F.cross_entropy(module.head(body(module.normalise(images)), targets), targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    started = time.perf_counter()
    step(True)
    compile_seconds = time.perf_counter() - started
    ratios = side_by_side(lambda: step(True), lambda: step(False), setup.repeats * 2)
    row = _row(
        "B9",
        "efficientnet_lite0 training step: eager time / torch.compile time",
        "keep compile if it pays within a trial",
        ratios,
        "{:.2f}x",
        None,
    )
    row.result += f" after {compile_seconds:.0f} s of compiling"
    return row


# ---- the table ---------------------------------------------------------------------------------


def _category(setup: Setup):
    from lightning_ad.data.mvtec import MVTecCategory

    return MVTecCategory.load(setup.data_root / "screw")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--tiny", action="store_true", help="minimal inputs: checks that every row runs"
    )
    parser.add_argument("--only", help="comma list of rows, e.g. B1,B2")
    parser.add_argument("--out", type=Path, default=Path("reports/bench"))
    parser.add_argument("--data-dir", type=Path, default=Path("data/synthetic"))
    parser.add_argument("--trial-probe", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.trial_probe:
        probe_main(args.trial_probe)
        return 0
    root = Path(tempfile.mkdtemp(prefix="bench-data-")) if args.tiny else args.data_dir
    generate_category(
        "screw", root, image_size=64 if args.tiny else 256, max_per_folder=12 if args.tiny else None
    )
    setup = Setup(root, 32 if args.tiny else 96, 2 if args.tiny else 5, args.tiny)
    rows_to_run = {
        "B1": lambda: [b1_trainer_vs_bare_loop(setup)],
        "B2": lambda: [b2_distortion_vs_keras(setup)],
        "B3": lambda: [b3_data_wait_share(setup)],
        "B4": lambda: b4_b5_trial(setup),
        "B6": lambda: [b6_scaling(setup)],
        "B7": lambda: [b7_workers(setup)],
        "B8": lambda: [b8_channels_last(setup)],
        "B9": lambda: [b9_torch_compile(setup)],
    }
    default_rows = set(rows_to_run) - {"B9"} | {"B5"}
    wanted = set(args.only.split(",")) if args.only else default_rows
    rows: list[Row] = []
    started = time.perf_counter()
    for key, run in rows_to_run.items():
        if key in wanted or (key == "B4" and "B5" in wanted):
            rows += run()
    _print(rows)
    record = {
        "machine": f"{platform.node()} {platform.machine()}, {torch.get_num_threads()} torch "
        f"threads, torch {torch.__version__}, cuda {torch.cuda.is_available()}",
        "seconds": round(time.perf_counter() - started, 1),
        "tiny": args.tiny,
        "rows": [asdict(r) for r in rows],
    }
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for path in (args.out / f"bench-{stamp}.json", args.out / "latest.json"):
        path.write_text(json.dumps(record, indent=1))
    print(f"wrote {args.out / 'latest.json'} ({record['seconds']:.0f} s)")
    return 0


def _print(rows: list[Row]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="make bench (median; min-max over repeats)")
    for column in ("id", "what", "goal", "result", "min-max", "met"):
        table.add_column(column)
    for r in rows:
        spread = f"{r.low:.3g}-{r.high:.3g}" if r.low != r.high else ""
        table.add_row(
            r.id, r.what, r.goal, r.result, spread, {True: "yes", False: "NO", None: "-"}[r.met]
        )
    Console(width=200).print(table)


if __name__ == "__main__":
    sys.exit(main())
