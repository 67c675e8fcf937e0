"""Knowledge distillation (Hinton et al. 2015): a student learns from a trained teacher's softened outputs."""
from __future__ import annotations

import torch
from torch.nn import functional as F


def distillation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor,
                      temperature: float, weight: float, label_loss: torch.nn.Module) -> torch.Tensor:
    """``(1 - weight) * label_loss(student, labels) + weight * T^2 * KL(teacher_T || student_T)``, the softened
    distributions at temperature ``T`` (the ``T^2`` keeps the soft term's gradients on the label term's scale)."""
    soft = F.kl_div(F.log_softmax(student_logits.float() / temperature, 1), F.softmax(teacher_logits.float() / temperature, 1),
                    reduction="batchmean") * temperature**2
    return (1 - weight) * label_loss(student_logits, labels) + weight * soft


__all__ = ["distillation_loss"]
