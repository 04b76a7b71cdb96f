"""The distillation objective of Hinton et al. (2015), also the defensive distillation loss of
Papernot et al. (2016) used in the reference paper."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from fedrobust.attacks.gradient import Loss, loss_fn


def soft_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """KL(teacher || student) between temperature-softened distributions, times T^2.

    The T^2 factor keeps the soft term's gradient magnitude independent of T, so ``alpha`` means
    the same thing at every temperature.
    """
    t = temperature
    if student_logits.shape[1] == 1:  # one logit (a binary head, a mask's pixels): a Bernoulli per output
        # (softmax over one logit is always 1, so its KL would vanish)
        p_teacher = torch.sigmoid(teacher_logits / t)
        cross = F.binary_cross_entropy_with_logits(student_logits / t, p_teacher, reduction="mean")
        entropy = F.binary_cross_entropy_with_logits(teacher_logits / t, p_teacher, reduction="mean")
        return (cross - entropy) * (t * t)
    log_p_student = F.log_softmax(student_logits / t, dim=1)
    log_p_teacher = F.log_softmax(teacher_logits / t, dim=1)
    return F.kl_div(log_p_student, log_p_teacher, log_target=True, reduction="batchmean") * (t * t)


def distillation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor,
                      temperature: float, alpha: float, loss: Loss = "ce") -> torch.Tensor:
    """``alpha * L(student, labels) + (1 - alpha) * T^2 * KL(teacher_T || student_T)``; ``L`` is the task's
    training loss (cross-entropy for classes, Dice + BCE for masks), the KL per pixel for masks."""
    hard = loss_fn(loss)(student_logits, labels) if alpha > 0 else student_logits.new_zeros(())
    soft = soft_kl(student_logits, teacher_logits.detach(), temperature) if alpha < 1 else hard.new_zeros(())
    return alpha * hard + (1 - alpha) * soft
