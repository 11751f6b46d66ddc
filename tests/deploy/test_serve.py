"""``lightning-ad serve`` (MLflow's scoring server under uvicorn) answers one image on a free
loopback port with the score the trial gave it, refuses a body over its limit and a request
with too many images, and goes on serving. Integration: a real server process."""

from __future__ import annotations

import base64
import http.client
import json
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from lightning_ad import tracking
from lightning_ad.services import free_port
from lightning_ad.train import TrialResult
from tests.helpers import wait_for_http

pytestmark = pytest.mark.integration


def _post(url: str, body: dict) -> dict:
    request = urllib.request.Request(
        url, json.dumps(body).encode(), {"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())


def _status_of_a_body_declared_at(port: int, length: int) -> int:
    """The status the server answers to a request that declares ``length`` bytes of body and
    has sent none of them yet."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        connection.putrequest("POST", "/invocations")
        connection.putheader("Content-Type", "application/json")
        connection.putheader("Content-Length", str(length))
        connection.endheaders()
        return connection.getresponse().status
    finally:
        connection.close()


def test_serve_answers_one_image_with_the_trials_score(
    trial: TrialResult, store: str, synthetic_root: Path, tmp_path: Path
) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env["PATH"] = "/usr/bin:/bin"  # as under make: the venv's bin/ is not on PATH
    server = subprocess.Popen(
        [sys.executable, "-m", "lightning_ad", "serve", "--model", f"runs:/{trial.run_id}/model",
         "--port", str(port), "--tracking-uri", store, "--max-body-mb", "1", "--max-images", "4"],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(f"{base}/ping", server)
        logged = tracking.test_scores(store, trial.run_id)
        image = logged.image[len(logged) - 1]  # a defective one
        data = base64.b64encode((synthetic_root / "screw" / image).read_bytes()).decode()
        request = {"dataframe_split": {"columns": ["image"], "data": [[data]]}}
        [answer] = _post(f"{base}/invocations", request)["predictions"]
        assert answer["error"] == ""
        # One image a forward pass here, four in the trial: oneDNN picks other kernels for
        # another batch size, so float32 sums differ in their last digits (~2e-5 relative).
        assert answer["score"] == pytest.approx(logged["fused"].iloc[-1], rel=1e-4, abs=1e-6)
        [with_map] = _post(f"{base}/invocations", request | {"params": {"maps": True}})[
            "predictions"
        ]
        assert len(with_map["map"]) == len(with_map["map"][0]) == 32  # the scoring side
        assert _status_of_a_body_declared_at(port, 1_100_000) == 413  # before it is sent
        too_many = {"dataframe_split": {"columns": ["image"], "data": [[data]] * 5}}
        with pytest.raises(urllib.error.HTTPError) as refused:
            _post(f"{base}/invocations", too_many)
        assert refused.value.code == 400 and b"at most 4" in refused.value.read()
        [again] = _post(f"{base}/invocations", request)["predictions"]  # still serving
        assert again["score"] == answer["score"]
    finally:
        os.killpg(server.pid, signal.SIGINT)
        server.communicate(timeout=60)
