"""The README's path, walked as a newcomer walks it: a fresh clone of HEAD, a shell whose PATH does
not hold the venv, and the README's own commands, read from the README so that the two cannot
drift apart: ``make sweep``, ``make table``, ``make ui`` (until its page and REST API answer),
then Ctrl-C. ``make test`` is the README's other command; CI runs it already, so it is not
nested here. Marked ``e2e`` (``make test-e2e``, run by ``.ci/run``).

The clone gets its own ``.venv`` that sees this interpreter's packages through a ``.pth`` file,
so the Makefile's install step runs for real (it installs the clone itself) without a second
6 GB torch download."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import sysconfig
import urllib.request
from pathlib import Path

import pytest

from lightning_ad.services import free_port
from tests.helpers import QUICK_FINISHED, wait_for_http

pytestmark = pytest.mark.e2e
REPO = Path(__file__).parents[1]
PASSED_THROUGH = re.compile(r"^(LANG|LC_.*|TMPDIR|.*_proxy|.*_PROXY|PIP_.*|SSL_.*|REQUESTS_CA.*)$")


def _bash_blocks() -> list[str]:
    return re.findall(r"```bash\n(.*?)```", (REPO / "README.md").read_text(), re.S)


def readme_commands(*markers: str) -> list[str]:
    """The ``make`` lines of the README's first code block and of the blocks holding each of
    ``markers`` (default: its table/UI block)."""
    blocks = _bash_blocks()
    chosen = [blocks[0], *(next(b for b in blocks if m in b) for m in markers or ("make ui",))]
    lines = [line.split("#")[0].strip() for block in chosen for line in block.splitlines()]
    return [line for line in lines if line.startswith("make ")]


def readme_curl() -> str:
    """The README's curl call, its line continuations joined."""
    block = next(b for b in _bash_blocks() if b.startswith("curl "))
    return block.replace("\\\n", " ").strip()


def _newcomer_env() -> dict[str, str]:
    """A login shell's environment: system PATH only, no venv, no MLflow settings."""
    env = {k: v for k, v in os.environ.items() if PASSED_THROUGH.match(k)}
    return env | {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                  "HOME": os.environ.get("HOME", "/root")}  # fmt: skip


@pytest.fixture(scope="module")
def clone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("newcomer") / "lightning_ad"
    subprocess.run(["git", "clone", "--quiet", str(REPO), str(folder)], check=True)
    venv = folder / ".venv"
    subprocess.run([sys._base_executable, "-m", "venv", str(venv)], check=True)
    paths = sysconfig.get_paths()
    [site] = venv.glob("lib/python3*/site-packages")
    here = dict.fromkeys([paths["purelib"], paths["platlib"]])  # one line each, no repeats
    (site / "reuse-test-interpreter-packages.pth").write_text("".join(f"{p}\n" for p in here))
    return folder


@pytest.fixture(scope="module")
def swept(clone: Path) -> Path:
    """The clone after the README's ``make sweep``, with ``SWEEP=quick``: the same path, 1 min."""
    sweep_line = next(c for c in readme_commands() if c.startswith("make sweep"))
    done = _make(clone, sweep_line, "SWEEP=quick", timeout=1200)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "8 of 8 cells complete" in done.stdout
    return clone


def _make(clone: Path, line: str, *extra: str, timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*line.split(), *extra], cwd=clone, env=_newcomer_env(), capture_output=True,
        text=True, timeout=timeout,
    )  # fmt: skip


