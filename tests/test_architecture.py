"""The package's shape, checked: the layers that ``pyproject.toml`` declares for import-linter
hold, no module reaches itself through its imports, and no module outgrows one job."""

from __future__ import annotations

from pathlib import Path

import grimp
import pytest
from importlinter import configuration
from importlinter.application.use_cases import lint_imports

import lightning_ad

PACKAGE = Path(lightning_ad.__file__).parent
MAX_LINES = 400


@pytest.fixture(scope="module")
def graph() -> grimp.ImportGraph:
    return grimp.build_graph("lightning_ad", cache_dir=None)


def test_every_module_imports_only_from_the_layers_below_its_own(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(PACKAGE.parent)  # where pyproject.toml holds the contract
    configuration.configure()  # what the lint-imports command does first
    assert lint_imports(cache_dir=None, no_logo=True), "see the broken contract printed above"


def test_no_module_imports_itself_through_others(graph: grimp.ImportGraph) -> None:
    cycles = sorted(
        f"{module} -> {imported} -> ... -> {module}"
        for module in graph.modules
        for imported in graph.find_modules_directly_imported_by(module)
        if graph.chain_exists(importer=imported, imported=module)
    )
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_no_module_is_longer_than_one_job_needs() -> None:
    long = {
        str(path.relative_to(PACKAGE.parent)): n
        for path in PACKAGE.rglob("*.py")
        if (n := len(path.read_text().splitlines())) > MAX_LINES
    }
    assert not long, f"files over {MAX_LINES} lines (split them by job): {long}"
