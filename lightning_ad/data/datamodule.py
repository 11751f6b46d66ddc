"""``AnomalyDataModule``: normal images and their anomaly twins for training, good vs defects
for test.

Batches hold uint8 images (B, 3, H, W): a quarter of the bytes of float32 through the loader and
onto the device. Scaling and ImageNet normalisation belong to the model, which knows what its
backbone expects.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import NamedTuple

import cv2
import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from lightning_ad.data.config import DataConfig
from lightning_ad.data.masks import object_masks
from lightning_ad.data.mvtec import GOOD, MVTecCategory, Sample, read_image, read_mask, resize
from lightning_ad.data.twins import NORMAL, Twin, build_twin, draw, is_grey
from lightning_ad.errors import LightningADError

SCORING_BATCH_SIZE = 4
"""Images per batch wherever nothing trains (the scorers' normals, the threshold's, the test
split): small batches keep a batch's activations in cache, which on a CPU beats the larger
batch's fewer calls (``make bench`` B11 measures it; docs/design-notes.md has the numbers)."""


@functools.lru_cache(maxsize=16)
def load_images(paths: tuple[Path, ...], size: int) -> np.ndarray:
    """Decode and resize images once per process: (N, size, size, 3) uint8, read-only.

    Cached so that every trial of a category in one worker shares one copy.
    """
    images = np.stack([resize(read_image(p), size, cv2.INTER_AREA) for p in paths])
    images.flags.writeable = False
    return images


@functools.lru_cache(maxsize=16)
def load_masks(paths: tuple[Path | None, ...], size: int) -> np.ndarray:
    """Ground-truth masks at ``size`` (N, size, size) bool; a missing mask is all False."""
    empty = np.zeros((size, size), bool)
    masks = np.stack(
        [
            empty
            if p is None
            else resize(read_mask(p).astype(np.uint8), size, cv2.INTER_NEAREST) > 0
            for p in paths
        ]
    )
    masks.flags.writeable = False
    return masks


def _to_tensor(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))


DRAW_ATTEMPTS = 10
"""Crops a twin is drawn on before one that it cannot change anywhere is an error (a crop of
flat background can hold no rotated patch)."""


class TwinDataset(Dataset):
    """Each image once per class: item ``c * N + i`` is image ``i`` turned into class ``c``.

    A key is an index or ``(epoch, index)`` (from :class:`EpochSampler`). The twin is drawn from
    ``default_rng([seed, stream, epoch, index])``: redrawn every epoch, identical in every worker
    process and on every rerun with the same seed.

    With ``crop``, an item is a random ``crop``-pixel square of the image, the twin drawn on it,
    and comes with the twin's mask (:func:`~lightning_ad.data.twins.draw`; empty for normal).
    """

    def __init__(
        self,
        images: np.ndarray,
        object_masks: np.ndarray | None,
        twins: Sequence[Twin | None],
        seed: int,
        stream: int,
        crop: int | None = None,
    ) -> None:
        self.images, self.object_masks, self.twins = images, object_masks, list(twins)
        self.seed, self.stream, self.crop = seed, stream, crop

    def __len__(self) -> int:
        return len(self.images) * len(self.twins)

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[torch.Tensor, ...]:
        epoch, index = key if isinstance(key, tuple) else (0, key)
        target, i = divmod(index, len(self.images))
        image, twin = self.images[i], self.twins[target]
        rng = np.random.default_rng([self.seed, self.stream, epoch, index])
        if self.crop is not None:
            image, mask = self._crop_twin(image, self.object_masks[i], twin, rng)
            return _to_tensor(image), target, torch.from_numpy(mask)
        if twin is not None:
            image = twin(image, self.object_masks[i], rng)
        return _to_tensor(image), target

    def _crop_twin(
        self,
        image: np.ndarray,
        object_mask: np.ndarray,
        twin: Twin | None,
        rng: np.random.Generator,
    ) -> tuple[np.ndarray, np.ndarray]:
        side, (h, w) = self.crop, image.shape[:2]
        for _ in range(DRAW_ATTEMPTS):
            y, x = int(rng.integers(h - side + 1)), int(rng.integers(w - side + 1))
            crop = np.ascontiguousarray(image[y : y + side, x : x + side])
            if twin is None:
                return crop, np.zeros((side, side), bool)
            try:
                return draw(twin, crop, object_mask[y : y + side, x : x + side], rng)
            except LightningADError as err:
                error = err
        raise LightningADError(
            f"{DRAW_ATTEMPTS} crops of {side} px of a {w}x{h} training image held no pixel the "
            f"twin could change: {error}"
        ) from error


