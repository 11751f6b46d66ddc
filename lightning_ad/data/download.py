"""Download an archive resumably, verify its SHA-256, and extract it without path escapes."""

from __future__ import annotations

import hashlib
import tarfile
import urllib.error
import urllib.request
from pathlib import Path

from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from lightning_ad.errors import DataError

CHUNK_BYTES = 1 << 20


def download(url: str, dest: Path, sha256: str, *, show_progress: bool = True) -> Path:
    """Fetch ``url`` into ``dest`` unless a verified copy is already there.

    Bytes land in ``dest.part`` first; a rerun after an interruption asks the server for the rest
    (HTTP Range) and appends. Only a file whose SHA-256 matches is renamed to ``dest``; a mismatch
    deletes the partial file so that the next run starts clean.
    """
    dest = Path(dest)
    if dest.is_file() and file_sha256(dest) == sha256.lower():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    _fetch_remaining(url, part, show_progress)
    actual = file_sha256(part)
    if actual != sha256.lower():
        part.unlink()
        raise DataError(
            f"checksum mismatch for {url}: expected SHA-256 {sha256}, got {actual}; the download "
            "was deleted. Run again, or pass --sha256 if the archive was deliberately replaced"
        )
    part.replace(dest)
    return dest


def file_sha256(path: Path) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def safe_extract(archive: Path, dest: Path) -> None:
    """Extract a tar archive (any compression) into ``dest`` with tarfile's ``data`` filter.

    The filter refuses absolute paths, ``..`` members, links pointing outside ``dest`` and device
    files; such an archive raises :class:`DataError` naming the member.
    """
    dest.mkdir(parents=True, exist_ok=True)
    try:
        with tarfile.open(archive, mode="r:*") as tar:
            for member in tar:
                tar.extract(member, dest, filter="data")
    except tarfile.FilterError as err:
        raise DataError(
            f"refusing to extract {archive}: member {err.tarinfo.name!r} would escape {dest} "
            "or is not a plain file; the archive is not trustworthy"
        ) from err
    except tarfile.TarError as err:
        raise DataError(f"cannot read archive {archive}: {err}") from err


def _fetch_remaining(url: str, part: Path, show_progress: bool) -> None:
    have = part.stat().st_size if part.is_file() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        response = urllib.request.urlopen(request, timeout=60)
    except urllib.error.HTTPError as err:
        if err.code == 416:  # we already hold every byte; the checksum decides
            return
        raise DataError(f"download of {url} failed: HTTP {err.code} {err.reason}") from err
    except (urllib.error.URLError, OSError) as err:
        raise DataError(f"cannot reach {url}: {err}; check the URL or your network") from err
    with response:
        resumed = response.status == 206
        if not resumed:
            have = 0  # the server ignored Range: start over
        length = response.headers.get("Content-Length")
        total = have + int(length) if length is not None else None
        with open(part, "ab" if resumed else "wb") as out, _progress(show_progress) as bar:
            task = bar.add_task(part.name.removesuffix(".part"), total=total, completed=have)
            try:
                while chunk := response.read(CHUNK_BYTES):
                    out.write(chunk)
                    bar.advance(task, len(chunk))
            except OSError as err:
                raise DataError(
                    f"download of {url} broke off after {out.tell()} bytes ({err}); "
                    "run the same command again to resume"
                ) from err


def _progress(enabled: bool) -> Progress:
    return Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        disable=not enabled,
    )
