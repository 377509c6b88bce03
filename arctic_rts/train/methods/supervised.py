"""The supervised baselines: labelled data only, without (``supervised``) or with augmentation."""

from __future__ import annotations

import torch

from arctic_rts.train.augment import Batch
from arctic_rts.train.methods.base import Method, NormalizedNet, StepResult


class Supervised(Method):
    """Binary cross-entropy on labelled patches as they are (the paper's baseline)."""

    name = "supervised"
    augments_labelled = False

    def loss(
        self,
        net: NormalizedNet,
        labelled: Batch,
        unlabelled: Batch | None,
        step: int,
        generator: torch.Generator,
    ) -> StepResult:
        """BCE over the valid pixels of the labelled batch."""
        sup, _, _ = self.supervised_part(net, labelled, generator)
        return StepResult(sup, {"sup": float(sup.detach())})


class SupervisedAug(Supervised):
    """The baseline with the paper's weak and strong augmentations on the labelled patches."""

    name = "supervised+aug"
    augments_labelled = True

    def hyperparameters(self) -> dict[str, object]:
        """The augmentation ranges."""
        return {"augment": self.config.augment.__dict__.copy()}
