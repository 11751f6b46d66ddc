"""PatchCore: the greedy k-center coreset, nearest-neighbour distances, and maps that find a
planted defect."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lightning_ad.errors import LightningADError
from lightning_ad.models import patchcore
from lightning_ad.models.config import NetConfig
from lightning_ad.models.net import AnomalyNet


def test_greedy_coreset_takes_the_corners_of_a_square_not_its_centre() -> None:
    points = torch.tensor([[0.0, 0.0], [10, 0], [0, 10], [10, 10], [5, 5]])
    corner_starts = 0
    for seed in range(8):
        chosen = patchcore.greedy_coreset(points, 4, seed=seed).tolist()
        if chosen[0] == 4:  # a random start on the centre: any corner is then farthest
            continue
        corner_starts += 1
        assert sorted(chosen) == [0, 1, 2, 3]
        # the second pick is the corner opposite the start
        assert torch.equal(points[chosen[0]] + points[chosen[1]], torch.tensor([10.0, 10.0]))
    assert corner_starts >= 4


def test_greedy_coreset_is_the_papers_farthest_point_rule() -> None:
    """Each pick is the point farthest from every point picked before (a plain reference)."""
    points = torch.randn(300, 6, generator=torch.Generator().manual_seed(0))
    chosen = patchcore.greedy_coreset(points, 25, seed=3).tolist()
    reference = [chosen[0]]
    while len(reference) < 25:
        gaps = torch.cdist(points, points[reference]).amin(dim=1)
        reference.append(int(gaps.argmax()))
    assert chosen == reference


def test_the_memory_bank_holds_the_fraction_and_measures_to_its_nearest_row() -> None:
    patches = torch.randn(4, 3, 5, 5, generator=torch.Generator().manual_seed(1))
    bank = patchcore.MemoryBank(coreset_fraction=0.1).fit(patches)
    assert len(bank.bank) == 10  # ceil(0.1 * 100 patches)
    distances = bank.distances(patches)
    assert distances.shape == (4, 5, 5)
    rows = patches.permute(0, 2, 3, 1).reshape(-1, 3)
    expected = torch.cdist(rows, bank.bank).amin(dim=1).view(4, 5, 5)
    torch.testing.assert_close(distances, expected)
    assert (distances.flatten() < 1e-3).sum() >= 10  # the bank's own rows are at distance ~0
    with pytest.raises(LightningADError, match="coreset_fraction 0 must lie in"):
        patchcore.MemoryBank(coreset_fraction=0)


def test_the_anomaly_map_peaks_inside_a_planted_defect() -> None:
    rng = np.random.default_rng(0)
    stripes = (np.arange(64) // 4 % 2 * 120 + 60).astype(np.uint8)
    normal = np.broadcast_to(stripes[None, :, None], (64, 64, 3))

    def image() -> torch.Tensor:
        noisy = np.clip(normal + rng.normal(0, 6, normal.shape), 0, 255).astype(np.uint8)
        return torch.from_numpy(noisy.transpose(2, 0, 1).copy())

    train = torch.stack([image() for _ in range(8)])
    test = image()
    test[:, 40:48, 16:24] = 255  # a bright square across the stripes
    mask = torch.zeros(64, 64, dtype=torch.bool)
    mask[40:48, 16:24] = True

    net = AnomalyNet(NetConfig("efficientnet_lite0", "none", 3, {}, "auto", "frozen")).eval()
    with torch.no_grad():
        bank = patchcore.MemoryBank(0.5).fit(
            patchcore.patch_features(net.backbone, net.normalise(train))
        )
        distances = bank.distances(
            patchcore.patch_features(net.backbone, net.normalise(test[None]))
        )
    anomaly_map = patchcore.anomaly_maps(distances, 64)[0]
    peak = divmod(int(anomaly_map.argmax()), 64)
    assert mask[peak], f"map peaks at {peak}, outside the defect"
    assert anomaly_map[mask].mean() > 2 * anomaly_map[~mask].mean()


@pytest.mark.parametrize(("side", "sigma"), [(256, 4.0), (64, 1.0)])
def test_the_separable_blur_is_torchvisions_gaussian_blur(side: int, sigma: float) -> None:
    from torchvision.transforms.functional import gaussian_blur

    images = torch.rand(3, 1, side, side, generator=torch.Generator().manual_seed(0))
    size = 2 * int(4 * sigma + 0.5) + 1
    expected = gaussian_blur(images, [size, size], [sigma, sigma])
    torch.testing.assert_close(patchcore.gaussian_blur(images, sigma), expected)