class EpochSampler(Sampler):
    """Shuffles reproducibly per (seed, epoch) and hands the epoch to the dataset with each index.

    Lightning calls ``set_epoch`` before every epoch, so twins change every epoch, yet a worker
    process never needs to know which epoch it is in. An epoch is the first ``samples`` items of
    that epoch's permutations (default: all ``length``; more than ``length`` runs on into a next
    permutation): a fixed number of optimizer steps per epoch, whatever the class count.
    """

    def __init__(self, length: int, seed: int, samples: int | None = None) -> None:
        self.length, self.seed, self.epoch = length, seed, 0
        self.samples = length if samples is None else samples

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.samples

    def __iter__(self) -> Iterator[tuple[int, int]]:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        rounds = -(-self.samples // self.length)
        order = torch.cat([torch.randperm(self.length, generator=generator) for _ in range(rounds)])
        for index in order[: self.samples].tolist():
            yield self.epoch, index


class LabelledBatch(NamedTuple):
    """A test batch: images, 0/1 labels, defect-type indices (into ``defect_names``), masks."""

    image: torch.Tensor
    label: torch.Tensor
    defect: torch.Tensor
    mask: torch.Tensor


class LabelledDataset(Dataset):
    def __init__(
        self, images: np.ndarray, labels: Sequence[int], defects: Sequence[int], masks: np.ndarray
    ):
        self.images, self.labels, self.defects, self.masks = images, labels, defects, masks

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> LabelledBatch:
        return LabelledBatch(
            _to_tensor(self.images[i]),
            self.labels[i],
            self.defects[i],
            torch.from_numpy(self.masks[i].copy()),
        )


class AnomalyDataModule(pl.LightningDataModule):
    """Normal images of one category and their anomaly twins.

    Args:
        category_dir: a category folder in MVTec AD layout (see :mod:`lightning_ad.data.resolve`).
        config: which images, twins and sizes (:class:`~lightning_ad.data.config.DataConfig`).
            Test images are never used for any choice: the validation slice picks the
            checkpoint and sets the threshold.
        scoring_batch_size: images per batch where nothing trains (:data:`SCORING_BATCH_SIZE`).
        num_workers: loader processes; ``None`` picks 0 on CPU (the twins are cheap and a
            worker would steal a core from the model) and up to 4 with a GPU.

    Raises:
        LightningADError: (in ``setup``) a category too small to hold out a validation slice.
    """

    def __init__(
        self,
        category_dir: str | Path,
        config: DataConfig,
        scoring_batch_size: int = SCORING_BATCH_SIZE,
        num_workers: int | None = None,
    ) -> None:
        super().__init__()
        self.category_dir, self.config = Path(category_dir), config
        self.twins: list[Twin | None] = [
            None if name == NORMAL else build_twin(name, **config.twin_params.get(name, {}))
            for name in config.classes.names
        ]
        self.scoring_batch_size = scoring_batch_size
        cuda = torch.cuda.is_available()
        self.num_workers = (
            (min(4, os.cpu_count() or 1) if cuda else 0) if num_workers is None else num_workers
        )
        self.pin_memory = cuda
        self.used_mask_mode: str | None = None
        self.grey = False
        """Whether every train/good image is grey (set by ``setup``)."""
        self.defect_names: tuple[str, ...] = ()
        self.test_paths: tuple[str, ...] = ()
        """Each test image's path below the category folder, in test order."""
        self.shift_sets: dict[str, LabelledDataset] = {}

    def setup(self, stage: str | None = None) -> None:
        if hasattr(self, "train_set"):
            return
        # Twins warp and draw on patches of a few dozen pixels: OpenCV's thread pool costs more
        # than it gives there (make bench B2; docs/design-notes.md) and would
        # compete with torch for the cores. Forked DataLoader workers inherit the setting.
        cv2.setNumThreads(1)
        config = self.config
        category = MVTecCategory.load(self.category_dir)
        train_size = config.scoring_size if config.crops else config.image_size
        images = load_images(tuple(s.path for s in category.train), train_size)
        masks, self.used_mask_mode = object_masks(images, config.mask_mode)
        order = np.random.default_rng([config.seed, 7]).permutation(len(images))
        n_val = max(1, round(config.val_fraction * len(images)))
        if len(images) - n_val < 2:  # the scorers need two normals to fit (kNN's scale, LOF)
            raise LightningADError(
                f"{category.root / 'train' / 'good'} has {len(images)} image(s): "
                "too few to hold out "
                f"a validation slice of {config.val_fraction:.0%} and fit on the rest; add normal "
                "images"
            )
        val, train = np.sort(order[:n_val]), np.sort(order[n_val:])
        crop = config.image_size if config.crops else None
        twins, seed = self.twins, config.seed
        self.train_set = TwinDataset(images[train], masks[train], twins, seed, stream=0, crop=crop)
        self.val_set = TwinDataset(images[val], masks[val], twins, seed, stream=1, crop=crop)
        # The scorers are fitted on the train split only: the validation slice's normals are
        # new to them, as a production part is, so the threshold set on their scores is
        # set on scores like those new parts will get (the twins of these images still pick
        # the checkpoint, which the scorers do not see).
        good = load_images(tuple(s.path for s in category.train), config.scoring_size)
        self.good_set = TwinDataset(good[train], None, [None], config.seed, stream=2)
        self.val_good_set = TwinDataset(good[val], None, [None], config.seed, stream=3)
        self.grey = all(is_grey(image) for image in images)
        shifted = [s.defect for samples in category.shifts.values() for s in samples]
        self.defect_names = (GOOD, *sorted(set(category.defect_types) | (set(shifted) - {GOOD})))
        self.test_paths = tuple(str(s.path.relative_to(category.root)) for s in category.test)
        self.test_set = self._labelled(category.test)
        self.shift_sets = {name: self._labelled(s) for name, s in category.shifts.items()}

    def _labelled(self, samples: tuple[Sample, ...]) -> LabelledDataset:
        return LabelledDataset(
            load_images(tuple(s.path for s in samples), self.config.scoring_size),
            [s.label for s in samples],
            [self.defect_names.index(s.defect) for s in samples],
            load_masks(tuple(s.mask_path for s in samples), self.config.scoring_size),
        )

    @property
    def epoch_samples(self) -> int:
        """Training samples per epoch (``DataConfig.samples_per_epoch``)."""
        return self.config.samples_per_epoch or len(self.train_set.images)

    def train_dataloader(self) -> DataLoader:
        sampler = EpochSampler(len(self.train_set), self.config.seed, self.epoch_samples)
        return self._loader(self.train_set, sampler=sampler)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_set, batch_size=self.scoring_batch_size)

    def shift_dataloaders(self) -> dict[str, DataLoader]:
        """The category's shifted test splits (``shifts/<name>/``, e.g. ``lighting``) by name:
        the test split's parts under a camera change the train split never saw."""
        return {
            name: self._loader(dataset, batch_size=self.scoring_batch_size)
            for name, dataset in self.shift_sets.items()
        }

    def train_good_dataloader(self) -> DataLoader:
        """The train split's normal images as they are (no twins): what the scorers are fitted
        on."""
        return self._loader(self.good_set, batch_size=self.scoring_batch_size)

    def val_good_dataloader(self) -> DataLoader:
        """The validation slice's normal images as they are: where the detector's decision
        threshold is set."""
        return self._loader(self.val_good_set, batch_size=self.scoring_batch_size)

    def _loader(
        self, dataset: Dataset, sampler: Sampler | None = None, batch_size: int | None = None
    ) -> DataLoader:
        return DataLoader(
            dataset,
            batch_size=batch_size or self.config.batch_size,
            sampler=sampler,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            pin_memory=self.pin_memory,
        )
