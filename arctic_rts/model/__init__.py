"""The segmentation network and its weights files."""

from __future__ import annotations

from arctic_rts.model.unet import UNet, build_unet
from arctic_rts.model.weights import (
    ModelRef,
    NormalizedModel,
    bundled_weights,
    load_model,
    read_card,
    save_weights,
)

__all__ = [
    "ModelRef",
    "NormalizedModel",
    "UNet",
    "build_unet",
    "bundled_weights",
    "load_model",
    "read_card",
    "save_weights",
]
