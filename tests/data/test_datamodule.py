from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from lightning_ad.config import TrialConfig
from lightning_ad.data.config import DataConfig
from lightning_ad.data.datamodule import AnomalyDataModule, LabelledBatch, load_images
from lightning_ad.data.mvtec import MVTecCategory


def _data(**settings) -> DataConfig:
    """A trial's data settings: 32-pixel images in batches of 8, unless ``settings`` say."""
    defaults = {"backbone": "mobilenet_v2", "image_size": 32, "batch_size": 8, "seed": 0}
    return TrialConfig(**(defaults | settings)).data


def _datamodule(root: Path, **settings) -> AnomalyDataModule:
    dm = AnomalyDataModule(root / "screw", _data(**settings))
    dm.setup("fit")
    return dm


def _epoch(dm: AnomalyDataModule, epoch: int) -> tuple[torch.Tensor, torch.Tensor]:
    loader = dm.train_dataloader()
    loader.sampler.set_epoch(epoch)  # what Lightning's fit loop does before each epoch
    images, targets = zip(*loader, strict=True)
    return torch.cat(images), torch.cat(targets)


def test_an_epoch_has_as_many_samples_as_normals_whatever_the_class_count(
    synthetic_root: Path,
) -> None:
    """Equal budgets: class2 and class3 epochs take the same number of optimizer steps."""
    lengths = []
    for classes in (2, 3):
        dm = _datamodule(synthetic_root, classes=classes)
        images, targets = _epoch(dm, 0)
        lengths.append(len(targets))
        assert set(targets.tolist()) <= set(range(classes))
        assert images.dtype == torch.uint8 and images.shape[1:] == (3, 32, 32)
    assert lengths == [8, 8]  # 10 train/good images, 20 % held out for validation


def test_samples_per_epoch_runs_on_through_the_permutations(synthetic_root: Path) -> None:
    """Asked for every (class, image) pair, an epoch has each once; asked for more, it runs
    into a second permutation instead of stopping short."""
    dm = _datamodule(synthetic_root, samples_per_epoch=24)
    _, targets = _epoch(dm, 0)
    assert Counter(targets.tolist()) == {0: 8, 1: 8, 2: 8}
    dm = _datamodule(synthetic_root, samples_per_epoch=30)
    assert len(_epoch(dm, 0)[1]) == 30


def test_twins_are_redrawn_each_epoch_reproducibly(synthetic_root: Path) -> None:
    dm = _datamodule(synthetic_root)
    first = [dm.train_set[(0, i)][0] for i in range(len(dm.train_set))]
    again = [dm.train_set[(0, i)][0] for i in range(len(dm.train_set))]
    second = [dm.train_set[(1, i)][0] for i in range(len(dm.train_set))]
    n = len(dm.train_set.images)
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    assert all(
        torch.equal(a, b) for a, b in zip(first[:n], second[:n], strict=True)
    )  # normal: as is
    changed = sum(not torch.equal(a, b) for a, b in zip(first[n:], second[n:], strict=True))
    assert changed >= 0.9 * (len(first) - n)


def test_same_seed_same_batches_other_seed_other_split(synthetic_root: Path) -> None:
    a, b = _datamodule(synthetic_root), _datamodule(synthetic_root)
    assert all(torch.equal(x, y) for x, y in zip(_epoch(a, 3), _epoch(b, 3), strict=True))
    other = _datamodule(synthetic_root, seed=1)
    assert not torch.equal(_epoch(a, 0)[1], _epoch(other, 0)[1])


def test_validation_slice_has_its_own_fixed_twins(synthetic_root: Path) -> None:
    dm = _datamodule(synthetic_root, val_fraction=0.3)
    assert len(dm.val_set.images) == 3 and len(dm.train_set.images) == 7
    first = [x for x, _ in dm.val_dataloader()]
    second = [x for x, _ in dm.val_dataloader()]
    assert all(torch.equal(x, y) for x, y in zip(first, second, strict=True))
    targets = torch.cat([y for _, y in dm.val_dataloader()])
    assert Counter(targets.tolist()) == {0: 3, 1: 3, 2: 3}


