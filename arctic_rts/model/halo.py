"""The halo a model needs: how far context reaches into a tile's output.

A UNet with four 2x poolings sees far, but a trained model's influence fades much sooner;
:func:`measure_halo` finds the smallest halo from which tiled output stays within
:data:`HALO_TOLERANCE` of whole-image output, and ``arctic-rts train`` writes it into the card.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

import numpy as np
import torch

from arctic_rts.errors import ConfigError

#: Spatial alignment of the UNet: four 2x poolings.
ALIGN = 16
#: The halo that makes tiled output equal whole-scene output for any UNet with 4 poolings.
EXACT_HALO = 128
#: Largest probability difference against whole-image output that a measured halo may leave
#: on training patches: a hundredth of the 1e-3 the inference benchmark accepts, because a
#: whole real scene has places where context matters more than on a few patches (bundled
#: model: 16 px left 1.5e-3 on its patches and 1.8e-2 on the real L1C scene, 32 px 4.6e-6
#: and 4.3e-5), while staying clear of float noise (2e-7 to 5e-7 from 64 px on).
HALO_TOLERANCE = 1e-5


def measure_halo(
    model: Callable[[torch.Tensor], torch.Tensor],
    image: np.ndarray,
    tolerance: float = HALO_TOLERANCE,
    batch_size: int = 8,
) -> tuple[int, dict[int, float]]:
    """The smallest halo from which on tiled output stays within ``tolerance`` of whole-image
    output, measured on ``image``.

    Every 64 x 64 px core on the 16 px grid at least 128 px inside the image is run with
    halos of 0, 16, ..., 128 px and compared with the same pixels of one forward pass over the
    whole image; the result is the smallest halo for which it and every larger one keep the
    largest difference over all cores within ``tolerance``. Run under fp32.

    Args:
        model: Raw reflectance ``(N, C, H, W)`` -> logits ``(N, 1, H, W)`` (e.g. a
            :class:`~arctic_rts.model.weights.NormalizedModel`).
        image: Reflectance ``(C, H, W)`` the model is meant for, at least 320 px on each side;
            NaN is replaced by 0.
        batch_size: Cores per forward pass.

    Returns:
        The halo and the maximum absolute probability difference for every halo tried.
    """
    core = 4 * ALIGN
    h, w = image.shape[-2:]
    if min(h, w) < 2 * EXACT_HALO + core:
        raise ConfigError(
            f"measure_halo needs an image of at least {2 * EXACT_HALO + core} px a side, "
            f"got {h} x {w}."
        )
    x = torch.nan_to_num(torch.from_numpy(np.asarray(image, dtype=np.float32)))[None]
    x = x[..., : h - h % ALIGN, : w - w % ALIGN]
    origins = list(
        itertools.product(
            range(EXACT_HALO, x.shape[-2] - EXACT_HALO - core + 1, core),
            range(EXACT_HALO, x.shape[-1] - EXACT_HALO - core + 1, core),
        )
    )
    diffs: dict[int, float] = {}
    with torch.inference_mode():
        whole = torch.sigmoid(model(x).float())[0, 0]
        for halo in range(0, EXACT_HALO + 1, ALIGN):
            worst = 0.0
            for first in range(0, len(origins), batch_size):
                group = origins[first : first + batch_size]
                windows = torch.cat(
                    [
                        x[..., y - halo : y + core + halo, c - halo : c + core + halo]
                        for y, c in group
                    ]
                )
                tiles = torch.sigmoid(model(windows).float())[:, 0, halo:, halo:][..., :core, :core]
                for tile, (y, c) in zip(tiles, group, strict=True):
                    diff = (tile - whole[y : y + core, c : c + core]).abs().max()
                    worst = max(worst, float(diff))
            diffs[halo] = worst
    chosen = EXACT_HALO
    for halo in sorted(diffs, reverse=True):
        if diffs[halo] > tolerance:
            break
        chosen = halo
    return chosen, diffs
