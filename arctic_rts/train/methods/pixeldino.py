"""PixelDINO (Heidler et al. 2024): pixel-wise self-distillation with a mean teacher.

Per step, on an unlabelled batch ``x`` (weakly augmented):

1. teacher probabilities ``P_t = softmax((g_t(x) - c) / tau_t)`` over the K pseudo-classes of the
   DINO head, without gradient (eq. 1);
2. ONE strong transform ``T`` is sampled; the student sees ``T(x)`` (geometry + photometry) and
   the teacher's labels are moved by the same geometry, bilinearly: ``T(P_t)`` (the reference
   code warps them with different transforms; here they share the sampling grid);
3. student ``log P_s = log_softmax(g_s(T(x)) / tau_s)`` (eq. 2);
4. ``L_dino = - sum_k T(P_t)_k log P_s,k`` averaged over the pixels inside the image (eq. 3) and
   ``L = L_sup + beta * L_dino`` (eq. 4).

The log carries two entropies of the teacher's targets (nats): per pixel (``teacher_entropy``)
and of their mean over the batch (``teacher_marginal_entropy``). Both near ``ln K`` mean the
targets are close to uniform and carry little signal; both near 0 mean collapse onto one class.

After the optimiser step the teacher follows the student, ``theta_t <- m theta_t + (1 - m) theta_s``
with ``m`` rising from ``teacher_momentum`` to 1 along a cosine, and the centre follows the
teacher's mean output over batch, H and W: ``c <- m_c c + (1 - m_c) mean(g_t(x))``.
"""

from __future__ import annotations

import copy
import math
from dataclasses import asdict
from typing import Any

import torch
import torch.nn.functional as F

from arctic_rts.train.augment import Batch, strong_augment_with_grid, warp, weak_augment
from arctic_rts.train.methods.base import Method, NormalizedNet, StepResult, masked_mean


def teacher_momentum(step: int, total_steps: int, start: float) -> float:
    """Cosine schedule of the teacher EMA momentum: ``start`` at step 0, 1 at ``total_steps``."""
    progress = min(max(step / max(total_steps, 1), 0.0), 1.0)
    return 1.0 - (1.0 - start) * (math.cos(math.pi * progress) + 1.0) / 2.0


def _entropy(p: torch.Tensor, dim: int = 1) -> torch.Tensor:
    """Entropy in nats of probabilities ``p`` along ``dim`` (0 log 0 counted as 0)."""
    return -(p * torch.log(p.clamp_min(1e-12))).sum(dim=dim)


class PixelDINO(Method):
    """The PixelDINO method; state: teacher network and centre."""

    name = "pixeldino"
    uses_unlabelled = True

    def __init__(self, config: Any) -> None:
        super().__init__(config)
        self.teacher: NormalizedNet | None = None
        self.centre: torch.Tensor | None = None
        self._batch_centre: torch.Tensor | None = None
        self._entropies: dict[str, float] = {}

    def model_heads(self) -> dict[str, Any]:
        """A DINO head with K pseudo-classes."""
        return {"dino_classes": self.config.pixeldino.classes}

    def hyperparameters(self) -> dict[str, Any]:
        """PixelDINO's section of the config plus the augmentation ranges."""
        return {"pixeldino": asdict(self.config.pixeldino), "augment": asdict(self.config.augment)}

    def setup(self, net: NormalizedNet) -> None:
        """The teacher starts as a copy of the student; the centre at zero."""
        self.teacher = copy.deepcopy(net)
        for p in self.teacher.parameters():
            p.requires_grad_(False)
        k = self.config.pixeldino.classes
        self.centre = torch.zeros(1, k, 1, 1, device=net.device)

    def teacher_probabilities(self, x: torch.Tensor, entropies: bool = True) -> torch.Tensor:
        """Eq. (1): centred, sharpened teacher probabilities (N, K, H, W), summing to 1 over K.

        Also remembers the batch mean of the raw teacher output for the centre update and, with
        ``entropies``, the targets' entropies for the log.
        """
        if self.teacher is None or self.centre is None:
            raise RuntimeError("PixelDINO.setup(net) must run before the first step.")
        cfg = self.config.pixeldino
        with torch.no_grad():
            out = self.teacher.forward_dino(x).float()
            self._batch_centre = out.mean(dim=(0, 2, 3), keepdim=True)
            # in place: the raw output is not needed again
            probs = F.softmax(out.sub_(self.centre).div_(cfg.teacher_temperature), dim=1)
            self._entropies = {}
            if entropies:
                self._entropies = {
                    "teacher_entropy": float(_entropy(probs).mean()),
                    "teacher_marginal_entropy": float(_entropy(probs.mean(dim=(0, 2, 3)), dim=0)),
                }
            return probs

    def dino_loss(
        self,
        net: NormalizedNet,
        unlabelled: Batch,
        generator: torch.Generator,
        entropies: bool = True,
    ) -> torch.Tensor:
        """Eqs. (1)-(3) on one unlabelled batch; the teacher runs only up to its DINO head
        (``entropies``: as in :meth:`teacher_probabilities`)."""
        cfg = self.config.pixeldino
        weak = weak_augment(unlabelled, generator)
        p_teacher = self.teacher_probabilities(weak["image"], entropies)
        strong, grid = strong_augment_with_grid(weak, generator, self.config.augment)
        target = warp(p_teacher, grid)
        heads = net.forward_heads(strong["image"], self.heads("dino"))
        self.records.append((heads, strong))
        log_student = F.log_softmax(heads["dino"].float() / cfg.student_temperature, dim=1)
        cross_entropy = -(target * log_student).sum(dim=1, keepdim=True)
        return masked_mean(cross_entropy, strong["valid"])

    def loss(
        self,
        net: NormalizedNet,
        labelled: Batch,
        unlabelled: Batch | None,
        step: int,
        generator: torch.Generator,
    ) -> StepResult:
        """Eq. (4): supervised BCE + beta * PixelDINO loss."""
        sup, _, _ = self.supervised_part(net, labelled, generator)
        logged = self.config.logs_step(step + 1)  # entropies only where the log keeps them
        dino = self.dino_loss(net, self.unlabelled_batch(unlabelled), generator, logged)
        total = sup + self.config.pixeldino.beta * dino
        logs = {"sup": float(sup.detach()), "dino": float(dino.detach()), **self._entropies}
        return StepResult(total, logs)

    def after_step(self, net: NormalizedNet, step: int, total_steps: int) -> None:
        """EMA updates of the teacher (cosine momentum) and of the centre."""
        if self.teacher is None or self.centre is None:
            raise RuntimeError("PixelDINO.setup(net) must run before the first step.")
        m = teacher_momentum(step, total_steps, self.config.pixeldino.teacher_momentum)
        with torch.no_grad():
            for pt, ps in zip(self.teacher.parameters(), net.parameters(), strict=True):
                pt.mul_(m).add_(ps.detach(), alpha=1.0 - m)
            if self._batch_centre is not None:
                mc = self.config.pixeldino.centre_momentum
                self.centre.mul_(mc).add_(self._batch_centre, alpha=1.0 - mc)
                self._batch_centre = None

    def state_dict(self) -> dict[str, Any]:
        """Teacher weights and centre."""
        if self.teacher is None or self.centre is None:
            return {}
        return {"teacher": self.teacher.state_dict(), "centre": self.centre.clone()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore teacher and centre."""
        if self.teacher is None or self.centre is None:
            raise RuntimeError("PixelDINO.setup(net) must run before loading its state.")
        self.teacher.load_state_dict(state["teacher"])
        self.centre.copy_(state["centre"])
