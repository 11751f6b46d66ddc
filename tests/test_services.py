"""The local services' guards that need no running server: a planted symbolic link, a cluster
made before passwords. (The servers themselves: ``sweep/test_distributed.py``.)"""

from __future__ import annotations

from pathlib import Path

import pytest

from lightning_ad.errors import LightningADError
from lightning_ad.services import Postgres, app_password


def test_a_symlinked_services_folder_is_refused(tmp_path: Path) -> None:
    """Run as root, services chowns its folder: never through a link planted there."""
    target = tmp_path / "elsewhere"
    target.mkdir()
    (tmp_path / "services").symlink_to(target)
    postgres = Postgres(tmp_path / "services" / "postgres", 5433, tmp_path / "pgpass")
    with pytest.raises(LightningADError, match="services is a symbolic link"):
        postgres.start()
    assert not any(target.iterdir())


def test_a_cluster_that_trusts_tcp_is_not_reused(tmp_path: Path) -> None:
    data = tmp_path / "postgres"
    data.mkdir()
    (data / "PG_VERSION").write_text("15\n")
    (data / "pg_hba.conf").write_text("local all all trust\nhost all all 127.0.0.1/32 trust\n")
    with pytest.raises(LightningADError, match=r"created without passwords.*delete that folder"):
        Postgres(data, 5433, tmp_path / "pgpass").start()


def test_the_password_is_made_once_in_a_private_pgpass_file(tmp_path: Path) -> None:
    path = tmp_path / "pgpass"
    password = app_password(path)
    assert len(password) >= 32 and app_password(path) == password
    assert path.stat().st_mode & 0o777 == 0o600
    assert path.read_text() == f"127.0.0.1:*:*:lightning_ad:{password}\n"