def test_test_split_has_labels_defects_and_masks(synthetic_root: Path) -> None:
    dm = _datamodule(synthetic_root)
    batches = list(dm.test_dataloader())
    assert isinstance(batches[0], LabelledBatch)
    labels = torch.cat([b.label for b in batches])
    defects = torch.cat([b.defect for b in batches])
    masks = torch.cat([b.mask for b in batches])
    assert dm.defect_names[0] == "good"
    assert set(defects[labels == 0].tolist()) == {0}
    assert set(defects[labels == 1].tolist()) == set(range(1, len(dm.defect_names)))
    assert not masks[labels == 0].any()
    assert all(m.any() for m in masks[labels == 1])


def test_the_good_loaders_split_the_training_images_untouched(synthetic_root: Path) -> None:
    """The scorers' train split and the threshold's validation slice: every train/good image in
    exactly one of them, in file order, exactly as decoded (no twin, no change)."""
    dm = _datamodule(synthetic_root)
    fit = torch.cat([x for x, _ in dm.train_good_dataloader()])
    held_out = torch.cat([x for x, _ in dm.val_good_dataloader()])
    category = MVTecCategory.load(synthetic_root / "screw")
    decoded = torch.from_numpy(
        load_images(tuple(s.path for s in category.train), 32).transpose(0, 3, 1, 2).copy()
    )
    assert len(fit) + len(held_out) == len(decoded) == 10 and len(held_out) == 2
    rows = {bytes(image.numpy()): i for i, image in enumerate(decoded)}
    fit_rows = [rows[bytes(image.numpy())] for image in fit]
    held_out_rows = [rows[bytes(image.numpy())] for image in held_out]
    assert fit_rows == sorted(fit_rows) and held_out_rows == sorted(held_out_rows)
    assert sorted(fit_rows + held_out_rows) == list(range(10))
    assert dm.grey  # the built-in screw is grey


def test_scoring_reads_train_good_and_test_at_its_own_size(synthetic_root: Path) -> None:
    """Training sees 32-pixel images; the memory bank and the test split see 64 pixels."""
    dm = AnomalyDataModule(synthetic_root / "screw", _data(score_image_size=64))
    dm.setup()
    assert next(iter(dm.train_dataloader()))[0].shape[-1] == 32
    assert next(iter(dm.train_good_dataloader()))[0].shape[-1] == 64
    batch = next(iter(dm.test_dataloader()))
    assert batch.image.shape[-1] == batch.mask.shape[-1] == 64
    assert dm.test_paths[0].startswith("test/") and len(dm.test_paths) == len(dm.test_set)


def test_any_list_of_twins(synthetic_root: Path) -> None:
    dm = _datamodule(
        synthetic_root,
        classes=["normal", "cutpaste", "scar"],
        twin_params={"scar": {"rotation": 10.0}},
    )
    _, targets = _epoch(dm, 0)
    assert set(targets.tolist()) == {0, 1, 2}
    assert dm.twins[2].rotation == 10.0


def test_corrupt_training_image_fails_setup_naming_it(screw_copy: Path) -> None:
    from lightning_ad.errors import DataError

    bad = screw_copy / "train" / "good" / "004.png"
    bad.write_bytes(b"garbage")
    dm = AnomalyDataModule(screw_copy, _data(image_size=33))
    with pytest.raises(DataError, match=f"cannot decode image {bad}"):
        dm.setup("fit")


def test_with_a_patch_head_twins_are_drawn_on_crops_at_the_scoring_scale_with_their_masks(
    synthetic_root: Path,
) -> None:
    """Each item is an ``image_size`` crop of a ``score_image_size`` image; its mask marks
    exactly the pixels its twin changed in that crop, and nothing for a normal one."""
    dm = _datamodule(synthetic_root, score_image_size=64, patch_head_weight=1.0)
    dataset = dm.train_set
    assert dataset.images.shape[1:3] == (64, 64)
    for key in range(len(dataset)):
        image, target, mask = dataset[(3, key)]
        assert image.shape == (3, 32, 32) and mask.shape == (32, 32) and mask.dtype == torch.bool
        rng = np.random.default_rng([0, 0, 3, key])
        y, x = (int(rng.integers(64 - 32 + 1)) for _ in range(2))
        crop = dataset.images[key % len(dataset.images)][y : y + 32, x : x + 32]
        changed = (image.numpy().transpose(1, 2, 0) != crop).any(axis=2)
        assert torch.equal(mask, torch.from_numpy(changed))
        assert bool(mask.any()) == (target != 0)
        assert torch.equal(dataset[(3, key)][0], image)  # drawn the same way again
    images, targets, masks = next(iter(dm.train_dataloader()))
    assert images.shape[1:] == (3, 32, 32) and masks.shape == (len(targets), 32, 32)
