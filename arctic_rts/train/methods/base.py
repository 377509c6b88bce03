"""The interface every training method implements, and the pieces they share.

A method turns one labelled batch (and, for the semi-supervised ones, one unlabelled batch) into
a loss for the segmentation network, and may keep state of its own (a teacher, a centre, a
discriminator and its optimiser) that it updates after each optimiser step and that goes into
checkpoints. Batches hold raw reflectance (NaN already filled); the network the methods see is a
:class:`NormalizedNet`, which applies the card's normalisation, so teachers copied from it carry it.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from arctic_rts.model.unet import UNet
from arctic_rts.model.weights import NormalizedModel
from arctic_rts.train.augment import Batch, strong_augment, weak_augment
from arctic_rts.train.config import TrainConfig


class NormalizedNet(NormalizedModel):
    """The UNet behind its card's normalisation, as :func:`load_model` rebuilds it, plus heads.

    Training uses the very module inference uses (same normalisation arithmetic), so saved
    weights predict exactly as the trained network did.

    Args:
        unet: The network (takes normalized input).
        mean: Per-band mean of raw reflectance.
        std: Per-band standard deviation of raw reflectance.
        bands: Band names (default: placeholders; the loop passes the real ones).
    """

    def __init__(
        self,
        unet: UNet,
        mean: Sequence[float],
        std: Sequence[float],
        bands: Sequence[str] | None = None,
    ) -> None:
        names = list(bands) if bands is not None else [f"band{i}" for i in range(len(mean))]
        card = {"bands": names, "normalisation": {"mean": list(mean), "std": list(std)}}
        super().__init__(unet, card)

    @property
    def device(self) -> torch.device:
        """The device the network's tensors live on."""
        return self.mean.device

    def forward_heads(
        self, x: torch.Tensor, heads: Collection[str] | None = None
    ) -> dict[str, torch.Tensor]:
        """The UNet's ``heads`` (all by default) for raw reflectance ``x`` (N, C, H, W)."""
        return self.unet.forward_heads(self.normalize(x), heads)  # type: ignore[no-any-return]

    def forward_dino(self, x: torch.Tensor) -> torch.Tensor:
        """The PixelDINO head alone for raw reflectance ``x`` (see :meth:`UNet.forward_dino`)."""
        return self.unet.forward_dino(self.normalize(x))  # type: ignore[no-any-return]


def masked_mean(values: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Mean of ``values`` weighted by ``weight`` (broadcast); 0 (with a graph) when no weight."""
    weight = weight.to(values.dtype).expand_as(values)
    return (values * weight).sum() / weight.sum().clamp_min(1.0)


def bce_loss(logits: torch.Tensor, target: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy with logits, averaged over valid pixels only."""
    per_pixel = F.binary_cross_entropy_with_logits(
        logits, target.to(logits.dtype), reduction="none"
    )
    return masked_mean(per_pixel, valid)


@dataclass
class StepResult:
    """What one training step's loss computation hands back to the loop."""

    #: Scalar to minimise.
    loss: torch.Tensor
    #: Named parts of the loss (floats) for the log.
    logs: dict[str, float] = field(default_factory=dict)


class Method:
    """Base class of the training strategies; subclasses override :meth:`loss` and friends.

    Args:
        config: The run's configuration (the method reads its own section).
    """

    #: Name as ``TrainConfig.method`` spells it.
    name: str = "base"
    #: Whether the method consumes an unlabelled batch each step.
    uses_unlabelled: bool = False
    #: Whether the labelled batch is augmented (weak then strong).
    augments_labelled: bool = True
    #: Heads that an add-on reads from :attr:`records` besides those the method's own loss
    #: needs (the elevation pretext sets ``("elevation",)``); every student pass computes them.
    record_heads: tuple[str, ...] = ()

    def __init__(self, config: TrainConfig) -> None:
        self.config = config
        #: Student outputs with the (augmented) batch they came from; add-ons such as the
        #: elevation pretext read them, so no extra forward pass is needed.
        self.records: list[tuple[dict[str, torch.Tensor], Batch]] = []

    # --- set-up -------------------------------------------------------------------------------
    def model_heads(self) -> dict[str, Any]:
        """Extra keyword arguments of :class:`UNet` this method needs (e.g. its DINO head)."""
        return {}

    def setup(self, net: NormalizedNet) -> None:
        """Create state that depends on the network (teacher copy, discriminator)."""

    def hyperparameters(self) -> dict[str, Any]:
        """The method's hyper-parameters, for the weights card."""
        return {}

    # --- one step -----------------------------------------------------------------------------
    def augment_labelled(self, batch: Batch, generator: torch.Generator) -> Batch:
        """Weak then strong augmentation of a labelled batch (if the method augments; only weak
        with ``augment.labelled = "weak"``)."""
        if not self.augments_labelled:
            return batch
        weak = weak_augment(batch, generator)
        if self.config.augment.labelled == "weak":
            return weak
        return strong_augment(weak, generator, self.config.augment)

    def supervised_part(
        self, net: NormalizedNet, labelled: Batch, generator: torch.Generator
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor], Batch]:
        """The labelled loss every method shares: augmented batch -> BCE over valid pixels."""
        batch = self.augment_labelled(labelled, generator)
        heads = net.forward_heads(batch["image"], self.heads("logits"))
        self.records.append((heads, batch))
        return bce_loss(heads["logits"], batch["mask"], batch["valid"]), heads, batch

    def heads(self, *needed: str) -> tuple[str, ...]:
        """The heads a student pass computes: those its loss ``needed`` plus :attr:`record_heads`;
        the others cost nothing."""
        return (*needed, *self.record_heads)

    def unlabelled_batch(self, unlabelled: Batch | None) -> Batch:
        """The unlabelled batch a semi-supervised method's step needs (the training loop
        refuses such a method without unlabelled data before its first step)."""
        if unlabelled is None:
            raise ValueError(
                f"{self.name} needs unlabelled data: set data.unlabelled in the config."
            )
        return unlabelled

    def loss(
        self,
        net: NormalizedNet,
        labelled: Batch,
        unlabelled: Batch | None,
        step: int,
        generator: torch.Generator,
    ) -> StepResult:
        """One step's loss; ``labelled`` has image, mask, valid, ``unlabelled`` image, valid."""
        raise NotImplementedError

    def after_step(self, net: NormalizedNet, step: int, total_steps: int) -> None:
        """Update the method's own state after the optimiser stepped the network."""

    # --- checkpoints --------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Tensors and numbers that resume the method exactly (loadable with weights_only)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`'s output."""

    def begin_step(self) -> None:
        """Forget the previous step's records."""
        self.records = []
