"""The scoring server's guards, as ASGI calls without a network: a request body over the limit
gets 413 (Starlette's body limit, as ``serving.create_app`` wraps MLflow's app) before the app
reads it through, whether its length is declared or streamed; a request with too many images
gets 400."""

from __future__ import annotations

import asyncio

import pandas as pd
import pytest
from mlflow.exceptions import MlflowException
from starlette.middleware.body_limit import RequestBodyLimitMiddleware

from lightning_ad.packaging import MAX_IMAGES_ENV
from lightning_ad.packaging.mlflow_model import IMAGE, DetectorModel


async def _echo_length(scope, receive, send) -> None:
    """An app that reads the whole body, then answers with its length."""
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": str(len(body)).encode()})


def _call(app, chunks: list[bytes], declared: int | None) -> tuple[int, bytes, int]:
    """Status, body, and how many chunks the app asked for."""
    headers = [] if declared is None else [(b"content-length", str(declared).encode())]
    scope = {"type": "http", "method": "POST", "path": "/invocations", "headers": headers}
    pending, sent = list(chunks), []

    async def receive():
        chunk = pending.pop(0)
        return {"type": "http.request", "body": chunk, "more_body": bool(pending)}

    async def send(message):
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    return (
        sent[0]["status"],
        b"".join(m.get("body", b"") for m in sent[1:]),
        len(chunks) - len(pending),
    )


@pytest.mark.parametrize("declared", [True, False], ids=["content-length", "chunked"])
def test_a_body_over_the_limit_is_refused_before_it_is_read_through(declared: bool) -> None:
    app = RequestBodyLimitMiddleware(_echo_length, max_body_size=1000)
    chunks = [b"x" * 400] * 10
    status, body, read = _call(app, chunks, 4000 if declared else None)
    assert (status, body) == (413, b"Content Too Large")
    assert read == (0 if declared else 3)  # stopped at the chunk that passed the limit


def test_a_body_under_the_limit_reaches_the_app_whole() -> None:
    app = RequestBodyLimitMiddleware(_echo_length, max_body_size=1000)
    status, body, _ = _call(app, [b"x" * 400] * 2, None)
    assert (status, body) == (200, b"800")


def test_a_request_with_more_images_than_the_server_takes_is_a_bad_request(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(MAX_IMAGES_ENV, "3")
    images = pd.DataFrame({IMAGE: [b"not scored"] * 4})
    with pytest.raises(MlflowException, match=r"4 images in one request.*at most 3") as refused:
        DetectorModel().predict(None, images)
    assert refused.value.get_http_status_code() == 400
