"""What ``lightning-ad serve`` runs: MLflow's scoring server (the app of ``mlflow models serve``)
for one verified model, under uvicorn, behind a request body limit.

MLflow's app reads a whole request body into memory before it looks at it, and has no limit of
its own: one client could send gigabytes. Starlette's ``RequestBodyLimitMiddleware`` answers
413 ("Content Too Large") as soon as the declared length (or, for a chunked body, the bytes
received so far) passes the limit, before the app reads further, so an oversized request costs
the server no more than the limit. The number of images a request may hold (and so the size of
a ``maps=true`` answer) is bounded by
:data:`~lightning_ad.packaging.MAX_IMAGES_ENV`, which ``DetectorModel`` reads. Each
request is scored in a thread of its own (MLflow's ``asyncio.to_thread``), so a large one does
not stop the server from reading and answering the others.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from starlette.middleware.body_limit import RequestBodyLimitMiddleware
from starlette.types import ASGIApp

from lightning_ad.packaging import MAX_IMAGES_ENV

MAX_BODY_ENV = "LIGHTNING_AD_SERVE_MAX_BODY_BYTES"
DEFAULT_MAX_BODY_MB = 32
"""A request body's limit: 32 MB holds a few hundred base64 PNGs of 256 px."""
DEFAULT_MAX_IMAGES = 64
"""Images a request may hold: with ``maps=true`` the answer is then at most 64 maps of S x S
numbers (S = 256: about 0.7 MB of JSON each)."""


def create_app() -> ASGIApp:
    """The app uvicorn runs (``--factory``): MLflow's scoring server for the model in
    MLflow's model-path variable, behind Starlette's body limit."""
    from mlflow.pyfunc import scoring_server

    model = scoring_server.load_model_with_mlflow_config(
        os.environ[scoring_server._SERVER_MODEL_PATH]
    )
    return RequestBodyLimitMiddleware(scoring_server.init(model), int(os.environ[MAX_BODY_ENV]))


def server_process(
    model: Path, host: str, port: int, max_body_bytes: int, max_images: int
) -> tuple[list[str], dict[str, str]]:
    """The command and environment that serve ``model`` (a verified local copy: see
    :func:`~lightning_ad.packaging.digests.servable_model`) on ``host:port``.

    Args:
        model: the model's folder.
        host, port: where to listen.
        max_body_bytes: the request body limit.
        max_images: the most images one request may hold.

    Returns:
        ``python -m uvicorn ...`` (this interpreter's: found whatever PATH says) and its
        environment.
    """
    from mlflow.environment_variables import MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT
    from mlflow.pyfunc import scoring_server

    command = [
        sys.executable, "-m", "uvicorn", f"{__name__}:create_app", "--factory",
        "--host", host, "--port", str(port),
    ]  # fmt: skip
    env = {
        **os.environ,
        scoring_server._SERVER_MODEL_PATH: model.resolve().as_uri(),
        MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT.name: str(
            MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT.get()
        ),
        MAX_BODY_ENV: str(max_body_bytes),
        MAX_IMAGES_ENV: str(max_images),
    }
    return command, env
