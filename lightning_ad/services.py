"""The distributed mode on one machine: a PostgreSQL for Optuna and an ``mlflow server``.

``lightning-ad services`` (``make services``) starts both, prints the ``--storage`` and
``--tracking-uri`` to give every worker, and stops both on Ctrl-C. The integration tests start
the same pair in a temporary folder. Nothing here is needed for the default, single-machine mode.

PostgreSQL listens on 127.0.0.1 only and trusts local connections: it is for trying the mode,
not a shared server (the README's two-machine recipe sets one up with a password).
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from lightning_ad import tracking
from lightning_ad.errors import LightningADError

PG_USER = "lightning_ad"
DATABASES = ("optuna", "mlflow")
LOOPBACK = "127.0.0.1"
# PostgreSQL refuses to run as root: as root, its tools run as the ``postgres`` user (Debian's
# package creates it).
_POSTGRES_USER = "postgres" if os.geteuid() == 0 else None


def postgres_bin_dir() -> Path:
    """Where Debian's ``postgresql`` package put ``initdb`` and ``pg_ctl`` (not on PATH there)."""
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).resolve().parent
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=_version_key)
    if not versions:
        raise LightningADError(
            "PostgreSQL is not installed (no pg_ctl on PATH or in /usr/lib/postgresql/*/bin); "
            "install it: apt-get install postgresql"
        )
    return Path(versions[-1]).parent


def _version_key(path: str) -> int:
    version = Path(path).parents[1].name
    return int(version) if version.isdigit() else 0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return sock.getsockname()[1]


@dataclass(frozen=True)
class Postgres:
    """A PostgreSQL cluster in ``data_dir``, listening on 127.0.0.1:``port``."""

    data_dir: Path
    port: int

    def url(self, database: str) -> str:
        return f"postgresql+psycopg://{PG_USER}@{LOOPBACK}:{self.port}/{database}"

    def start(self) -> None:
        """Create the cluster on first use, start the server and create the databases."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if _POSTGRES_USER:  # initdb fills the folder as that user; only the folder is ours
            owner = pwd.getpwnam(_POSTGRES_USER)
            os.chown(self.data_dir, owner.pw_uid, owner.pw_gid)
        if not (self.data_dir / "PG_VERSION").exists():
            self._run(
                "initdb", "-D", str(self.data_dir), "-U", PG_USER, "--auth=trust", "-E", "UTF8"
            )
        options = (
            f"-p {self.port} -c listen_addresses={LOOPBACK} "
            f"-c unix_socket_directories='{self.data_dir}'"
        )
        log = self.data_dir / "server.log"
        self._run("pg_ctl", "-D", str(self.data_dir), "-l", str(log), "-o", options, "-w", "start")
        self._create_databases()

    def stop(self) -> None:
        with contextlib.suppress(LightningADError):
            self._run("pg_ctl", "-D", str(self.data_dir), "-m", "fast", "-w", "stop")

    def _create_databases(self) -> None:
        import psycopg

        admin = f"host={LOOPBACK} port={self.port} user={PG_USER} dbname=postgres"
        with psycopg.connect(admin, autocommit=True) as connection:
            existing = {row[0] for row in connection.execute("SELECT datname FROM pg_database")}
            for name in DATABASES:
                if name not in existing:
                    connection.execute(f'CREATE DATABASE "{name}"')

    def _run(self, tool: str, *args: str) -> None:
        command = [str(postgres_bin_dir() / tool), *args]
        try:
            done = subprocess.run(
                command, user=_POSTGRES_USER, capture_output=True, text=True, timeout=120
            )
        except FileNotFoundError as err:  # a partial install: pg_ctl there, initdb not
            raise LightningADError(
                f"{command[0]} is missing; reinstall PostgreSQL: apt-get install postgresql"
            ) from err
        if done.returncode != 0:
            raise LightningADError(
                f"{tool} failed ({done.returncode}) for {self.data_dir}: "
                f"{(done.stderr or done.stdout).strip()[-500:]}"
            )


def start_mlflow_server(
    backend_uri: str,
    artifacts_dir: Path,
    port: int,
    host: str = LOOPBACK,
    allowed_hosts: str | None = None,
    log_file: Path | None = None,
) -> subprocess.Popen:
    """``mlflow server`` with proxied artifacts (workers upload through it, so no shared disk is
    needed), waiting until its /health answers."""
    command = tracking.mlflow_command(
        "server",
        "--backend-store-uri",
        backend_uri,
        "--artifacts-destination",
        str(artifacts_dir),
        "--host",
        host,
        "--port",
        str(port),
        "--workers",
        "2",
    )
    if allowed_hosts:
        command += ["--allowed-hosts", allowed_hosts]
    if log_file:
        with open(log_file, "ab") as output:  # the server keeps its own copy of the handle
            process = subprocess.Popen(
                command, stdout=output, stderr=subprocess.STDOUT, env=tracking.mlflow_server_env()
            )
    else:
        process = subprocess.Popen(
            command,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
            env=tracking.mlflow_server_env(),
        )
    url = f"http://{_local_address(host)}:{port}/health"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise LightningADError(
                f"mlflow server exited with {process.returncode}; see {log_file or 'its output'}"
            )
        with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=2) as response:
            if response.status == 200:
                return process
        time.sleep(0.5)
    process.kill()
    raise LightningADError(f"mlflow server did not answer {url} within 180 s")


def _local_address(host: str) -> str:
    """Where this machine reaches a server listening on ``host`` (all interfaces -> loopback)."""
    return LOOPBACK if host in ("0.0.0.0", "::") else host


def stop_process(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@dataclass(frozen=True)
class Services:
    storage: str
    """The Optuna storage URL (``--storage``)."""
    tracking_uri: str
    """The MLflow server (``--tracking-uri``)."""


@contextlib.contextmanager
def local_services(
    root: Path,
    pg_port: int,
    mlflow_port: int,
    host: str = LOOPBACK,
    allowed_hosts: str | None = None,
) -> Iterator[Services]:
    """PostgreSQL + MLflow server with everything under ``root``; both stopped on exit."""
    tracking.mlflow_command()  # a missing mlflow fails now, before PostgreSQL starts
    root.mkdir(parents=True, exist_ok=True)
    postgres = Postgres(root / "postgres", pg_port)
    postgres.start()
    try:
        server = start_mlflow_server(
            postgres.url("mlflow"),
            root / "mlflow-artifacts",
            mlflow_port,
            host,
            allowed_hosts,
            log_file=root / "mlflow-server.log",
        )
        try:
            yield Services(postgres.url("optuna"), f"http://{_local_address(host)}:{mlflow_port}")
        finally:
            stop_process(server)
    finally:
        postgres.stop()
