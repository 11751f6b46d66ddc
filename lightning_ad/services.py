"""The distributed mode on one machine: a PostgreSQL for Optuna and an ``mlflow server``.

``lightning-ad services`` (``make services``) starts both, prints the ``--storage`` and
``--tracking-uri`` to give every worker, and stops both on Ctrl-C. The integration tests start
the same pair in a temporary folder. Nothing here is needed for the default, single-machine mode.

PostgreSQL listens on 127.0.0.1 only. Over TCP every connection needs a password
(scram-sha-256): the role ``lightning_ad`` (no superuser, it owns the two databases) gets a
generated one, kept in a 0600 file in libpq's pgpass format (``<dir>/pgpass``). Clients read it
through ``PGPASSFILE``, so no URL, command line or log ever holds it. The superuser ``postgres``
is reached only through the Unix socket inside the cluster's own folder (mode 0700).
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from lightning_ad.errors import LightningADError
from lightning_ad.mlflow_server import (
    BasicAuth,
    ServerOptions,
    mlflow_command,
    wait_until_answering,
)

PG_USER = "lightning_ad"
PG_ADMIN = "postgres"
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
    """A PostgreSQL cluster in ``data_dir``, listening on 127.0.0.1:``port``; the application
    role's password in ``password_file`` (pgpass format)."""

    data_dir: Path
    port: int
    password_file: Path

    def url(self, database: str) -> str:
        """No password in it: libpq reads it from ``PGPASSFILE``."""
        return f"postgresql+psycopg://{PG_USER}@{LOOPBACK}:{self.port}/{database}"

    def start(self) -> None:
        """Create the cluster on first use, start the server, and make sure the application
        role (with the password of ``password_file``) and its databases exist."""
        for folder in (self.data_dir.parent, self.data_dir):
            if folder.is_symlink():  # root chowns it below: never through a planted link
                raise LightningADError(
                    f"{folder} is a symbolic link; give services a real folder (--dir)"
                )
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if (self.data_dir / "PG_VERSION").exists():
            self._refuse_a_trusting_cluster()
        if _POSTGRES_USER:  # initdb fills the folder as that user; only the folder is ours
            owner = pwd.getpwnam(_POSTGRES_USER)
            os.chown(self.data_dir, owner.pw_uid, owner.pw_gid, follow_symlinks=False)
        if not (self.data_dir / "PG_VERSION").exists():
            self._run(
                "initdb", "-D", str(self.data_dir), "-U", PG_ADMIN, "-E", "UTF8",
                "--auth-local=trust", "--auth-host=scram-sha-256",
            )  # fmt: skip
        options = (
            f"-p {self.port} -c listen_addresses={LOOPBACK} "
            f"-c unix_socket_directories='{self.data_dir}'"
        )
        log = self.data_dir / "server.log"
        self._run("pg_ctl", "-D", str(self.data_dir), "-l", str(log), "-o", options, "-w", "start")
        try:
            self._create_databases()
        except BaseException:
            self.stop()  # a server we started must not outlive a failed start
            raise

    def stop(self) -> None:
        with contextlib.suppress(LightningADError):
            self._run("pg_ctl", "-D", str(self.data_dir), "-m", "fast", "-w", "stop")

    def _refuse_a_trusting_cluster(self) -> None:
        """Clusters made before passwords trusted every TCP connection, with ``lightning_ad``
        as their superuser: such a cluster is not reused."""
        rules = (self.data_dir / "pg_hba.conf").read_text().splitlines()
        if any(line.split()[:1] == ["host"] and line.split()[-1] == "trust" for line in rules):
            raise LightningADError(
                f"{self.data_dir} was created without passwords by an earlier lightning-ad; "
                "stop what uses it and delete that folder: services creates a new one"
            )

    def _create_databases(self) -> None:
        import psycopg
        from psycopg import sql

        password = app_password(self.password_file)
        # The superuser only through the Unix socket in the cluster's own folder (mode 0700).
        with psycopg.connect(
            host=str(self.data_dir), port=self.port, user=PG_ADMIN, dbname="postgres",
            autocommit=True,
        ) as connection:  # fmt: skip
            roles = {row[0] for row in connection.execute("SELECT rolname FROM pg_roles")}
            verb = "ALTER" if PG_USER in roles else "CREATE"
            connection.execute(
                sql.SQL("{} ROLE {} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD {}").format(
                    sql.SQL(verb), sql.Identifier(PG_USER), sql.Literal(password)
                )
            )
            existing = {row[0] for row in connection.execute("SELECT datname FROM pg_database")}
            for name in DATABASES:
                if name not in existing:
                    connection.execute(
                        sql.SQL("CREATE DATABASE {} OWNER {}").format(
                            sql.Identifier(name), sql.Identifier(PG_USER)
                        )
                    )

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


