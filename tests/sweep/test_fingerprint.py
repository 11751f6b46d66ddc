"""Content-addressed cells: a grown grid trains only its new cells, a shrunk one trains nothing
and leaves the table, edited settings or other data retrain every cell under a new fingerprint,
and the table shows one fingerprint (any earlier one on request)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from lightning_ad import cli, report
from lightning_ad.data.resolve import resolve_category
from lightning_ad.data.synthetic import MARKER, generate_category
from lightning_ad.sweep.fingerprint import data_fingerprint, sweep_settings
from lightning_ad.sweep.spec import SweepSpec, SweepTarget
from tests.conftest import TINY_SIZE
from tests.fakes import NoOpTrials
from tests.helpers import trial_runs
from tests.sweep.conftest import temporary_target

FROZEN = {  # frozen cells: scored, not trained, so each takes a second
    "grid": {
        "category": ["screw"],
        "backbone": ["mobilenet_v2"],
        "head": ["none"],
        "classes": [2],
        "seed": [0],
    },
    "fixed": {"image_size": 32, "pretrained": "false", "artifacts": "minimal"},
}


def _spec(seeds: list[int] | None = None, **fixed: object) -> SweepSpec:
    grid = {**FROZEN["grid"], "seed": seeds or [0]}
    return SweepSpec.from_dict(
        {"grid": grid, "fixed": {**FROZEN["fixed"], **fixed}}, default_name="edits"
    )


def _table_seeds(target: SweepTarget, fingerprint: str | None = None) -> list[int]:
    trials = report.fetch_trials(
        target.tracking_uri, target.experiment, target.spec, fingerprint or target.fingerprint
    )
    return sorted(trials["seed"])


def _sweep(spec: SweepSpec, data_root: Path, tmp_path: Path) -> SweepTarget:
    """The sweep run to its end with trials that train nothing: which cells run is the
    question here, not what they compute."""
    from lightning_ad.sweep.runner import run_sweep

    target = temporary_target(spec, data_root, tmp_path)
    assert run_sweep(target, show_progress=False, train=NoOpTrials()).status.all_complete
    return target


def test_seeds_added_train_only_the_new_cells_and_seeds_removed_leave_the_table(
    synthetic_root: Path, tmp_path: Path
) -> None:
    one = _sweep(_spec([0]), synthetic_root, tmp_path)
    two = _sweep(_spec([0, 1, 2]), synthetic_root, tmp_path)
    assert two.study_name == one.study_name  # the same settings: the same study
    assert len(trial_runs(two)) == 3 and _table_seeds(two) == [0, 1, 2]
    fewer = _sweep(_spec([1]), synthetic_root, tmp_path)
    assert len(trial_runs(fewer)) == 3  # nothing trained
    assert _table_seeds(fewer) == [1]


def test_an_edited_fixed_setting_retrains_and_the_table_shows_its_runs_alone(
    synthetic_root: Path, tmp_path: Path
) -> None:
    small = _sweep(_spec([0, 1]), synthetic_root, tmp_path)
    large = _sweep(_spec([0, 1], image_size=40), synthetic_root, tmp_path)
    assert large.fingerprint != small.fingerprint
    runs = trial_runs(large)
    assert len(runs) == 4
    trials = report.fetch_trials(
        large.tracking_uri, large.experiment, large.spec, large.fingerprint
    )
    assert set(trials["run_id"]) == {
        r.info.run_id for r in runs if r.data.params["image_size"] == "40"
    }
    assert _table_seeds(large, small.fingerprint) == [0, 1]  # the earlier runs stay findable


def test_changed_data_is_another_fingerprint_the_same_data_elsewhere_is_not(
    synthetic_root: Path, screw_copy: Path
) -> None:
    """Workers on several machines find the same files at different paths: one study."""
    spec = _spec()
    built_in = SweepTarget(spec, "screw", data_root=str(synthetic_root))
    copy = SweepTarget(spec, "screw", data_root=str(screw_copy))
    assert built_in.fingerprint == copy.fingerprint  # the same files, another folder
    assert copy.settings.values["data"]["root"] == str(screw_copy.resolve())  # still recorded
    before = copy.fingerprint
    image = next((screw_copy / "train" / "good").iterdir())
    image.write_bytes(image.read_bytes() + b"\0")
    assert SweepTarget(spec, "screw", data_root=str(screw_copy)).fingerprint != before
    assert "image_size=32" in copy.settings.describe()


def test_the_table_command_names_its_fingerprint_and_shows_an_earlier_one(
    synthetic_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    monkeypatch.chdir(tmp_path)
    sweep_file = tmp_path / "edits.yaml"
    common = ["--sweep", str(sweep_file), "--data-root", str(synthetic_root)]
    fingerprints = []
    for size in (32, 40):
        sweep_file.write_text(
            yaml.safe_dump({**FROZEN, "fixed": {**FROZEN["fixed"], "image_size": size}})
        )
        assert cli.main(["sweep", *common, "--quiet"]) == 0
        fingerprints.append(
            SweepTarget(
                SweepSpec.load(sweep_file), "screw", data_root=str(synthetic_root)
            ).fingerprint
        )
    capsys.readouterr()
    assert cli.main(["table", *common, "--format", "csv"]) == 0
    err = capsys.readouterr().err
    assert f"fingerprint {fingerprints[1]}: " in err and "image_size=40" in err
    assert f"other settings of this sweep (--fingerprint): {fingerprints[0]}" in err
    assert cli.main(["table", *common, "--fingerprint", fingerprints[0]]) == 0
    assert "image_size=32" in capsys.readouterr().err
    assert cli.main(["table", *common, "--fingerprint", "nope"]) == 2
    assert f"known: {fingerprints[1]}, {fingerprints[0]}" in capsys.readouterr().err
    # A machine without the data (reading a shared server): the newest settings' runs.
    elsewhere = ["--sweep", str(sweep_file), "--data-root", str(tmp_path / "not-here")]
    assert cli.main(["table", *elsewhere, "--format", "csv"]) == 0
    err = capsys.readouterr().err
    assert "the data is not here" in err and f"showing the newest, {fingerprints[1]}" in err


def test_two_renders_of_the_built_in_data_are_one_fingerprint(tmp_path: Path) -> None:
    """Each render records its own time in synthetic.json; five machines that render the same
    pixels must still join one study, not train the grid five times."""
    first, second = (
        generate_category("grid", tmp_path / name, seed=0, image_size=TINY_SIZE, max_per_folder=3)
        for name in ("a", "b")
    )
    record = json.loads((second / MARKER).read_text())
    (second / MARKER).write_text(json.dumps(record | {"seconds": record["seconds"] + 7.5}))
    assert data_fingerprint(first) == data_fingerprint(second)
    mask = next((second / "ground_truth").rglob("*.png"))
    mask.write_bytes(mask.read_bytes() + b"\0")
    assert data_fingerprint(first) != data_fingerprint(second)  # masks are what defines it


def test_a_setting_at_its_default_is_no_new_fingerprint(synthetic_root: Path) -> None:
    """Written out at its default, a setting changes nothing, so it hashes as if absent (and a
    setting added to the code at such a default keeps every old cell); any other value is a
    new fingerprint."""
    data = resolve_category("screw", synthetic_root)
    fingerprint = sweep_settings(_spec(), data).fingerprint
    assert sweep_settings(_spec(patch_head_lr=1e-3), data).fingerprint == fingerprint
    assert sweep_settings(_spec(patch_head_lr=2e-3), data).fingerprint != fingerprint
