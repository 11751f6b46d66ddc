"""B11: ``lightning-ad predict`` throughput, images per second, at the default sweep's scoring
side (256 px) on this machine, by batch size.

The detector is the default sweep's kind (efficientnet_lite0 + arcface class3, PatchCore score,
1 % coreset), fitted on the built-in screw's normals and saved and loaded as the MLflow model a
trial logs; its weights are as built (throughput does not depend on training). Each pass reads,
decodes, resizes and scores every test image from disk, as ``predict`` does.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader, TensorDataset

from benchmarks.harness import Row, Setup, benchmark, category
from lightning_ad.data.datamodule import load_images
from lightning_ad.deploy import predict
from lightning_ad.models.config import NetConfig
from lightning_ad.models.detector import Detector, DetectorSpec
from lightning_ad.models.net import AnomalyNet
from lightning_ad.packaging.mlflow_model import BATCH_SIZE, save_detector

BATCH_SIZES = tuple(sorted({1, 2, 4, 16, BATCH_SIZE}))


@benchmark("B11")
def predict_throughput(setup: Setup) -> Row:
    side = 64 if setup.tiny else 256
    backbone = "mobilenet_v2" if setup.tiny else "efficientnet_lite0"
    with tempfile.TemporaryDirectory(prefix="bench-predict-") as tmp:
        folder = _saved_detector(setup, backbone, side, Path(tmp) / "model")
        detector = predict.load_detector(str(folder), f"sqlite:///{tmp}/mlflow.db")
        images = predict.find_images([setup.data_root / "screw" / "test"])
        rates: dict[int, list[float]] = {size: [] for size in BATCH_SIZES}
        for size in BATCH_SIZES:  # warm-up: one pass each
            predict.predict(detector, images[: 2 * size], batch_size=size)
        for _ in range(max(1, setup.repeats // 2)):
            for size in BATCH_SIZES:  # alternated, so that drift hits every size alike
                started = time.perf_counter()
                predict.predict(detector, images, batch_size=size)
                rates[size].append(len(images) / (time.perf_counter() - started))
    medians = {size: statistics.median(r) for size, r in rates.items()}
    chosen = rates[BATCH_SIZE]
    others = ", ".join(f"batch {s}: {m:.1f}" for s, m in medians.items() if s != BATCH_SIZE)
    return Row(
        "B11",
        f"predict: images/s at {side} px, {backbone} + PatchCore, {len(images)} test images "
        f"from disk (decode, resize, score), batch {BATCH_SIZE}, "
        f"{torch.get_num_threads()} torch threads",
        "report",
        f"{medians[BATCH_SIZE]:.1f} img/s ({others})",
        medians[BATCH_SIZE],
        min(chosen),
        max(chosen),
        None,
    )


def _saved_detector(setup: Setup, backbone: str, side: int, folder: Path) -> Path:
    pretrained = "false" if setup.tiny else "auto"
    net = AnomalyNet(NetConfig(backbone, "arcface", 3, {}, pretrained, "frozen")).eval()
    spec = DetectorSpec(backbone, "arcface", 3, {}, "patch", side, True, 0.01)
    normals = load_images(tuple(s.path for s in category(setup).train), side)
    tensor = torch.from_numpy(normals.transpose(0, 3, 1, 2).copy())
    loader = DataLoader(TensorDataset(tensor, torch.zeros(len(tensor))), batch_size=32)
    detector = Detector.fit(spec, net, loader)
    detector.calibrate(loader, 0.01)  # any threshold: only the time is measured
    return save_detector(folder, detector, normals[0])
