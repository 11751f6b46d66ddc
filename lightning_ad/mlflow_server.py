"""An MLflow server as lightning_ad starts one (``lightning-ad ui``, ``lightning-ad services``).

- On loopback by default. Beyond it (``--host 0.0.0.0``) whoever reaches the port could delete
  runs or log fake metrics, and the tables would use them: so a non-loopback host is refused
  unless ``--auth`` turns on MLflow's basic-auth app.
- ``--auth``: the admin's password is generated once and kept in a 0600 file beside the auth
  database (never MLflow's example password, never printed); workers log in with
  ``MLFLOW_TRACKING_USERNAME`` / ``MLFLOW_TRACKING_PASSWORD``.
- ``--allowed-hosts`` and ``--cors-allowed-origins`` (MLflow's guards against DNS rebinding and
  cross-site requests, not a login) are passed through.
"""

from __future__ import annotations

import contextlib
import importlib.util
import ipaddress
import os
import secrets
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from lightning_ad import interrupts
from lightning_ad.errors import LightningADError, redact

ADMIN = "admin"
LOOPBACK_NAMES = ("localhost",)
SERVER_WARNINGS_IGNORED = ("starlette.middleware.wsgi is deprecated",)
"""Starts of third-party warnings the MLflow server prints once per worker process, which ask
nothing of a lightning_ad user (MLflow's own code uses the deprecated module)."""


def mlflow_command(*args: str) -> list[str]:
    """``mlflow ARGS`` run by this interpreter (``python -m mlflow``): make and other callers run
    us without the venv's ``bin/`` on PATH, where a bare ``mlflow`` is not found."""
    if importlib.util.find_spec("mlflow") is None:
        raise LightningADError(
            f"mlflow is not installed for {sys.executable}; run make install "
            "(or pip install mlflow)"
        )
    return [sys.executable, "-m", "mlflow", *args]


def mlflow_server_env() -> dict[str, str]:
    """The environment for ``mlflow ui`` / ``mlflow server``: MLflow's job runner (huey worker
    processes for GenAI features: judges, trace rollups) is off unless the user turned it on;
    a sweep needs none of it, and on Ctrl-C each of its processes prints a traceback. And the
    warnings of :data:`SERVER_WARNINGS_IGNORED` stay out of the terminal."""
    ignored = ",".join(f"ignore:{start}" for start in SERVER_WARNINGS_IGNORED)
    previous = os.environ.get("PYTHONWARNINGS")
    return {
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
        **os.environ,
        "PYTHONWARNINGS": f"{previous},{ignored}" if previous else ignored,
    }


@dataclass(frozen=True)
class ServerOptions:
    """How a server listens: the address, the port, and its guards."""

    host: str = "127.0.0.1"
    port: int = 5000
    allowed_hosts: str | None = None
    cors_allowed_origins: str | None = None
    auth_dir: Path | None = None
    """Where the basic-auth app keeps its users and the admin's password; None: no login."""

    def check(self) -> None:
        """A host beyond loopback needs a login; a login needs MLflow's ``auth`` extra."""
        if self.auth_dir is not None and importlib.util.find_spec("flask_wtf") is None:
            raise LightningADError(
                "MLflow's basic-auth app needs Flask-WTF; run make install "
                "(or pip install 'mlflow[auth]')"
            )
        if self.auth_dir is None and not is_loopback(self.host):
            raise LightningADError(
                f"--host {self.host} lets anyone who reaches port {self.port} change or delete "
                "runs, and MLflow has no login by default: add --auth (MLflow's basic-auth app, "
                "with a generated admin password), or keep --host 127.0.0.1"
            )

    @property
    def local_url(self) -> str:
        """Where this machine reaches the server (all interfaces: through loopback)."""
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::") else self.host
        return f"http://{host}:{self.port}"

    def args(self) -> list[str]:
        """The ``mlflow server`` / ``mlflow ui`` options for these settings."""
        args = ["--host", self.host, "--port", str(self.port)]
        if self.allowed_hosts:
            args += ["--allowed-hosts", self.allowed_hosts]
        if self.cors_allowed_origins:
            args += ["--cors-allowed-origins", self.cors_allowed_origins]
        if self.auth_dir is not None:
            args += ["--app-name", "basic-auth"]
        return args

    def process(self, verb: str, backend_store_uri: str, *args: str) -> Process:
        """How to start ``mlflow VERB`` (``ui``, ``server``) on ``backend_store_uri`` with these
        settings and ``args``. The store's URI may hold a password, so it travels in the
        environment (``MLFLOW_BACKEND_STORE_URI``), which only this user can read, never on the
        command line, which ``ps`` shows every local user."""
        command = mlflow_command(verb, *args, *self.args())
        stores = {"MLFLOW_BACKEND_STORE_URI": backend_store_uri}
        stores["MLFLOW_REGISTRY_STORE_URI"] = backend_store_uri  # MLflow's default, said quietly
        return Process(command, self.env() | stores)

    def env(self) -> dict[str, str]:
        """The server's environment: :func:`mlflow_server_env`, and with ``--auth`` the
        basic-auth app's configuration (written, with the password, on first use)."""
        env = mlflow_server_env()
        if self.auth_dir is not None:
            auth = BasicAuth(self.auth_dir)
            env["MLFLOW_AUTH_CONFIG_PATH"] = str(auth.configure())
            # The app's CSRF tokens must verify on every worker process of the server.
            env.setdefault("MLFLOW_FLASK_SERVER_SECRET_KEY", auth.csrf_key())
        return env


