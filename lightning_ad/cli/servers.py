"""``lightning-ad ui`` and ``services``: MLflow's UI, and the local servers of the distributed
mode (PostgreSQL for Optuna, an MLflow server)."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from lightning_ad.cli.options import Commands, shared, subcommand, tracking_uri_option
from lightning_ad.errors import redact


def add_servers(commands: Commands) -> None:
    """Add ``ui`` and ``services`` to ``commands``.

    Args:
        commands: the top-level subparsers.
    """
    for add in (_add_ui, _add_services):
        add(commands)


def _server(parser: argparse.ArgumentParser) -> None:
    """How an MLflow server listens (``ui``, ``services``): see ``mlflow_server``."""
    parser.add_argument(
        "--host", default="127.0.0.1", help="default: 127.0.0.1 (this machine only)"
    )
    parser.add_argument("--port", type=int, default=5000, help="MLflow's port (default: 5000)")
    parser.add_argument(
        "--auth",
        action="store_true",
        help="MLflow's basic-auth app: a login (user admin, a generated password kept in a 0600 "
        "file); needed for a --host beyond loopback",
    )
    parser.add_argument(
        "--allowed-hosts",
        help="Host headers MLflow accepts (its DNS-rebinding guard, not a login), e.g. "
        "mlflow-host,mlflow-host:5000",
    )
    parser.add_argument(
        "--cors-allowed-origins",
        help="origins whose web pages may call MLflow's API (its cross-site guard), e.g. "
        "https://dashboards.example",
    )


def _server_options(args: argparse.Namespace, auth_dir: Path):
    from lightning_ad.mlflow_server import ServerOptions

    options = ServerOptions(
        args.host,
        args.port,
        args.allowed_hosts,
        args.cors_allowed_origins,
        auth_dir if args.auth else None,
    )
    options.check()
    return options


# ---- ui ----------------------------------------------------------------------------------------


def _add_ui(group: Commands) -> None:
    subcommand(
        group,
        "ui",
        "start the MLflow UI over the tracking store",
        "  lightning-ad ui\n"
        "  lightning-ad ui --port 5001\n"
        "  lightning-ad ui --host 0.0.0.0 --auth --allowed-hosts my-host:5000   # a login\n",
        _ui,
        parents=[shared(tracking_uri_option, _server)],
    )


def _ui(args: argparse.Namespace) -> None:
    from lightning_ad.mlflow_server import run_ui
    from lightning_ad.tracking import parent_links, resolve_tracking_uri

    uri = resolve_tracking_uri(args.tracking_uri)
    options = _server_options(args, auth_dir=Path("mlruns"))
    process = options.process("ui", uri)
    # A line per request the browser makes would bury the links below (unless asked for).
    process.env.setdefault("MLFLOW_UVICORN_OPTS", "--no-access-log")
    if args.auth:
        from lightning_ad.mlflow_server import ADMIN, BasicAuth

        password = BasicAuth(Path("mlruns")).password_file.resolve()
        print(f"MLflow login: {ADMIN}, password in {password}", file=sys.stderr)
    print(f"{' '.join(process.command)}  (store: {redact(uri)})", file=sys.stderr)
    url = options.local_url

    def announce() -> list[str]:
        links = parent_links(uri, url)
        heading = f"MLflow UI: {url}; each sweep's parent run (the verdict first):"
        return (
            [heading, *(f"  {line}" for line in links)]
            if links
            else [f"MLflow UI: {url} (no sweep in {redact(uri)} yet: make sweep CATEGORY=screw)"]
        )

    status = run_ui(process, url, announce)
    if status:
        raise SystemExit(status)


# ---- services ----------------------------------------------------------------------------------


def _add_services(group: Commands) -> None:
    services = subcommand(
        group,
        "services",
        "start a PostgreSQL (Optuna, on 127.0.0.1 only) and an MLflow server to try the "
        "distributed mode on this machine; for workers on other machines, see the README's "
        '"Many workers, many machines" recipe',
        "  lightning-ad services                       # until Ctrl-C; data kept in .services/\n"
        "  lightning-ad services --host 0.0.0.0 --auth --allowed-hosts mlflow-host:5000\n",
        _services,
        parents=[shared(_server)],
    )
    services.add_argument(
        "--dir", type=Path, default=Path(".services"), help="data folder (default: .services)"
    )
    services.add_argument(
        "--pg-port", type=int, default=5433, help="PostgreSQL port on 127.0.0.1 (default: 5433)"
    )


def _services(args: argparse.Namespace) -> None:
    from lightning_ad.services import local_services

    options = _server_options(args, auth_dir=args.dir)
    with local_services(args.dir, args.pg_port, options) as services:
        lines = [
            f"Optuna storage (PostgreSQL): {services.storage}",
            f"MLflow server:               {services.tracking_uri}",
            f"PostgreSQL's password:       {services.password_file} (for PGPASSFILE)",
        ]
        login = ""
        if services.mlflow_auth is not None:
            password = services.mlflow_auth.password_file.resolve()
            lines.append(f"MLflow's admin password:     {password} (user admin)")
            login = f"  {services.mlflow_auth.login_hint()}\n"
        lines.append(
            f"data in {args.dir}/; Ctrl-C stops both. Workers on this machine (PostgreSQL "
            "listens on 127.0.0.1 only; for other machines see the README's 'Many workers, "
            "many machines' recipe):\n"
            f"  export PGPASSFILE={services.password_file}\n{login}"
            f"  make sweep CATEGORY=screw WORKERS=2 STORAGE={services.storage} "
            f"TRACKING_URI={services.tracking_uri}"
        )
        print("\n".join(lines), flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            print("stopping the services", file=sys.stderr)
