"""Adversarial semi-supervised segmentation (Hung et al. 2018) for one foreground class.

A fully convolutional discriminator ``D`` reads a two-channel probability map (background,
slump) and answers, per pixel, "does this look like a ground-truth map?". The segmentation
network's loss contains D's judgement (the reference code leaves it out):

``L_G = L_sup + lambda_adv * BCE(D(P_l), 1) + lambda_adv_u * BCE(D(P_u), 1) + lambda_semi * L_semi``

where ``L_semi`` is BCE against the network's own hard prediction on the unlabelled pixels D's
confidence exceeds ``semi_threshold``. D has its own Adam optimiser and is trained after each
network step on ``BCE(D(one-hot truth), 1) + BCE(D(P_l), 0) + BCE(D(P_u), 0)``.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from arctic_rts.train.augment import Batch, weak_augment
from arctic_rts.train.methods.base import Method, NormalizedNet, StepResult, masked_mean


class Discriminator(nn.Module):
    """Fully convolutional discriminator: 4 strided 4x4 convs + LeakyReLU, 1 logit per pixel.

    Args:
        in_channels: Channels of the probability map (2 for background/slump).
        width: Channels of the first layer, doubled per layer.
    """

    def __init__(self, in_channels: int = 2, width: int = 32) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c = in_channels
        for i in range(4):
            layers += [nn.Conv2d(c, width * 2**i, 4, stride=2, padding=1), nn.LeakyReLU(0.2)]
            c = width * 2**i
        layers.append(nn.Conv2d(c, 1, 4, stride=2, padding=1))
        self.body = nn.Sequential(*layers)

    def forward(self, prob_map: torch.Tensor) -> torch.Tensor:
        """Per-pixel logit (N, 1, H, W), upsampled to the input size."""
        out = self.body(prob_map)
        return F.interpolate(out, size=prob_map.shape[-2:], mode="bilinear", align_corners=False)


def two_channel(prob: torch.Tensor) -> torch.Tensor:
    """Slump probability (N,1,H,W) -> (background, slump) map (N,2,H,W)."""
    return torch.cat([1 - prob, prob], dim=1)


class Adversarial(Method):
    """Hung et al.'s method; state: discriminator and its optimiser."""

    name = "adversarial"
    uses_unlabelled = True

    def __init__(self, config: Any) -> None:
        super().__init__(config)
        self.discriminator: Discriminator | None = None
        self.d_optimizer: torch.optim.Optimizer | None = None
        self._pending: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor] | None = None

    def hyperparameters(self) -> dict[str, Any]:
        """Loss weights, discriminator and augmentation settings."""
        return {
            "adversarial": asdict(self.config.adversarial),
            "augment": asdict(self.config.augment),
        }

    def setup(self, net: NormalizedNet) -> None:
        """Build D on the network's device and its own Adam optimiser (Hung et al.'s betas)."""
        cfg = self.config.adversarial
        device = net.device
        # D's initial weights come from torch's global RNG, seeded by the loop
        self.discriminator = Discriminator(2, cfg.width).to(device)
        self.d_optimizer = torch.optim.Adam(
            self.discriminator.parameters(), lr=cfg.lr, betas=(0.9, 0.99)
        )

    def _d(self) -> Discriminator:
        if self.discriminator is None:
            raise RuntimeError("Adversarial.setup(net) must run before the first step.")
        return self.discriminator

    def generator_loss(
        self,
        logits_l: torch.Tensor,
        valid_l: torch.Tensor,
        logits_u: torch.Tensor,
        valid_u: torch.Tensor,
        step: int,
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """The adversarial and self-taught terms of the network's loss (D's judgement in it)."""
        cfg = self.config.adversarial
        d = self._d()
        prob_l = torch.sigmoid(logits_l.float())
        prob_u = torch.sigmoid(logits_u.float())
        d_l = d(two_channel(prob_l))
        d_u = d(two_channel(prob_u))
        ones_l, ones_u = torch.ones_like(d_l), torch.ones_like(d_u)
        adv_l = masked_mean(
            F.binary_cross_entropy_with_logits(d_l, ones_l, reduction="none"), valid_l
        )
        adv_u = masked_mean(
            F.binary_cross_entropy_with_logits(d_u, ones_u, reduction="none"), valid_u
        )
        loss = cfg.lambda_adv * adv_l + cfg.lambda_adv_unlabelled * adv_u
        logs = {"adv_l": float(adv_l.detach()), "adv_u": float(adv_u.detach())}
        if step >= cfg.semi_start and cfg.lambda_semi > 0:
            trust = (torch.sigmoid(d_u.detach()) > cfg.semi_threshold).float() * valid_u
            target = (prob_u.detach() > 0.5).float()
            semi_px = F.binary_cross_entropy_with_logits(logits_u.float(), target, reduction="none")
            semi = masked_mean(semi_px, trust)
            loss = loss + cfg.lambda_semi * semi
            logs["semi"] = float(semi.detach())
            logs["trusted"] = float(trust.mean())
        return loss, logs

    def loss(
        self,
        net: NormalizedNet,
        labelled: Batch,
        unlabelled: Batch | None,
        step: int,
        generator: torch.Generator,
    ) -> StepResult:
        """Supervised BCE + D's judgement on labelled and unlabelled predictions + self-taught."""
        sup, heads_l, batch_l = self.supervised_part(net, labelled, generator)
        weak = weak_augment(self.unlabelled_batch(unlabelled), generator)
        heads_u = net.forward_heads(weak["image"], self.heads("logits"))
        valid_u = weak.get("valid", torch.ones_like(heads_u["logits"]))
        self.records.append((heads_u, weak))
        gen, logs = self.generator_loss(
            heads_l["logits"], batch_l["valid"], heads_u["logits"], valid_u, step
        )
        self._pending = (
            torch.sigmoid(heads_l["logits"].detach().float()),
            batch_l["mask"].float(),
            batch_l["valid"].float(),
            torch.sigmoid(heads_u["logits"].detach().float()),
        )
        logs["sup"] = float(sup.detach())
        return StepResult(sup + gen, logs)

    def discriminator_loss(
        self,
        prob_l: torch.Tensor,
        mask_l: torch.Tensor,
        valid_l: torch.Tensor,
        prob_u: torch.Tensor,
    ) -> torch.Tensor:
        """D learns: one-hot truth -> 1, predictions (labelled and unlabelled) -> 0."""
        d = self._d()
        bce = F.binary_cross_entropy_with_logits
        d_true = d(two_channel(mask_l))
        d_fake_l = d(two_channel(prob_l))
        d_fake_u = d(two_channel(prob_u))
        real = masked_mean(bce(d_true, torch.ones_like(d_true), reduction="none"), valid_l)
        fake_l = masked_mean(bce(d_fake_l, torch.zeros_like(d_fake_l), reduction="none"), valid_l)
        fake_u = bce(d_fake_u, torch.zeros_like(d_fake_u))
        return real + fake_l + fake_u

    def after_step(self, net: NormalizedNet, step: int, total_steps: int) -> None:
        """One optimiser step of the discriminator on this step's (detached) predictions."""
        if self._pending is None or self.d_optimizer is None:
            return
        self.d_optimizer.zero_grad(set_to_none=True)
        loss = self.discriminator_loss(*self._pending)
        loss.backward()  # type: ignore[no-untyped-call]
        self.d_optimizer.step()
        self._pending = None

    def state_dict(self) -> dict[str, Any]:
        """Discriminator weights and optimiser state."""
        if self.discriminator is None or self.d_optimizer is None:
            return {}
        return {
            "discriminator": self.discriminator.state_dict(),
            "d_optimizer": self.d_optimizer.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore discriminator and optimiser."""
        self._d().load_state_dict(state["discriminator"])
        if self.d_optimizer is not None:
            self.d_optimizer.load_state_dict(state["d_optimizer"])
