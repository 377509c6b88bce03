"""Elevation pretext (Castano et al.): the network also regresses a coarse DEM, for any method.

An extra 1x1 regression head predicts, per pixel, the elevation relative to its patch. The
target is the DEM resampled with the patch (same geometric augmentation, bilinear), minus the
patch's mean over valid pixels, divided by its standard deviation (at least 1 m, so flat patches
do not blow up); prediction and target are average-pooled by ``coarsen`` (a coarse DEM) and
compared with an MSE weighted by the share of valid pixels in each coarse cell. The loss is added
with weight ``elevation.weight`` to whatever the wrapped method computes, reusing its forward
passes (every student pass whose batch carries a ``"dem"``).
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import torch
import torch.nn.functional as F

from arctic_rts.train.augment import Batch
from arctic_rts.train.methods.base import Method, NormalizedNet, StepResult


def elevation_loss(
    prediction: torch.Tensor, dem: torch.Tensor, valid: torch.Tensor, coarsen: int
) -> torch.Tensor:
    """Weighted MSE between the elevation head and the patch-standardised coarse DEM."""
    valid = valid.float() * torch.isfinite(dem).float()
    dem = torch.nan_to_num(dem.float(), nan=0.0)
    n_valid = valid.sum(dim=(1, 2, 3), keepdim=True).clamp_min(1.0)
    mean = (dem * valid).sum(dim=(1, 2, 3), keepdim=True) / n_valid
    var = (((dem - mean) ** 2) * valid).sum(dim=(1, 2, 3), keepdim=True) / n_valid
    target = (dem - mean) / var.sqrt().clamp_min(1.0)
    if coarsen > 1:
        weight = F.avg_pool2d(valid, coarsen, ceil_mode=True)
        safe = weight.clamp_min(1e-6)
        target = F.avg_pool2d(target * valid, coarsen, ceil_mode=True) / safe
        pred = F.avg_pool2d(prediction.float() * valid, coarsen, ceil_mode=True) / safe
    else:
        weight, pred = valid, prediction.float()
    return ((pred - target) ** 2 * weight).sum() / weight.sum().clamp_min(1.0)


class WithElevation(Method):
    """Wraps a method and adds the elevation pretext loss to it.

    Args:
        base: The wrapped method.
    """

    def __init__(self, base: Method) -> None:
        super().__init__(base.config)
        self.base = base
        base.record_heads = ("elevation",)  # read from the base method's student passes
        self.name = f"{base.name}+elevation"
        self.uses_unlabelled = base.uses_unlabelled
        self.augments_labelled = base.augments_labelled

    def model_heads(self) -> dict[str, Any]:
        """The base method's heads plus the elevation head."""
        return {**self.base.model_heads(), "elevation": True}

    def hyperparameters(self) -> dict[str, Any]:
        """The base method's hyper-parameters plus the elevation section."""
        return {**self.base.hyperparameters(), "elevation": asdict(self.config.elevation)}

    def setup(self, net: NormalizedNet) -> None:
        """Set up the base method."""
        self.base.setup(net)

    def begin_step(self) -> None:
        """Forget the previous step's records (the base method's too)."""
        self.base.begin_step()

    def loss(
        self,
        net: NormalizedNet,
        labelled: Batch,
        unlabelled: Batch | None,
        step: int,
        generator: torch.Generator,
    ) -> StepResult:
        """The base loss + weight * elevation MSE over every student pass that has a DEM."""
        result = self.base.loss(net, labelled, unlabelled, step, generator)
        cfg = self.config.elevation
        terms = [
            elevation_loss(heads["elevation"], batch["dem"], batch["valid"], cfg.coarsen)
            for heads, batch in self.base.records
            if "dem" in batch and "elevation" in heads
        ]
        if not terms:
            raise ValueError(
                "the elevation pretext needs a DEM with the patches: build the dataset with a DEM "
                "or drop '+elevation' from the method."
            )
        elev = torch.stack(terms).mean()
        logs = {**result.logs, "elevation": float(elev.detach())}
        return StepResult(result.loss + cfg.weight * elev, logs)

    def after_step(self, net: NormalizedNet, step: int, total_steps: int) -> None:
        """The base method's update."""
        self.base.after_step(net, step, total_steps)

    def state_dict(self) -> dict[str, Any]:
        """The base method's state."""
        return self.base.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the base method's state."""
        self.base.load_state_dict(state)
