"""The detector as an MLflow model (``mlflow.pyfunc``): what a trial logs as ``model``, what
``lightning-ad register`` puts in the registry, what ``predict`` and ``serve`` load.

Input: a DataFrame with one column ``image``, each cell an encoded image file's bytes (PNG,
JPEG, ...; base64 in a JSON request, as MLflow's scoring server expects for a binary column).
Output: one row per image: ``score``, ``anomalous`` (score above the stored threshold) and
``error`` (empty when the image was scored; else why not, and ``score`` is NaN). With the
parameter ``maps=true``, also ``map``: the anomaly map served with the detector's scorer
(PatchCore's, or the patch head's for ``twinseg``) at the detector's image side.

The model is saved as code (``model_code.py``), not as a pickle; its weights are tensors read
with ``torch.load(weights_only=True)``. ``predict`` never loads it through MLflow (it reads the
detector's data files after checking their digests) and ``serve`` checks every file first
(:mod:`lightning_ad.packaging.digests`).
"""

from __future__ import annotations

import os
import tempfile
from importlib import metadata
from pathlib import Path

import cv2
import mlflow.pyfunc
import numpy as np
import pandas as pd
import torch
from mlflow import MlflowClient
from mlflow.models import ModelSignature

from lightning_ad.data.mvtec import decode_image
from lightning_ad.errors import LightningADError
from lightning_ad.models.detector import Detector
from lightning_ad.packaging import MAX_IMAGES_ENV

MODEL_ARTIFACT = "model"
"""Where a trial run keeps its detector: ``runs:/RUN_ID/model``."""
DETECTOR_ARTIFACT = "detector"
BATCH_SIZE = 2
"""Images per forward pass: on a CPU small batches are fastest, their patch features and
distance blocks staying in cache (``make bench`` B11; docs/design-notes.md has the numbers)."""
IMAGE, SCORE, ANOMALOUS, ERROR, MAP = "image", "score", "anomalous", "error", "map"
SIDE_FACTOR = 16
"""An image over ``(SIDE_FACTOR x the detector's side)²`` pixels (and at least 4096 x 4096) is
refused before it is decoded, unless the caller sets its own limit."""


class DetectorModel(mlflow.pyfunc.PythonModel):
    """``mlflow.pyfunc`` face of a saved :class:`~lightning_ad.models.detector.Detector`."""

    def load_context(self, context) -> None:
        """Read the detector's files (``detector/``) from the model's artifacts."""
        self.detector = Detector.load(Path(context.artifacts[DETECTOR_ARTIFACT]))

    def predict(
        self, context, model_input: pd.DataFrame, params: dict | None = None
    ) -> pd.DataFrame:
        """One output row per input row; an unscored image has its ``error``, and null
        ``score`` and ``anomalous`` (never a verdict it did not earn)."""
        if IMAGE not in model_input:
            raise _bad_request(
                f"the input has columns {list(model_input.columns)}; it needs one column "
                f"'{IMAGE}' of encoded image bytes"
            )
        limit = os.environ.get(MAX_IMAGES_ENV)  # set by ``lightning-ad serve``
        if limit is not None and len(model_input) > int(limit):
            raise _bad_request(
                f"{len(model_input)} images in one request; this server takes at most {limit} "
                "(send them in several requests)"
            )
        encoded = list(model_input[IMAGE])
        names = [f"image {i}" for i in range(len(encoded))]
        out = score_images(self.detector, encoded, names, maps=bool((params or {}).get("maps")))
        if MAP in out:  # JSON has lists, not arrays
            out[MAP] = [None if m is None else m.tolist() for m in out[MAP]]
        # JSON has null, not NaN or pandas' NA
        return out.astype(object).where(out.notna(), None)


def _bad_request(message: str) -> Exception:
    """What the scoring server answers with 400, not 500."""
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

    return MlflowException(message, error_code=INVALID_PARAMETER_VALUE)


def score_images(
    detector: Detector,
    encoded: list[bytes],
    names: list[str],
    maps: bool = False,
    batch_size: int = BATCH_SIZE,
) -> pd.DataFrame:
    """Score encoded images in batches; an image that cannot be read or taken gets its reason
    in ``error`` (naming it by ``names``), a NaN score and no verdict (NA), and the others
    are still scored.
    With ``maps``, a column ``map`` holds each scored image's anomaly map (S, S)."""
    pictures, errors = prepare_images(detector, encoded, names)
    return score_pictures(detector, pictures, errors, maps, batch_size)


