"""Training methods, one strategy each behind :class:`Method`, selected by name."""

from __future__ import annotations

from arctic_rts.train.config import TRAIN_METHODS, TrainConfig
from arctic_rts.train.methods.adversarial import Adversarial
from arctic_rts.train.methods.base import Method, NormalizedNet, StepResult
from arctic_rts.train.methods.elevation import WithElevation
from arctic_rts.train.methods.fixmatchseg import FixMatchSeg
from arctic_rts.train.methods.pixeldino import PixelDINO
from arctic_rts.train.methods.supervised import Supervised, SupervisedAug

_CLASSES: tuple[type[Method], ...] = (
    Supervised,
    SupervisedAug,
    FixMatchSeg,
    Adversarial,
    PixelDINO,
)

#: Method name -> class, for every name of :data:`arctic_rts.train.config.TRAIN_METHODS`: that tuple
#: is the one list of names (``TrainConfig`` validates against it without importing torch);
#: this mapping only attaches the classes, and a name without a class fails on import.
METHODS: dict[str, type[Method]] = {
    name: next(cls for cls in _CLASSES if cls.name == name) for name in TRAIN_METHODS
}

__all__ = ["METHODS", "Method", "NormalizedNet", "StepResult", "build_method"]


def build_method(config: TrainConfig) -> Method:
    """The method ``config.method`` names, e.g. ``"pixeldino"`` or ``"pixeldino+elevation"``.

    The name was checked by :class:`~arctic_rts.train.config.TrainConfig` (the one rule).
    """
    name = config.method
    method = METHODS[name.removesuffix("+elevation")](config)
    return WithElevation(method) if name.endswith("+elevation") else method
