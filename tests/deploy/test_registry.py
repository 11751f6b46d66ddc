"""Choosing the run to register: a sweep cell named by its grid values, a seed named or the
lowest, never a test metric; and the tags a version gets."""

from __future__ import annotations

import pytest

from lightning_ad import tracking
from lightning_ad.deploy import registry
from lightning_ad.errors import LightningADError
from tests.helpers import invoke

SWEEP, FINGERPRINT = "default", "0123456789ab"


@pytest.fixture(scope="module")
def sweep_runs(tmp_path_factory: pytest.TempPathFactory) -> str:
    """Finished, complete trial runs of one sweep as a sweep logs them (no training needed to
    test which run is chosen): arcface class3 seeds 0-2, arcface class2 seed 0."""
    uri = f"sqlite:///{tmp_path_factory.mktemp('registry') / 'mlflow.db'}"
    client = tracking.client(uri)
    experiment = tracking.ensure_experiment(f"lightning_ad-{SWEEP}", uri)
    for classes, seed, auc in [("class3", 2, 0.9), ("class3", 0, 0.7), ("class3", 1, 0.8),
                               ("class2", 0, 0.95)]:  # fmt: skip
        run = client.create_run(experiment)
        params = {"category": "screw", "backbone": "efficientnet_lite0", "head": "arcface",
                  "classes": classes, "seed": str(seed), "score_used": "patch"}  # fmt: skip
        for key, value in params.items():
            client.log_param(run.info.run_id, key, value)
        client.log_metric(run.info.run_id, "test/auc", auc)
        tags = {tracking.SWEEP_TAG: SWEEP, tracking.ROLE_TAG: tracking.TRIAL_ROLE,
                tracking.FINGERPRINT_TAG: FINGERPRINT, tracking.COMPLETE_TAG: "true",
                tracking.SELECTED_TAG: "true"}  # fmt: skip
        for key, value in tags.items():
            client.set_tag(run.info.run_id, key, value)
        client.set_terminated(run.info.run_id, "FINISHED")
    return uri


def _cell(uri: str, text: str) -> list:
    cell = registry.parse_cell(text)
    return registry.cell_runs(uri, f"lightning_ad-{SWEEP}", SWEEP, FINGERPRINT, "screw", cell)


def test_a_cell_is_its_grid_values_and_the_lowest_seed_is_taken_unless_one_is_named(
    sweep_runs: str,
) -> None:
    runs = _cell(sweep_runs, "backbone=efficientnet_lite0, head=arcface, classes=3")
    assert sorted(r.data.params["seed"] for r in runs) == ["0", "1", "2"]
    run, said = registry.run_of_seed(runs, None)
    assert run.data.params["seed"] == "0"  # not seed 2, the best test AUROC
    assert said == "the cell has seeds 0, 1, 2; registering seed 0 (--seed)"
    assert registry.run_of_seed(runs, 1)[0].data.params["seed"] == "1"
    with pytest.raises(LightningADError, match="--seed 7: the cell has complete runs of seeds"):
        registry.run_of_seed(runs, 7)
    tags = registry.version_tags(sweep_runs, f"lightning_ad-{SWEEP}", run)
    assert tags["cell_median_test_auc"] == "0.8000" and tags["cell_seeds"] == "3"
    assert tags["test/auc"] == "0.7000" and tags["fingerprint"] == FINGERPRINT
    assert tags["cell"] == "backbone=efficientnet_lite0,head=arcface,classes=class3"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("head=arcface", "matches 2 cells .*name the rest of them"),
        ("head=adacos", "no complete run of cell head=adacos; its complete cells: backbone="),
        ("head=arcface,seed=0", "unknown key 'seed'; use backbone, head, classes"),
        ("arcface", "'arcface' is not KEY=VALUE"),
        ("", "--cell is empty"),
    ],
)
def test_a_cell_that_names_no_single_cell_is_one_clear_error(
    sweep_runs: str, text: str, message: str
) -> None:
    with pytest.raises(LightningADError, match=message):
        _cell(sweep_runs, text)


def test_register_needs_a_run_or_a_cell(tmp_path) -> None:
    done = invoke("register", cwd=tmp_path)
    assert done.returncode == 2
    assert "name a RUN_ID, or a sweep cell with --category and --cell" in done.stderr


def test_serve_refuses_a_host_beyond_loopback(tmp_path) -> None:
    done = invoke("serve", "--model", "models:/x/1", "--host", "0.0.0.0", cwd=tmp_path)
    assert done.returncode == 2 and "the scoring server has no login" in done.stderr