class Process(NamedTuple):
    """A command line and the environment to run it in."""

    command: list[str]
    env: dict[str, str]


def is_loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a name: it may resolve to anything
        return False


@dataclass(frozen=True)
class BasicAuth:
    """MLflow's basic-auth app's files in ``folder``: its user database, its configuration,
    and the admin's password (each readable by this user alone)."""

    folder: Path

    @property
    def password_file(self) -> Path:
        return self.folder / "mlflow-admin-password"

    @property
    def config_file(self) -> Path:
        return self.folder / "mlflow-auth.ini"

    def password(self) -> str:
        """The admin's password: generated on first use."""
        return _secret(self.password_file)

    def csrf_key(self) -> str:
        """The key the app signs its CSRF tokens with: generated on first use."""
        return _secret(self.folder / "mlflow-csrf-key")

    def configure(self) -> Path:
        """Write the app's configuration (the admin is created with this password when its
        database is new) and return its path."""
        self.folder.mkdir(parents=True, exist_ok=True)
        database = (self.folder / "mlflow-auth.db").resolve()
        if not database.exists():  # the users' password hashes: created private, then filled
            os.close(os.open(database, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        text = (
            "[mlflow]\n"
            "default_permission = READ\n"
            f"database_uri = sqlite:///{database}\n"
            f"admin_username = {ADMIN}\n"
            f"admin_password = {self.password()}\n"
            "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
        )
        self.config_file.unlink(missing_ok=True)
        _write_private(self.config_file, text)
        return self.config_file

    def login_hint(self) -> str:
        """How a worker logs in, without the password itself."""
        return (
            f"export MLFLOW_TRACKING_USERNAME={ADMIN} "
            f'MLFLOW_TRACKING_PASSWORD="$(cat {self.password_file.resolve()})"'
        )


def _secret(path: Path) -> str:
    """A random token kept in ``path`` (made on first use, readable by this user alone)."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        _write_private(path, secrets.token_urlsafe(24) + "\n")
    path.chmod(0o600)  # one made by hand, or copied, may have been readable by others
    return path.read_text().strip()


def _write_private(path: Path, text: str) -> None:
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as file:
        file.write(text)


def wait_until_answering(process: subprocess.Popen, url: str, where: str) -> None:
    """Return once the MLflow server ``process`` answers ``url/health``.

    Raises:
        LightningADError: it exited first (``where`` says where its output went), or did not
            answer within 180 s (then it is killed).
    """
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise LightningADError(f"mlflow server exited with {process.returncode}; {where}")
        with (
            contextlib.suppress(OSError),
            urllib.request.urlopen(f"{url}/health", timeout=2) as response,
        ):
            if response.status == 200:
                return
        time.sleep(0.5)
    process.kill()
    raise LightningADError(f"mlflow server did not answer {url}/health within 180 s")


def run_ui(process: Process, url: str, announce: Callable[[], list[str]]) -> int:
    """Run the UI server ``process`` in the foreground: once it answers at ``url``, print the
    lines ``announce`` returns (where the sweeps are), then wait for it. Ctrl-C or SIGTERM
    stops it; it never outlives this process.

    Returns:
        The server's exit status (0 when Ctrl-C or SIGTERM stopped it).

    Raises:
        LightningADError: the port is taken, or the server exited before it answered.
    """
    _check_free(url)  # else another server would answer, and its sweeps be announced
    server = subprocess.Popen(process.command, env=process.env)
    try:
        with interrupts.sigterm_as_interrupt():
            wait_until_answering(server, url, "see its output above")
            print("\n".join(_announced(announce)), flush=True)
            return server.wait()
    except KeyboardInterrupt:
        server.terminate()  # Ctrl-C reached it too; SIGTERM reached only us
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
        return 0
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()


def _announced(announce: Callable[[], list[str]]) -> list[str]:
    """``announce()``'s lines; a store that cannot be read there is one line, the UI runs on."""
    try:
        return announce()
    except Exception as err:  # the UI itself is still worth having
        return [f"lightning-ad: cannot list the sweeps: {redact(str(err)).splitlines()[0]}"]


def _check_free(url: str) -> None:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
        try:
            probe.bind((host, int(port)))
        except OSError as err:
            raise LightningADError(
                f"{url} is taken ({err.strerror}): stop what listens there, or pass --port"
            ) from None
