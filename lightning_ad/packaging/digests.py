"""A stored model is data: its files must hash to what the trial recorded when it logged them.

Anyone who can write to the tracking store's artifacts can change a logged model's files, and
``mlflow.pyfunc`` *runs* a model's code file when it loads it. So a trial records the SHA-256 of
every file of its model in a run tag (:data:`DIGESTS_TAG`) as it logs them; ``predict`` reads
only the detector's data files (``detector.json`` and tensors, never code, never a pickle) after
checking every file of the model, and ``serve`` checks them too, and that the model loads through
this package's own loader, before it hands the checked copy to MLflow's scoring server
(``serving``).
"""

from __future__ import annotations

import hashlib
import json
import re
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from lightning_ad import tracking
from lightning_ad.errors import LightningADError

if TYPE_CHECKING:
    from mlflow import MlflowClient

DIGESTS_TAG = "lightning_ad.model_digests"
"""A run tag: JSON ``{path below the model folder: SHA-256}`` for every file of its model."""
PYFUNC_LOADER = "mlflow.pyfunc.loaders.code_model"
"""The only loader a served model may name: MLflow's own for a model saved as code, which runs
the model's code file (checked here against its recorded digest)."""
_MODEL_URI = re.compile(r"(?:runs:/(?P<run>[^/]+)/(?P<path>[^?#]+))|"
                        r"(?:models:/(?P<name>[^/]+)/(?P<version>\d+))")  # fmt: skip


def file_digests(folder: Path) -> dict[str, str]:
    """``{relative path: SHA-256}`` of every file below ``folder``."""
    return {
        str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


def record(client: MlflowClient, run_id: str, folder: Path) -> None:
    """Tag run ``run_id`` with the digests of the model files in ``folder``."""
    client.set_tag(run_id, DIGESTS_TAG, json.dumps(file_digests(folder), sort_keys=True))


def source_run(model_uri: str, tracking_uri: str) -> tuple[str, str]:
    """(run id, artifact path) of ``runs:/RUN_ID/PATH`` or ``models:/NAME/VERSION``.

    Raises:
        LightningADError: another kind of URI, or a registered version that is not found.
    """
    from mlflow.exceptions import MlflowException

    match = _MODEL_URI.fullmatch(model_uri)
    if match is None:
        raise LightningADError(
            f"model {model_uri}: use models:/NAME/VERSION (lightning-ad register), "
            "runs:/RUN_ID/model or a local folder"
        )
    if match["run"]:
        return match["run"], match["path"].rstrip("/")
    try:
        version = tracking.client(tracking_uri).get_model_version(match["name"], match["version"])
    except MlflowException as err:
        raise LightningADError(f"model {model_uri}: {err.message} in {tracking_uri}") from err
    return version.run_id, "model"


def recorded(tracking_uri: str, run_id: str, model_uri: str) -> dict[str, str]:
    """The digests run ``run_id`` recorded for its model.

    Raises:
        LightningADError: the run recorded none (logged by an older version, or not by a trial).
    """
    from mlflow.exceptions import MlflowException

    try:
        text = tracking.client(tracking_uri).get_run(run_id).data.tags.get(DIGESTS_TAG)
    except MlflowException as err:
        raise LightningADError(f"model {model_uri}: {err.message} in {tracking_uri}") from err
    if not text:
        raise LightningADError(
            f"model {model_uri}: run {run_id} recorded no digests of its model files, so they "
            "cannot be checked; train its cell again with this version and register the new run"
        )
    return json.loads(text)


def fetch_verified(tracking_uri: str, model_uri: str, into: Path | None = None) -> Path:
    """Download the files of ``model_uri``, check each against its recorded digest, and return
    the local model folder. It must hold exactly the recorded files: a file added to the store
    (a second code file, a loader module) is refused too.

    Raises:
        LightningADError: a file is missing, changed or added; the URI is not a stored model.
    """
    import mlflow
    from mlflow.exceptions import MlflowException

    run_id, path = source_run(model_uri, tracking_uri)
    expected = recorded(tracking_uri, run_id, model_uri)
    folder = into or Path(tempfile.mkdtemp(prefix="lightning_ad-model-"))
    tracking.no_download_progress()
    try:
        with tracking.using(tracking_uri):
            mlflow.artifacts.download_artifacts(
                run_id=run_id, artifact_path=path, dst_path=str(folder)
            )
    except (MlflowException, OSError) as err:
        message = getattr(err, "message", str(err)).splitlines()[0]
        raise LightningADError(f"model {model_uri}: cannot download its files ({message})") from err
    model = folder / path
    verify(model, expected, source=model_uri)
    return model


def verify(folder: Path, expected: Mapping[str, str], source: str) -> None:
    """Every ``expected`` file below ``folder`` has its digest, and no other file is there.

    Raises:
        LightningADError: naming the first file that differs, is missing or was added.
    """
    found = file_digests(folder)
    for name, digest in sorted(expected.items()):
        if name not in found:
            raise LightningADError(f"model {source}: {name} is missing from the store")
        if found[name] != digest:
            raise LightningADError(
                f"model {source}: {name} differs from the file its trial logged (SHA-256 "
                f"{found[name][:12]}..., recorded {digest[:12]}...): refused; the store was "
                "changed after the trial, so register a run you trust"
            )
    added = sorted(set(found) - set(expected))
    if added:
        raise LightningADError(
            f"model {source}: {added[0]} was added to the store after the trial logged the "
            "model: refused"
        )


def check_loader(folder: Path, source: str) -> None:
    """The model's ``MLmodel`` loads it through MLflow's Python-model loader and nothing else.

    Raises:
        LightningADError: another loader, or no python_function flavour.
    """
    spec = yaml.safe_load((folder / "MLmodel").read_text()) or {}
    flavors = spec.get("flavors") or {}
    loader = (flavors.get("python_function") or {}).get("loader_module")
    if set(flavors) != {"python_function"} or loader != PYFUNC_LOADER:
        raise LightningADError(
            f"model {source}: its MLmodel names loader {loader!r} and flavours "
            f"{sorted(flavors)}; a lightning_ad detector has python_function with "
            f"{PYFUNC_LOADER} only: refused"
        )


def servable_model(model_uri: str, tracking_uri: str) -> Path:
    """What ``serve`` hands to MLflow's scoring server: a local copy of the model whose every
    file has its recorded digest and whose MLmodel names only MLflow's loader for code (a
    local folder is the user's own: its loader is checked, its files taken as they are).

    Raises:
        LightningADError: see :func:`fetch_verified` and :func:`check_loader`.
    """
    model = Path(model_uri) if Path(model_uri).is_dir() else fetch_verified(tracking_uri, model_uri)
    check_loader(model, model_uri)
    return model