def _api(base: str, path: str, body: dict | None = None) -> dict:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(
        f"{base}/api/2.0/mlflow/{path}", data=data, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.load(response)


@pytest.mark.timeout(2400)  # the sweep alone may take 1200 s on a loaded machine
def test_the_readme_path_works_for_a_newcomer(swept: Path) -> None:
    clone = swept
    commands = readme_commands()
    table_line = next(c for c in commands if c.startswith("make table"))
    ui_line = next(c for c in commands if c.startswith("make ui"))
    assert "make test" in commands

    table = _make(clone, table_line, "SWEEP=quick", timeout=300)
    assert table.returncode == 0, table.stdout + table.stderr
    assert "| mobilenet_v2 | screw |" in table.stdout
    assert (clone / "reports" / "quick" / "screw" / "latest" / "median_auc.parquet").is_file()

    port = free_port()
    ui = subprocess.Popen(
        [*ui_line.split(), f"PORT={port}"], cwd=clone, env=_newcomer_env(),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        page = wait_for_http(base, ui)
        assert "<html" in page.lower()
        announced = _lines_until(ui, "  quick / screw")  # make's echo and MLflow's start first
        experiment = _api(base, "experiments/get-by-name?experiment_name=lightning_ad-quick")
        experiment = experiment["experiment"]
        tags = {t["key"]: t["value"] for t in experiment.get("tags", [])}
        assert tags["mlflow.experimentKind"] == "custom_model_development"  # opens on runs
        search = {"experiment_ids": [experiment["experiment_id"]], "max_results": 100}
        [parent] = _api(
            base, "runs/search", search | {"filter": "tags.`lightning_ad.role` = 'sweep'"}
        )["runs"]
        parent_tags = {t["key"]: t["value"] for t in parent["data"]["tags"]}
        assert parent["info"]["status"] == "FINISHED"
        link = f"{base}/#/experiments/{experiment['experiment_id']}/runs/"
        link += f"{parent['info']['run_id']}?workflowType=machine_learning"
        assert announced[-1].endswith(link) and "MLflow UI:" in announced[-2]
        note = parent_tags["mlflow.note.content"]  # the parent run's Overview: verdict first
        assert note.startswith("### Verdict: class3 - class2")
        assert "### Median test AUC" in note and "### class3 - class2" in note
        query = f"tags.mlflow.parentRunId = '{parent['info']['run_id']}'"
        children = _api(base, "runs/search", search | {"filter": query})["runs"]
        assert len(children) == QUICK_FINISHED
        classes = {
            p["value"] for c in children for p in c["data"]["params"] if p["key"] == "classes"
        }
        assert classes == {"class2", "class3"}
    finally:
        os.killpg(ui.pid, signal.SIGINT)  # Ctrl-C in the terminal: the whole foreground group
        output, _ = ui.communicate(timeout=60)
    assert "Traceback" not in output, output
    with pytest.raises(OSError):
        urllib.request.urlopen(base, timeout=5)  # nothing listens any more


def _lines_until(process: subprocess.Popen, start: str) -> list[str]:
    """``process``'s output lines up to the first that begins with ``start``."""
    lines: list[str] = []
    while not (lines and lines[-1].startswith(start)):
        line = process.stdout.readline()
        assert line, f"the output ended before a line starting {start!r}: {lines}"
        lines.append(line.rstrip("\n"))
    return lines


QUICK_CELL = "CELL=backbone=mobilenet_v2,head=arcface,classes=3"
"""The README's cell is one of the default sweep's; the quick sweep's counterpart."""


@pytest.mark.timeout(2400)
def test_the_readme_detector_path_works_for_a_newcomer(swept: Path) -> None:
    """``make register``, ``make predict`` and ``make serve`` as the README writes them, then
    its curl call against the server."""
    clone = swept
    commands = readme_commands("make register")
    register, predict, serve = (
        next(c for c in commands if c.startswith(f"make {name}"))
        for name in ("register", "predict", "serve")
    )
    done = _make(clone, register, "SWEEP=quick", QUICK_CELL, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "registered run" in done.stdout and "models:/screw-detector/1" in done.stdout
    assert "registering seed 0" in done.stderr and "cell_median_test_auc" in done.stderr

    done = _make(clone, predict, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    scores = (clone / "reports" / "screw-scores.csv").read_text().splitlines()
    tests = sorted((clone / "data" / "synthetic" / "screw" / "test").rglob("*.png"))
    assert scores[0] == "image,score,anomalous,error" and len(scores) == 1 + len(tests)
    assert len(list((clone / "reports" / "screw-maps").rglob("*.png"))) == len(tests)

    port = free_port()
    server = subprocess.Popen(
        [*serve.split(), f"SERVE_PORT={port}"], cwd=clone, env=_newcomer_env(),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )  # fmt: skip
    try:
        wait_for_http(f"http://127.0.0.1:{port}/ping", server)
        curl = readme_curl().replace("127.0.0.1:5001", f"127.0.0.1:{port}")
        answer = subprocess.run(
            ["bash", "-c", curl], cwd=clone, capture_output=True, text=True, timeout=120
        )
        [prediction] = json.loads(answer.stdout)["predictions"]
        assert prediction["error"] == "" and isinstance(prediction["score"], float)
    finally:
        os.killpg(server.pid, signal.SIGINT)
        output, _ = server.communicate(timeout=60)
    assert "Traceback" not in output, output