def app_password(password_file: Path) -> str:
    """The application role's password: made once, kept in ``password_file`` (mode 0600, the
    pgpass line ``127.0.0.1:*:*:lightning_ad:<password>``)."""
    if not password_file.exists():
        line = f"{LOOPBACK}:*:*:{PG_USER}:{secrets.token_urlsafe(24)}\n"
        descriptor = os.open(password_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as file:
            file.write(line)
    return password_file.read_text().strip().rsplit(":", 1)[1]


def start_mlflow_server(
    backend_uri: str,
    artifacts_dir: Path,
    options: ServerOptions,
    log_file: Path | None = None,
) -> subprocess.Popen:
    """``mlflow server`` with proxied artifacts (workers upload through it, so no shared disk is
    needed), listening as ``options`` say, waiting until its /health answers."""
    options.check()
    command, env = options.process(
        "server", backend_uri, "--artifacts-destination", str(artifacts_dir), "--workers", "2"
    )
    with open(log_file or os.devnull, "ab") as output:  # the server keeps its own handle
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, env=env)
    wait_until_answering(process, options.local_url, f"see {log_file or 'its output'}")
    return process


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
    """The Optuna storage URL (``--storage``), without its password."""
    tracking_uri: str
    """The MLflow server (``--tracking-uri``)."""
    password_file: Path
    """PostgreSQL's password, for ``PGPASSFILE``."""
    mlflow_auth: BasicAuth | None = None
    """The MLflow server's login, when it has one."""


@contextlib.contextmanager
def local_services(
    root: Path, pg_port: int, mlflow: ServerOptions | None = None
) -> Iterator[Services]:
    """PostgreSQL + MLflow server (on loopback unless ``mlflow`` says otherwise) with everything
    under ``root``; both stopped on exit. While open, ``PGPASSFILE`` points this process and its
    children at the password."""
    mlflow = mlflow or ServerOptions(port=free_port())
    mlflow.check()  # a host beyond loopback without a login fails now, before anything starts
    mlflow_command()  # so does a missing mlflow
    root.mkdir(parents=True, exist_ok=True)
    postgres = Postgres(root / "postgres", pg_port, (root / "pgpass").resolve())
    previous = os.environ.get("PGPASSFILE")
    os.environ["PGPASSFILE"] = str(postgres.password_file)
    try:
        postgres.start()
    except BaseException:
        _restore_environment("PGPASSFILE", previous)
        raise
    try:
        server = start_mlflow_server(
            postgres.url("mlflow"),
            root / "mlflow-artifacts",
            mlflow,
            log_file=root / "mlflow-server.log",
        )
        try:
            yield Services(
                postgres.url("optuna"),
                mlflow.local_url,
                postgres.password_file,
                BasicAuth(mlflow.auth_dir) if mlflow.auth_dir is not None else None,
            )
        finally:
            stop_process(server)
    finally:
        postgres.stop()
        _restore_environment("PGPASSFILE", previous)


def _restore_environment(name: str, previous: str | None) -> None:
    if previous is None:
        os.environ.pop(name, None)
    else:
        os.environ[name] = previous


@contextlib.contextmanager
def sampled_connections(storage: str, every_s: float = 0.2) -> Iterator[list[int]]:
    """The server's connections to the database of ``storage`` (an Optuna storage URL on
    PostgreSQL; the password from ``PGPASSFILE``), counted every ``every_s`` seconds while the
    block runs, the counting connection itself not counted: what B10 and the integration
    tests hold against ``storage.RDB_CONNECTIONS`` per process."""
    import psycopg

    counts: list[int] = []
    stop = threading.Event()
    query = (
        "SELECT count(*) FROM pg_stat_activity "
        "WHERE datname = current_database() AND pid <> pg_backend_pid()"
    )

    def sample() -> None:
        url = storage.replace("postgresql+psycopg://", "postgresql://")
        with psycopg.connect(url, autocommit=True) as connection:
            while not stop.wait(every_s):
                counts.append(connection.execute(query).fetchone()[0])

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        yield counts
    finally:
        stop.set()
        sampler.join(timeout=10)
