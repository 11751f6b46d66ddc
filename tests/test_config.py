"""TrialConfig: each rule asked of the component it belongs to, one error line each, and the
explicit choices it makes and logs."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from lightning_ad.config import SETTINGS, TrialConfig, check_setting_type
from lightning_ad.data.classes import TwinClasses
from lightning_ad.errors import LightningADError


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"backbone": "resnet81"}, "unknown backbone 'resnet81' (did you mean 'resnet18'?)"),
        ({"head": "arcfce"}, "unknown head 'arcfce' (did you mean 'arcface'?)"),
        ({"head": "adacos", "classes": 2}, "head adacos needs 3 or more classes, got 2"),
        ({"head_params": {"margin": 0.5}}, "unknown parameter 'margin' for head 'arcface'"),
        ({"classes": "normal,lines"}, "unknown twin 'lines' (did you mean 'line'?)"),
        ({"score": "kn"}, "unknown score 'kn' (did you mean 'knn'?)"),
        ({"mask_mode": "backgound"}, "unknown mask mode 'backgound' (did you mean 'background'?)"),
        ({"image_size": 16}, "image size 16 is too small"),
        ({"category": "a/b"}, "category 'a/b' is not allowed"),
        ({"epochs": 0}, "epochs must be at least 1, got 0"),
        ({"score_image_size": 24}, "image size 24 is too small"),
        ({"coreset_fraction": 1.5}, "coreset_fraction 1.5 must lie in (0, 1]"),
        ({"backbone_lr": 0.0}, "backbone_lr must be positive, got 0.0"),
        ({"score": "twinseg"}, "score 'twinseg' reads the patch head's map: set patch_head_weight"),
        ({"patch_head_weight": -1.0}, "patch_head_weight must be 0 (no patch head) or positive"),
        (
            {"patch_head_weight": 1.0, "score_image_size": 64},
            "training crops of 96 px cannot be cut from images scored at 64 px",
        ),
    ],
)
def test_every_rule_is_one_clear_error(settings: dict, message: str) -> None:
    with pytest.raises(LightningADError, match=re.escape(message)):
        TrialConfig(**settings)


def test_the_frozen_baseline_with_a_trained_scorer_is_an_explicit_logged_choice() -> None:
    frozen = TrialConfig(head="none", score="fused")
    assert frozen.score == "fused" and frozen.scoring.scorer == "knn"
    assert frozen.params()["score"] == "fused" and frozen.params()["score_used"] == "knn"
    mapped = TrialConfig(head="none", score="patch-twinseg")  # PatchCore: maps for maps
    assert mapped.params()["score_used"] == "patch"
    trained = TrialConfig(head="arcface", score="fused")
    assert trained.scoring.scorer == "fused"


def test_classes_are_one_value_whatever_their_spelling() -> None:
    for spelling in (3, "3", "class3", "normal,line,distortion", ["normal", "line", "distortion"]):
        config = TrialConfig(classes=spelling)
        assert config.classes == TwinClasses.parse(3) and config.params()["classes"] == "class3"


def test_a_setting_value_must_have_the_fields_type() -> None:
    check_setting_type("lr", 1, "fixed.lr")  # an int is a fine float
    check_setting_type("max_time_minutes", None, "fixed.max_time_minutes")
    with pytest.raises(LightningADError, match=r"fixed.epochs must be int, got 'three' \(str\)"):
        check_setting_type("epochs", "three", "fixed.epochs")
    with pytest.raises(LightningADError, match=r"fixed\.epochs must be int, got True"):
        check_setting_type("epochs", True, "fixed.epochs")


def test_every_setting_has_help_for_the_command_line() -> None:
    assert all(field.metadata.get("help") for field in SETTINGS.values())


def test_building_the_command_line_imports_no_torch() -> None:
    """``lightning-ad --help`` answers at once: reading the settings must not pull in torch."""
    code = "import sys; from lightning_ad.cli import build_parser; build_parser(); "
    code += "print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
