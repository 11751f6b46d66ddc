"""The CLI as a user types it, in a subprocess where the exit code matters."""

import os
from pathlib import Path

import cv2
import pytest

from lightning_ad.cli import main
from tests.helpers import SWEEPS, invoke, run_cli


def test_python_m_and_help_with_examples(tmp_path: Path) -> None:
    result = run_cli("data", "preview", "--help", cwd=tmp_path)
    assert result.returncode == 0
    assert "examples:" in result.stdout and "--data-root" in result.stdout


@pytest.mark.parametrize(
    "command",
    [
        ["data", "synth"],
        ["data", "mvtec"],
        ["data", "info"],
        ["data", "preview"],
        ["train"],
        ["sweep"],
        ["table"],
        ["services"],
        ["ui"],
    ],
)
def test_every_subcommand_has_examples(command: list[str], capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([*command, "--help"])
    assert exit_info.value.code == 0
    assert "examples:\n  lightning-ad " + " ".join(command) in capsys.readouterr().out


def test_synth_writes_a_category(tmp_path: Path) -> None:
    assert (
        main(["data", "synth", "--category", "grid", "--root", str(tmp_path), "--image-size", "32"])
        == 0
    )
    assert len(list((tmp_path / "grid" / "train" / "good").iterdir())) == 264


def test_synth_shift_keeps_the_category_and_adds_the_shifted_split(tmp_path: Path) -> None:
    synth = ["data", "synth", "--category", "vial", "--root", str(tmp_path), "--image-size", "32"]
    assert main(synth) == 0
    marker = tmp_path / "vial" / "synthetic.json"
    written = marker.stat().st_mtime_ns
    assert main([*synth, "--shift", "blur", "--shift", "lighting"]) == 0
    assert marker.stat().st_mtime_ns == written  # the scenes the shifts re-render are kept
    for shift in ("blur", "lighting"):
        shifted = tmp_path / "vial" / "shifts" / shift / "test" / "good"
        assert len(list(shifted.iterdir())) == 40


def test_preview_draws_one_png(synthetic_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "preview.png"
    code = main(
        [
            "data",
            "preview",
            "--category",
            "transistor",
            "--data-root",
            str(synthetic_root),
            "--out",
            str(out),
            "--image-size",
            "48",
        ]
    )
    assert code == 0
    sheet = cv2.imread(str(out))
    assert sheet is not None and sheet.shape[0] > 500 and sheet.shape[1] > 500
    assert sheet.std() > 20  # not a blank canvas


def test_info_counts(synthetic_root: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["data", "info", "--category", "grid", "--data-root", str(synthetic_root)]) == 0
    out = capsys.readouterr().out
    assert "train/good" in out and "metal_contamination" in out


def test_bad_category_is_one_line_and_exit_2(tmp_path: Path) -> None:
    result = invoke(
        "data", "info", "--category", "scerw", "--data-dir", str(tmp_path), cwd=tmp_path
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("lightning-ad: error: unknown category 'scerw'")
    assert not (tmp_path / "synthetic").exists()  # nothing half-written


def test_ui_runs_mlflow_with_this_interpreter_not_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """make runs ``lightning-ad ui`` without the venv's bin/ on PATH: mlflow must still start."""
    import sys

    started = _capture_ui(monkeypatch)
    monkeypatch.setenv("PATH", "/nonexistent")
    assert main(["ui", "--port", "5099", "--tracking-uri", "sqlite:///x.db"]) == 0
    [(argv, _env)] = started
    assert argv[:4] == [sys.executable, "-m", "mlflow", "ui"]


def test_ui_passes_the_store_in_its_environment_not_on_a_command_line(
    monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    """A command line is shown to every local user by ps; the store's password must not be."""

    started = _capture_ui(monkeypatch)
    uri = "postgresql+psycopg://me:s3cret@db:5432/mlflow"
    assert main(["ui", "--tracking-uri", uri]) == 0
    [(argv, env)] = started
    assert "s3cret" not in " ".join(argv) and env["MLFLOW_BACKEND_STORE_URI"] == uri
    assert "s3cret" not in capsys.readouterr().err


@pytest.mark.e2e
def test_ui_names_each_sweeps_parent_link_and_hides_the_store_from_ps(tmp_path: Path) -> None:
    """``lightning-ad ui`` as a person starts it: once the server answers, its first lines
    link each sweep's parent run; no process under it (MLflow's server and its uvicorn
    workers, read from /proc as ps reads them) shows the store's URI; no third-party
    deprecation warning reaches the terminal; Ctrl-C ends it with 0."""
    import signal
    import subprocess
    import sys

    import mlflow

    from lightning_ad import tracking
    from lightning_ad.services import free_port

    store = tmp_path / "token-s3cret"  # stands for a password: it is part of the URI
    store.mkdir()
    uri = f"sqlite:///{store}/mlflow.db"
    client = mlflow.MlflowClient(uri)
    experiment = client.create_experiment("lightning_ad-quick")
    tags = {tracking.ROLE_TAG: tracking.SWEEP_ROLE, tracking.SWEEP_TAG: "quick"}
    parent = client.create_run(
        experiment, tags=tags | {"category": "screw", tracking.FINGERPRINT_TAG: "abc123"}
    )
    port = free_port()
    command = [sys.executable, "-m", "lightning_ad", "ui", "--port", str(port)]
    env = os.environ | {"MLFLOW_TRACKING_URI": uri}  # as make ui TRACKING_URI=... hands it on
    ui = subprocess.Popen(
        command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, start_new_session=True,
    )  # fmt: skip
    try:
        heading, link = ui.stdout.readline(), ui.stdout.readline()  # once the server answers
        assert heading.startswith(f"MLflow UI: http://127.0.0.1:{port}; each sweep's parent")
        assert link.strip() == (
            f"quick / screw (running, fingerprint abc123): http://127.0.0.1:{port}/#/experiments/"
            f"{experiment}/runs/{parent.info.run_id}?workflowType=machine_learning"
        )
        tree = _process_tree(ui.pid)
        assert len(tree) >= 2  # the server and at least one worker
        for pid in tree:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
            assert b"s3cret" not in cmdline, cmdline
    finally:
        os.killpg(ui.pid, signal.SIGINT)  # Ctrl-C reaches the whole process group
        _, errors = ui.communicate(timeout=60)
    assert ui.returncode == 0, errors
    assert "DeprecationWarning" not in errors


def _process_tree(root: int) -> list[int]:
    """``root`` and every process below it, from /proc/<pid>/stat's parent field."""
    parents = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # ended while we looked
            continue
        parents[int(stat.parent.name)] = int(fields[1])
    tree, frontier = [root], [root]
    while frontier:
        frontier = [pid for pid, parent in parents.items() if parent in frontier]
        tree += frontier
    return tree


def _capture_ui(monkeypatch: pytest.MonkeyPatch) -> list[tuple[list[str], dict[str, str]]]:
    """What ``ui`` would start (its command and environment), instead of starting it."""
    from lightning_ad import mlflow_server

    started = []
    monkeypatch.setattr(
        mlflow_server,
        "run_ui",
        lambda process, url, announce: started.append((process.command, process.env)) or 0,
    )
    return started


def _without_mlflow(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "mlflow" else real_find_spec(name, *a),
    )


@pytest.mark.parametrize(
    ("command", "missing", "expected"),
    [
        (["ui"], "mlflow", "mlflow is not installed for"),
        (["services"], "mlflow", "mlflow is not installed for"),  # before PostgreSQL starts
        (["services", "--port", "5098"], "initdb", "initdb is missing; reinstall PostgreSQL"),
    ],
    ids=["ui without mlflow", "services without mlflow", "services without initdb"],
)
def test_a_missing_program_is_one_line_and_exit_2(
    command: list[str],
    missing: str,
    expected: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys,
) -> None:
    from lightning_ad import services

    if missing == "mlflow":
        _without_mlflow(monkeypatch)
    monkeypatch.setattr(services, "postgres_bin_dir", lambda: tmp_path / "no-bin")
    monkeypatch.setattr(services, "_POSTGRES_USER", None)  # nothing to chown to
    monkeypatch.chdir(tmp_path)  # services keeps its data in ./.services
    assert main(command) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and expected in err[0] and "Traceback" not in err[0]
    assert not (tmp_path / ".services" / "postgres" / "PG_VERSION").exists()


@pytest.mark.parametrize("category", ["sc'rew", "../screw", "a/b"])
def test_unsafe_category_names_are_refused_before_anything_is_written(
    category: str, tmp_path: Path
) -> None:
    quick = str(SWEEPS / "quick.yaml")
    result = invoke("sweep", "--sweep", quick, "--category", category, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert f"category {category!r} is not allowed" in result.stderr
    assert not (tmp_path / "mlruns").exists() and not (tmp_path / "reports").exists()


def test_the_table_choices_are_the_reports() -> None:
    """The CLI spells them out (so that --help need not import pandas); they must not drift."""
    from lightning_ad import report
    from lightning_ad.cli import table

    assert set(table.TABLE_FORMATS) == set(report.FORMATS) and table.TABLE_NAMES == report.TABLES


def test_train_has_a_flag_for_every_setting(capsys: pytest.CaptureFixture) -> None:
    from lightning_ad.config import SETTINGS

    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = capsys.readouterr().out
    for name in SETTINGS:
        assert "--" + name.replace("_", "-") in text, name
    assert "--no-amsgrad" in text and "(default: 96)" in text


@pytest.mark.parametrize("command", ["ui", "services"])
def test_a_host_beyond_loopback_without_a_login_is_refused(
    command: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    import os

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(os, "execve", lambda *args: pytest.fail("ui started"))
    assert main([command, "--host", "0.0.0.0"]) == 2
    [line] = capsys.readouterr().err.strip().splitlines()
    assert "--host 0.0.0.0 lets anyone who reaches port 5000" in line and "add --auth" in line
    assert not any(tmp_path.iterdir())  # no PostgreSQL, no auth files


def test_ui_with_auth_runs_mlflows_basic_auth_app_with_a_generated_password(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    import configparser

    monkeypatch.chdir(tmp_path)
    started = _capture_ui(monkeypatch)
    guards = ["--allowed-hosts", "box:5000", "--cors-allowed-origins", "https://box"]
    assert main(["ui", "--host", "0.0.0.0", "--auth", *guards]) == 0
    [(argv, env)] = started
    assert argv[argv.index("--app-name") + 1] == "basic-auth"
    assert argv[argv.index("--allowed-hosts") + 1] == "box:5000"
    assert argv[argv.index("--cors-allowed-origins") + 1] == "https://box"
    config_file = Path(env["MLFLOW_AUTH_CONFIG_PATH"])
    password_file = tmp_path / "mlruns" / "mlflow-admin-password"
    for private in (config_file, password_file):
        assert private.stat().st_mode & 0o777 == 0o600
    password = password_file.read_text().strip()
    config = configparser.ConfigParser()
    config.read(config_file)
    assert config["mlflow"]["admin_password"] == password and len(password) >= 24
    assert password not in capsys.readouterr().err  # the file is named, the password is not
    assert main(["ui", "--auth"]) == 0  # a second start keeps the password
    assert password_file.read_text().strip() == password


def test_services_says_it_is_for_one_machine(capsys) -> None:
    """PostgreSQL of ``services`` listens on loopback: the help must not promise other machines."""
    with pytest.raises(SystemExit) as done:
        main(["services", "--help"])
    assert done.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "127.0.0.1 only" in text and "Many workers, many machines" in text


def test_mlflow_defaults_are_set_unless_the_user_exported_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from lightning_ad.environment import MLFLOW_DEFAULTS

    for name in MLFLOW_DEFAULTS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "false")  # the user's choice
    assert main(["table", "--sweep", "no-such-sweep"]) == 2
    assert os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] == "false"
    assert os.environ["MLFLOW_DISABLE_TELEMETRY"] == "false"
