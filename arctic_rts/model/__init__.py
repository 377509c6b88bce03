"""The segmentation network and its weights files."""

from __future__ import annotations

from arctic_rts.model.unet import UNet, build_unet
from arctic_rts.model.weights import (
    ModelRef,
    NormalizedModel,
    Weights,
    bundled_weights,
    check_bands,
    load_model,
    read_card,
    resolve_weights,
    save_weights,
)

__all__ = [
    "ModelRef",
    "NormalizedModel",
    "UNet",
    "Weights",
    "build_unet",
    "bundled_weights",
    "check_bands",
    "load_model",
    "read_card",
    "resolve_weights",
    "save_weights",
]
