"""Augmentations: labels move exactly with the image; photometric changes never touch labels."""

from __future__ import annotations

import torch

from arctic_rts.train.augment import photometric, strong_augment, warp, weak_augment
from arctic_rts.train.config import AugmentConfig

H = W = 40


def _coordinate_batch(n: int = 6) -> dict[str, torch.Tensor]:
    """Image whose two channels are each pixel's own row and column; labels derived from them."""
    ys, xs = torch.meshgrid(
        torch.arange(H, dtype=torch.float32), torch.arange(W, dtype=torch.float32), indexing="ij"
    )
    coords = torch.stack([ys, xs])[None].repeat(n, 1, 1, 1)
    return {
        "image": coords.clone(),
        "soft": coords.clone(),  # soft labels = the coordinates, resampled bilinearly
        "mask": ((xs + ys) > (W + H) / 2).float()[None, None].repeat(n, 1, 1, 1),
    }


GEOMETRY_ONLY = AugmentConfig(photometric_p=0.0, blur_p=0.0)


def test_strong_geometry_moves_labels_to_the_image_pixels() -> None:
    batch = _coordinate_batch()
    out = strong_augment(batch, torch.Generator().manual_seed(3), GEOMETRY_ONLY)
    valid = out["valid"].bool()
    # the transform really moved pixels and brought some in from outside (rotation/elastic)
    assert (out["image"] - batch["image"]).abs().amax() > 1.0
    assert 0.3 < valid.float().mean() < 1.0
    # soft labels (bilinear) carry exactly the coordinates the image pixels came from
    diff = (out["image"] - out["soft"]).abs().amax(dim=1, keepdim=True)
    assert float(diff[valid].max()) < 1e-4
    # the hard mask (nearest) equals the rule applied to the source coordinate, away from the
    # rule's boundary where nearest and bilinear may round to different neighbours
    s = out["image"][:, :1] + out["image"][:, 1:]
    far = (s - (W + H) / 2).abs() > 1.5
    rule = (s > (W + H) / 2).float()
    assert torch.equal(out["mask"][valid & far], rule[valid & far])


def test_same_grid_for_late_tensors() -> None:
    """Warping a later tensor with the returned grid gives what warping it up front gives."""
    from arctic_rts.train.augment import strong_augment_with_grid

    batch = _coordinate_batch(3)
    out, grid = strong_augment_with_grid(
        {"image": batch["image"]}, torch.Generator().manual_seed(5), GEOMETRY_ONLY
    )
    late = warp(batch["soft"], grid)
    valid = out["valid"].bool().expand_as(late)
    assert torch.allclose(late[valid], out["image"][valid], atol=1e-4)


def test_weak_augment_is_a_shared_permutation() -> None:
    batch = _coordinate_batch(8)
    out = weak_augment(batch, torch.Generator().manual_seed(0))
    assert torch.equal(out["image"], out["soft"])
    # the set of pixel values per sample is unchanged (flips/rot90 permute pixels)
    a = batch["image"].flatten(2).sort(dim=-1).values
    b = out["image"].flatten(2).sort(dim=-1).values
    assert not torch.equal(out["image"], batch["image"])
    assert torch.equal(a.sort(dim=1).values, b.sort(dim=1).values)


def test_photometric_touches_only_the_image_and_stays_finite() -> None:
    gen = torch.Generator().manual_seed(1)
    image = torch.rand(4, 3, 24, 24) * 0.3
    batch = {"image": image, "mask": (image[:, :1] > 0.15).float()}
    out = strong_augment(batch, gen, AugmentConfig(rotation_deg=0, elastic_alpha=0, zoom=(1, 1)))
    assert torch.equal(out["mask"], batch["mask"])  # identity geometry: labels unchanged
    assert not torch.allclose(out["image"], image)
    assert torch.isfinite(out["image"]).all()
    assert out["valid"].all()
    same = photometric(
        image, torch.Generator().manual_seed(1), AugmentConfig(photometric_p=0, blur_p=0)
    )
    assert torch.allclose(same, image, atol=1e-6)
