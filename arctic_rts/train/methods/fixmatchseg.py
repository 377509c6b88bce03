"""FixMatchSeg: hard pseudo-labels from the CURRENT model on a weak view, learnt on a strong view.

Unlabelled pixels whose slump probability (from the network as it is at this step, not from its
initial weights as in the reference code) exceeds ``upper`` become slump, those below ``lower``
background, the rest are ignored. The strong transform moves the pseudo-labels with nearest
neighbour; pixels brought in from outside the image are ignored too.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import torch

from arctic_rts.train.augment import Batch, strong_augment, weak_augment
from arctic_rts.train.methods.base import Method, NormalizedNet, StepResult, bce_loss


class FixMatchSeg(Method):
    """Supervised BCE plus ``weight`` x BCE on confident pseudo-labels."""

    name = "fixmatchseg"
    uses_unlabelled = True

    def hyperparameters(self) -> dict[str, Any]:
        """Thresholds, weight and augmentation ranges."""
        return {"fixmatch": asdict(self.config.fixmatch), "augment": asdict(self.config.augment)}

    def pseudo_labels(
        self, net: NormalizedNet, image: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Pseudo-labels from ``net`` as it is now: (slump 0/1, confident 0/1), both (N,1,H,W)."""
        cfg = self.config.fixmatch
        with torch.no_grad():
            prob = torch.sigmoid(net(image).float())
        mask = (prob > cfg.upper).float()
        confident = ((prob > cfg.upper) | (prob < cfg.lower)).float()
        return mask, confident

    def loss(
        self,
        net: NormalizedNet,
        labelled: Batch,
        unlabelled: Batch | None,
        step: int,
        generator: torch.Generator,
    ) -> StepResult:
        """Supervised BCE + weight * BCE(student on strong view, pseudo-labels of weak view)."""
        sup, _, _ = self.supervised_part(net, labelled, generator)
        weak = weak_augment(self.unlabelled_batch(unlabelled), generator)
        mask, confident = self.pseudo_labels(net, weak["image"])
        valid = confident * weak.get("valid", torch.ones_like(confident))
        strong = strong_augment(
            {**weak, "mask": mask, "valid": valid}, generator, self.config.augment
        )
        heads = net.forward_heads(strong["image"], self.heads("logits"))
        self.records.append((heads, strong))
        unsup = bce_loss(heads["logits"], strong["mask"], strong["valid"])
        total = sup + self.config.fixmatch.weight * unsup
        return StepResult(
            total,
            {
                "sup": float(sup.detach()),
                "unsup": float(unsup.detach()),
                "confident": float(valid.mean()),
            },
        )