def prepare_images(
    detector: Detector, encoded: list[bytes], names: list[str], max_pixels: int | None = None
) -> tuple[list[np.ndarray | None], list[str]]:
    """Each encoded image decoded and prepared as the detector takes it (None, and its reason
    in the errors, where it cannot be: over ``max_pixels``, default :data:`SIDE_FACTOR`
    squared times the detector's side squared; truncated; not an image)."""
    limit = max_pixels or max(SIDE_FACTOR * detector.spec.image_size, 4096) ** 2
    pictures: list[np.ndarray | None] = []
    errors = [""] * len(encoded)
    for i, data in enumerate(encoded):
        try:
            image = decode_image(data, names[i], max_pixels=limit)
            pictures.append(detector.prepare(image, names[i]))
        except LightningADError as err:
            pictures.append(None)
            errors[i] = str(err)
    return pictures, errors


def score_pictures(
    detector: Detector,
    pictures: list[np.ndarray | None],
    errors: list[str],
    maps: bool = False,
    batch_size: int = BATCH_SIZE,
) -> pd.DataFrame:
    """:func:`score_images` of images already prepared (None: not scored, see ``errors``)."""
    scores = np.full(len(pictures), np.nan)
    heatmaps: list[np.ndarray | None] = [None] * len(pictures)
    ready = [(i, picture) for i, picture in enumerate(pictures) if picture is not None]
    for start in range(0, len(ready), batch_size):
        rows, images = zip(*ready[start : start + batch_size], strict=True)
        batch = torch.from_numpy(np.stack(images).transpose(0, 3, 1, 2).copy())
        batch_scores, batch_maps = detector.score_batch(batch)
        scores[list(rows)] = batch_scores
        for row, heatmap in zip(rows, batch_maps, strict=True):
            heatmaps[row] = heatmap
    verdicts = pd.array(scores > detector.threshold.value, dtype="boolean")
    verdicts[np.isnan(scores)] = pd.NA  # not scored: no verdict
    out = pd.DataFrame({SCORE: scores, ANOMALOUS: verdicts, ERROR: errors})
    if maps:
        out[MAP] = heatmaps
    return out


def signature() -> ModelSignature:
    """Input: the encoded images; output: score, verdict, error; parameter: maps."""
    from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema

    return ModelSignature(
        inputs=Schema([ColSpec("binary", IMAGE)]),
        outputs=Schema(
            [ColSpec("double", SCORE), ColSpec("boolean", ANOMALOUS), ColSpec("string", ERROR)]
        ),
        params=ParamSchema([ParamSpec("maps", "boolean", False)]),
    )


def requirements() -> list[str]:
    """The packages the model needs, at this process's versions (lightning_ad itself comes
    from this checkout: ``pip install -e`` it where the model is served)."""
    names = ("torch", "torchvision", "mlflow", "scikit-learn", "opencv-python-headless", "pandas")
    # A local build tag (torch 2.14.1+cpu) names no package an index has.
    return [f"{name}=={metadata.version(name).split('+')[0]}" for name in names]


def save_detector(folder: Path, detector: Detector, example: np.ndarray) -> Path:
    """Save ``detector`` as an MLflow model in ``folder`` (new), with ``example`` (an RGB
    image) as its input example: the UI shows a request that works."""
    png = cv2.imencode(".png", cv2.cvtColor(example, cv2.COLOR_RGB2BGR))[1].tobytes()
    with tempfile.TemporaryDirectory(prefix="lightning_ad-detector-") as tmp:
        weights = detector.save(Path(tmp) / DETECTOR_ARTIFACT)
        mlflow.pyfunc.save_model(
            folder,
            python_model=str(Path(__file__).with_name("model_code.py")),
            artifacts={DETECTOR_ARTIFACT: str(weights)},
            signature=signature(),
            input_example=pd.DataFrame({IMAGE: [png]}),
            pip_requirements=requirements(),
            metadata={"threshold": detector.threshold.describe(), "scorer": detector.spec.scorer},
        )
    return folder


def log_detector(
    client: MlflowClient,
    run_id: str,
    detector: Detector,
    example: np.ndarray,
) -> None:
    """:func:`save_detector`, logged to the run as ``model``, with the digests of its files
    (:mod:`lightning_ad.packaging.digests`: what ``predict`` and ``serve`` check them against)."""
    from lightning_ad.packaging import digests

    with tempfile.TemporaryDirectory(prefix="lightning_ad-model-") as tmp:
        folder = save_detector(Path(tmp) / MODEL_ARTIFACT, detector, example)
        digests.record(client, run_id, folder)
        client.log_artifacts(run_id, str(folder), MODEL_ARTIFACT)
