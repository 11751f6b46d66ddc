"""The MVTec download path, against a tiny archive served on 127.0.0.1."""

from __future__ import annotations

import hashlib
import http.server
import io
import tarfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from lightning_ad.data.download import download
from lightning_ad.data.mvtec import MVTecCategory, download_mvtec
from lightning_ad.errors import DataError


class RangeHandler(http.server.BaseHTTPRequestHandler):
    """Serves ``server.files`` (name -> bytes) and honours ``Range: bytes=N-``."""

    def do_GET(self) -> None:
        body = self.server.files.get(self.path.lstrip("/"))
        self.server.requests.append(dict(self.headers))
        if body is None:
            self.send_error(404)
            return
        start = 0
        if (rng := self.headers.get("Range")) and rng.startswith("bytes="):
            start = int(rng.removeprefix("bytes=").split("-")[0])
            if start >= len(body):
                self.send_error(416)
                return
            self.send_response(206)
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(body) - start))
        self.end_headers()
        self.wfile.write(body[start:])

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[http.server.HTTPServer]:
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), RangeHandler)
    httpd.files, httpd.requests = {}, []
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()


def _url(httpd: http.server.HTTPServer, name: str) -> str:
    return f"http://127.0.0.1:{httpd.server_address[1]}/{name}"


def _tar_xz(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:xz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _mini_mvtec(synthetic_root: Path) -> bytes:
    """A real two-image category packed like the official archive."""
    category = synthetic_root / "grid"
    members = {}
    for rel in (
        "train/good/000.png",
        "train/good/001.png",
        "test/good/000.png",
        "test/bent/000.png",
        "ground_truth/bent/000_mask.png",
    ):
        members[f"grid/{rel}"] = (category / rel).read_bytes()
    return _tar_xz(members)


def test_downloads_verifies_and_extracts(server, synthetic_root: Path, tmp_path: Path) -> None:
    archive = _mini_mvtec(synthetic_root)
    server.files["mvtec_anomaly_detection.tar.xz"] = archive
    url = _url(server, "mvtec_anomaly_detection.tar.xz")
    categories = download_mvtec(
        tmp_path, url=url, sha256=hashlib.sha256(archive).hexdigest(), show_progress=False
    )
    assert categories == ["grid"]
    assert MVTecCategory.load(tmp_path / "grid").counts() == {
        "train/good": 2,
        "test/good": 1,
        "test/bent": 1,
    }
    # A rerun finds the verified archive and the extraction marker: nothing is fetched again.
    download_mvtec(
        tmp_path, url=url, sha256=hashlib.sha256(archive).hexdigest(), show_progress=False
    )
    assert len(server.requests) == 1


def test_wrong_checksum_is_an_error_and_leaves_nothing(server, tmp_path: Path) -> None:
    server.files["a.tar.xz"] = _tar_xz({"x/readme.txt": b"hello"})
    with pytest.raises(DataError, match=r"checksum mismatch.*expected SHA-256 0{64}"):
        download_mvtec(tmp_path, url=_url(server, "a.tar.xz"), sha256="0" * 64, show_progress=False)
    assert list(tmp_path.iterdir()) == []


def test_malicious_member_path_is_refused(server, tmp_path: Path) -> None:
    archive = _tar_xz({"../escaped.txt": b"owned"})
    server.files["evil.tar.xz"] = archive
    dest = tmp_path / "mvtec"
    with pytest.raises(DataError, match=r"'\.\./escaped\.txt' would escape"):
        download_mvtec(
            dest,
            url=_url(server, "evil.tar.xz"),
            sha256=hashlib.sha256(archive).hexdigest(),
            show_progress=False,
        )
    assert not (tmp_path / "escaped.txt").exists()


def test_resumes_a_partial_download(server, tmp_path: Path) -> None:
    payload = bytes(range(256)) * 4096  # 1 MiB
    server.files["big.bin"] = payload
    dest = tmp_path / "big.bin"
    (tmp_path / "big.bin.part").write_bytes(payload[:300_000])
    download(
        _url(server, "big.bin"), dest, hashlib.sha256(payload).hexdigest(), show_progress=False
    )
    assert dest.read_bytes() == payload
    assert server.requests[-1]["Range"] == "bytes=300000-"


def test_unreachable_url_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"cannot reach http://127\.0\.0\.1:9/"):
        download("http://127.0.0.1:9/x.tar.xz", tmp_path / "x", "0" * 64, show_progress=False)
