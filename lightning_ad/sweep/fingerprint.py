"""What a sweep's results depend on beyond the grid values, hashed: the settings fingerprint.

A cell's identity is its grid values plus the fingerprint of everything else that changes its
result: every trial setting whose value differs from the code's default (a setting added at a
default that leaves trials as they were is no new fingerprint; a changed default that changes
what a trial computes comes with a new code version), a weights file's hash when
``pretrained`` names one, the ``search`` block, the data (its kind, the category folder's name
and a hash of every file in it) and the trial-defining code version
(``lightning_ad.__version__``). The folder's absolute path is recorded but not hashed: workers
on several machines find the same data at different paths and must still share one study. The
study, the parent run and every trial run carry the fingerprint, and the tables show one
fingerprint at a time. So:

- a value added to a grid axis is a new cell of the same fingerprint: only it is trained;
- a value removed from the grid drops its cells from the table and trains nothing;
- an edit of ``fixed``/``search`` (to a value other than the default), other data or a new
  code version is a new fingerprint: its cells are all trained, the earlier runs stay in
  MLflow under their own fingerprint.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import MISSING, asdict, dataclass
from pathlib import Path
from typing import Any

import lightning_ad
from lightning_ad.config import SETTINGS
from lightning_ad.data.mvtec import IMAGE_SUFFIXES
from lightning_ad.data.resolve import ResolvedCategory
from lightning_ad.grid import GRID_KEYS

FINGERPRINT_LENGTH = 12
LOCATION_SETTINGS = ("data_root", "data_dir")
"""Where the data is looked for: replaced in the fingerprint by the data actually found."""


@dataclass(frozen=True)
class Settings:
    """Everything but the grid values that a sweep's results depend on (JSON-able)."""

    values: dict[str, Any]

    @property
    def fingerprint(self) -> str:
        hashed = {**self.values, "data": {**self.values["data"], "root": None}}
        return _digest(hashed)

    def cell_id(self, cell: dict[str, Any]) -> str:
        """A cell's identity: its grid values under this fingerprint."""
        return _digest({"settings": self.fingerprint, "cell": {k: cell[k] for k in GRID_KEYS}})

    def to_json(self) -> str:
        return json.dumps(self.values, indent=2, sort_keys=True, default=str)

    def describe(self) -> str:
        """One line for people: the fingerprint, the settings that differ from the defaults,
        the search block and the data."""
        trial = self.values["trial"]
        changed = [f"{k}={v}" for k, v in sorted(trial.items()) if v != _default(k)]
        search = self.values["search"]
        tuned = ", ".join(sorted(search["params"])) if search else "none"
        data = self.values["data"]
        return (
            f"fingerprint {self.fingerprint}: {' '.join(changed) or 'all defaults'}; "
            f"tuned: {tuned}; data: {data['dataset']} {data['root']} "
            f"(files {data['files'][:8]}); code {self.values['code_version']}"
        )


def sweep_settings(spec, data: ResolvedCategory) -> Settings:
    """The settings of ``spec``'s cells on ``data`` (a ``SweepSpec`` of one category)."""
    config = spec.trial_config(spec.runnable_cells()[0])  # the spec has one (SweepSpec.load)
    trial = {
        name: value
        for name, value in asdict(config).items()
        if name not in (*GRID_KEYS, *LOCATION_SETTINGS)
    }
    pretrained = Path(str(config.pretrained))
    if pretrained.is_file():  # a state dict: its content, not only its name, shapes the result
        trial["pretrained_sha256"] = _file_digest(pretrained)
    search = spec.search
    values = json.loads(
        json.dumps(
            {
                "trial": trial,
                "search": None if search is None else asdict(search),
                "data": {
                    "dataset": data.dataset,
                    "folder": data.root.resolve().name,
                    "root": str(data.root.resolve()),
                    "files": data_fingerprint(data.root),
                },
                "code_version": lightning_ad.__version__,
            },
            sort_keys=True,
            default=str,
        )
    )
    # Defaults are left out: see the module docstring.
    values["trial"] = {k: v for k, v in values["trial"].items() if v != _default(k)}
    return Settings(values)


def data_fingerprint(root: Path) -> str:
    """A hash of the images and masks under a category folder: relative paths and contents (a
    replaced, added or removed image changes it; a touched one does not). Other files are not
    read by a trial and are left out, so a render's own record (``synthetic.json`` holds its
    render time) does not make the same files a new study on every machine that renders them
    (with the same OpenCV: the PNG bytes are hashed, not the decoded pixels)."""
    digest = hashlib.blake2b(digest_size=16)
    images = (p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    for path in sorted(images):
        digest.update(str(path.relative_to(root)).encode() + b"\0")
        digest.update(_file_digest(path).encode())
    return digest.hexdigest()


def _default(name: str) -> Any:
    setting = SETTINGS.get(name)
    if setting is None:  # an addition of ours, e.g. the weights file's hash
        return None
    default = setting.default if setting.default is not MISSING else setting.default_factory()
    return json.loads(json.dumps(default, default=str))


def _file_digest(path: Path) -> str:
    digest = hashlib.blake2b()
    with path.open("rb") as file:
        while chunk := file.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _digest(value: Any) -> str:
    text = json.dumps(value, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:FINGERPRINT_LENGTH]
