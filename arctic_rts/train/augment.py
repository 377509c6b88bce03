"""Batched augmentations on torch tensors: weak (flips, rot90) and strong (the paper's ranges).

A batch is a dict of ``(N, C, H, W)`` tensors that must move together. The key decides how a
tensor is resampled by a geometric transform:

* ``"image"``: bilinear, and the only tensor photometric changes touch;
* ``"mask"`` and ``"valid"`` (hard labels, the 0/1 "use this pixel in the loss" mask): nearest;
* any other key (soft teacher labels, a DEM): bilinear.

A strong augmentation samples ONE sampling grid per sample (rotation, random resized crop,
elastic warp) and resamples every tensor of the batch with it, so labels land exactly where the
image's pixels went; :func:`warp` exposes the same step for tensors produced later (the
PixelDINO teacher's soft labels). Pixels the transform brings in from outside the image get
``valid = 0``. All randomness comes from an explicit CPU ``torch.Generator`` so that runs are
reproducible and resumable, whatever the device.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from arctic_rts.train.config import AugmentConfig

#: Keys resampled with nearest neighbour (hard labels).
HARD_KEYS: frozenset[str] = frozenset({"mask", "valid"})
#: The key photometric changes apply to.
IMAGE_KEY = "image"
#: The paper's ranges.
DEFAULT_AUGMENT = AugmentConfig()

Batch = dict[str, torch.Tensor]


def _uniform(n: int, lo: float, hi: float, generator: torch.Generator) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(n, generator=generator)


def weak_augment(batch: Batch, generator: torch.Generator) -> Batch:
    """Random flips and rot90 per sample, applied identically to every tensor of ``batch``.

    These transforms are exact permutations of pixels, so nothing is resampled and no pixel
    becomes invalid. Non-square patches only get 0 or 180 degree rotations.
    """
    ref = next(iter(batch.values()))
    n, h, w = ref.shape[0], ref.shape[-2], ref.shape[-1]
    k = torch.randint(0, 4 if h == w else 2, (n,), generator=generator)
    if h != w:
        k = k * 2
    flip = torch.randint(0, 2, (n,), generator=generator).bool()
    out: Batch = {}
    for key, t in batch.items():
        parts = []
        for i in range(n):
            x = t[i]
            if flip[i]:
                x = x.flip(-1)
            parts.append(torch.rot90(x, int(k[i]), dims=(-2, -1)))
        out[key] = torch.stack(parts)
    return out


def _gaussian_kernel(sigma: float, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    radius = max(1, math.ceil(3 * sigma))
    x = torch.arange(-radius, radius + 1, device=device, dtype=dtype)
    k = torch.exp(-0.5 * (x / sigma) ** 2)
    return k / k.sum()


def _blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of every channel, reflecting at the border."""
    if sigma <= 0:
        return x
    k = _gaussian_kernel(sigma, x.device, x.dtype)
    r = k.numel() // 2
    c = x.shape[1]
    # reflect padding needs pad < size; clamp the kernel radius for tiny inputs
    r_eff = min(r, x.shape[-1] - 1, x.shape[-2] - 1)
    if r_eff < r:
        k = k[r - r_eff : r + r_eff + 1]
        k = k / k.sum()
        r = r_eff
    kx = k.view(1, 1, 1, -1).repeat(c, 1, 1, 1)
    ky = k.view(1, 1, -1, 1).repeat(c, 1, 1, 1)
    x = F.conv2d(F.pad(x, (r, r, 0, 0), mode="reflect"), kx, groups=c)
    return F.conv2d(F.pad(x, (0, 0, r, r), mode="reflect"), ky, groups=c)


