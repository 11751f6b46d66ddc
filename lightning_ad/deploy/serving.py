"""What ``lightning-ad serve`` runs: MLflow's scoring server (the app of ``mlflow models serve``)
for one verified model, under uvicorn, behind a request body limit.

MLflow's app reads a whole request body into memory before it looks at it, and has no limit of
its own: one client could send gigabytes. ``BodyLimit`` answers 413 as soon as the declared
length (or, for a chunked body, the bytes received so far) passes the limit, before the app
reads further, so an oversized request costs the server no more than the limit. The number of
images a request may hold (and so the size of a ``maps=true`` answer) is bounded by
``MAX_IMAGES_ENV``, which :class:`~lightning_ad.deploy.mlflow_model.DetectorModel` reads. Each
request is scored in a thread of its own (MLflow's ``asyncio.to_thread``), so a large one does
not stop the server from reading and answering the others.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]

MAX_BODY_ENV = "LIGHTNING_AD_SERVE_MAX_BODY_BYTES"
MAX_IMAGES_ENV = "LIGHTNING_AD_SERVE_MAX_IMAGES"
DEFAULT_MAX_BODY_MB = 32
"""A request body's limit: 32 MB holds a few hundred base64 PNGs of 256 px."""
DEFAULT_MAX_IMAGES = 64
"""Images a request may hold: with ``maps=true`` the answer is then at most 64 maps of S x S
numbers (S = 256: about 0.7 MB of JSON each)."""


class _TooLarge(Exception):
    pass


class BodyLimit:
    """ASGI middleware: a request whose body passes ``max_bytes`` gets 413 with a JSON error."""

    def __init__(self, app: App, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and int(declared) > self.max_bytes:
            await self._refuse(send)
            return
        received, started = 0, False

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise _TooLarge
            return message

        async def watched(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, watched)
        except _TooLarge:
            if not started:
                await self._refuse(send)

    async def _refuse(self, send: Send) -> None:
        body = json.dumps(
            {
                "error_code": "REQUEST_TOO_LARGE",
                "message": f"the request body is over this server's limit of {self.max_bytes} "
                "bytes: send fewer images per request (or restart serve with a larger "
                "--max-body-mb)",
            }
        ).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
        await send({"type": "http.response.start", "status": 413, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def create_app() -> App:
    """The app uvicorn runs (``--factory``): MLflow's scoring server for the model in
    MLflow's model-path variable, behind ``BodyLimit``."""
    from mlflow.pyfunc import scoring_server

    model = scoring_server.load_model_with_mlflow_config(
        os.environ[scoring_server._SERVER_MODEL_PATH]
    )
    return BodyLimit(scoring_server.init(model), int(os.environ[MAX_BODY_ENV]))


def server_process(
    model: Path, host: str, port: int, max_body_bytes: int, max_images: int
) -> tuple[list[str], dict[str, str]]:
    """The command and environment that serve ``model`` (a verified local copy: see
    :func:`~lightning_ad.deploy.digests.servable_model`) on ``host:port``.

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
