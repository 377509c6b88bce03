"""Training methods, one strategy each behind :class:`Method`, selected by name."""

from __future__ import annotations

from arctic_rts.config import TrainConfig
from arctic_rts.errors import ConfigError
from arctic_rts.train.methods.adversarial import Adversarial
from arctic_rts.train.methods.base import Method, NormalisedNet, StepResult
from arctic_rts.train.methods.elevation import WithElevation
from arctic_rts.train.methods.fixmatchseg import FixMatchSeg
from arctic_rts.train.methods.pixeldino import PixelDINO
from arctic_rts.train.methods.supervised import Supervised, SupervisedAug

#: Method name -> class.
METHODS: dict[str, type[Method]] = {
    cls.name: cls for cls in (Supervised, SupervisedAug, FixMatchSeg, Adversarial, PixelDINO)
}

__all__ = ["METHODS", "Method", "NormalisedNet", "StepResult", "build_method"]


def build_method(config: TrainConfig) -> Method:
    """The method ``config.method`` names, e.g. ``"pixeldino"`` or ``"pixeldino+elevation"``."""
    name = config.method
    base_name = name.removesuffix("+elevation")
    if base_name not in METHODS:
        raise ConfigError(
            f"unknown method {name!r}; choose one of {', '.join(METHODS)} "
            "(optionally with '+elevation')."
        )
    method = METHODS[base_name](config)
    return WithElevation(method) if name.endswith("+elevation") else method