def sample_warp(
    n: int,
    height: int,
    width: int,
    generator: torch.Generator,
    config: AugmentConfig = DEFAULT_AUGMENT,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """Sample the geometric part of a strong augmentation as a sampling grid.

    Output pixel ``p`` (relative to the patch centre, in pixels) reads the source position
    ``centre + R(angle) p / zoom + elastic(p)``: a random resized crop (zoom 1-2, random centre
    that keeps the unrotated crop inside the patch), a rotation within +-``rotation_deg`` and a
    smooth elastic displacement of at most ``elastic_alpha`` pixels.

    Returns:
        ``(N, H, W, 2)`` grid in ``grid_sample``'s normalized (x, y) coordinates
        (``align_corners=False``); positions outside [-1, 1] lie outside the image.
    """
    zoom = torch.exp(_uniform(n, math.log(config.zoom[0]), math.log(config.zoom[1]), generator))
    angle = torch.deg2rad(_uniform(n, -config.rotation_deg, config.rotation_deg, generator))
    # the crop's centre may move as far as keeps the (unrotated) crop inside the patch
    slack = 1.0 - 1.0 / zoom
    cx = _uniform(n, -1.0, 1.0, generator) * slack * (width / 2)
    cy = _uniform(n, -1.0, 1.0, generator) * slack * (height / 2)
    noise = torch.randn(n, 2, height, width, generator=generator)

    ys = torch.arange(height, dtype=torch.float32) - (height - 1) / 2
    xs = torch.arange(width, dtype=torch.float32) - (width - 1) / 2
    py, px = torch.meshgrid(ys, xs, indexing="ij")
    cos, sin = torch.cos(angle).view(n, 1, 1), torch.sin(angle).view(n, 1, 1)
    z = zoom.view(n, 1, 1)
    sx = cx.view(n, 1, 1) + (cos * px - sin * py) / z
    sy = cy.view(n, 1, 1) + (sin * px + cos * py) / z

    if config.elastic_alpha > 0:
        field = _blur(noise, config.elastic_sigma) if config.elastic_sigma > 0 else noise
        peak = field.abs().amax(dim=(1, 2, 3), keepdim=True).clamp_min(1e-12)
        field = field / peak * config.elastic_alpha
        sx = sx + field[:, 0]
        sy = sy + field[:, 1]

    # pixel offsets from the centre -> grid_sample coordinates (align_corners=False)
    gx = 2 * sx / width
    gy = 2 * sy / height
    return torch.stack([gx, gy], dim=-1).to(device)


def inside(grid: torch.Tensor) -> torch.Tensor:
    """``(N, 1, H, W)`` float: 1 where the grid reads from inside the image, else 0."""
    ok = (grid.abs() <= 1.0).all(dim=-1)
    return ok.unsqueeze(1).to(grid.dtype)


def warp(t: torch.Tensor, grid: torch.Tensor, *, hard: bool = False) -> torch.Tensor:
    """Resample ``t`` (N, C, H, W) with ``grid``: nearest for hard labels, else bilinear.

    Border padding keeps edge values from blending with zeros; whether a pixel came from
    inside the image is :func:`inside`'s business, not the values'.
    """
    mode = "nearest" if hard else "bilinear"
    out = F.grid_sample(
        t.to(grid.dtype), grid, mode=mode, padding_mode="border", align_corners=False
    )
    return out.to(t.dtype)


def photometric(
    image: torch.Tensor, generator: torch.Generator, config: AugmentConfig = DEFAULT_AUGMENT
) -> torch.Tensor:
    """Gamma, brightness, contrast and Gaussian blur per sample; labels are never touched.

    ``image`` is reflectance (about 0..1, before normalisation); gamma acts on it clipped at 0.
    """
    n = image.shape[0]
    p = config.photometric_p
    use = [torch.rand(n, generator=generator) < p for _ in range(3)]
    gamma = torch.exp(_uniform(n, math.log(config.gamma[0]), math.log(config.gamma[1]), generator))
    bright = _uniform(n, 1 - config.brightness, 1 + config.brightness, generator)
    contrast = _uniform(n, 1 - config.contrast, 1 + config.contrast, generator)
    blur = torch.rand(n, generator=generator) < config.blur_p

    def col(v: torch.Tensor, on: torch.Tensor, neutral: float) -> torch.Tensor:
        return torch.where(on, v, torch.full_like(v, neutral)).view(n, 1, 1, 1).to(image)

    x = image.clamp_min(0) ** col(gamma, use[0], 1.0)
    x = torch.where(use[0].view(n, 1, 1, 1).to(image.device), x, image)
    x = x * col(bright, use[1], 1.0)
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = (x - mean) * col(contrast, use[2], 1.0) + mean
    if config.blur_sigma > 0 and bool(blur.any()):
        idx = blur.nonzero().flatten().to(image.device)
        x = x.clone()
        x[idx] = _blur(x[idx], config.blur_sigma)
    return x


def strong_augment(
    batch: Batch, generator: torch.Generator, config: AugmentConfig = DEFAULT_AUGMENT
) -> Batch:
    """One geometric transform per sample applied to every tensor, then photometric on the image.

    The returned batch always has ``"valid"``: the input's ``valid`` (all ones when absent)
    resampled with nearest neighbour and zeroed where the transform read outside the image.

    Args:
        batch: ``(N, C, H, W)`` tensors on one device, keyed as described in the module doc.
        generator: CPU generator all randomness is drawn from.
        config: The augmentation ranges.
    """
    return strong_augment_with_grid(batch, generator, config)[0]


def strong_augment_with_grid(
    batch: Batch, generator: torch.Generator, config: AugmentConfig = DEFAULT_AUGMENT
) -> tuple[Batch, torch.Tensor]:
    """:func:`strong_augment`, also returning the sampling grid.

    The grid warps tensors computed afterwards (the PixelDINO teacher's labels) with exactly the
    same transform as the image, via :func:`warp`.
    """
    image = batch[IMAGE_KEY]
    n, _, h, w = image.shape
    grid = sample_warp(n, h, w, generator, config, device=image.device)
    out: Batch = {}
    for key, t in batch.items():
        out[key] = warp(t, grid, hard=key in HARD_KEYS)
    valid = inside(grid).to(image.dtype)
    if "valid" in out:
        valid = valid * out["valid"].to(image.dtype)
    out["valid"] = valid
    out[IMAGE_KEY] = photometric(out[IMAGE_KEY], generator, config)
    return out, grid
