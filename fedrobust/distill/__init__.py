"""Teacher -> student knowledge distillation (Hinton et al. 2015), optionally adversarial."""

from fedrobust.distill.loss import distillation_loss, soft_kl
from fedrobust.distill.run import DISTILL_DIR, STUDENT_FILE, distill, distill_run

__all__ = ["DISTILL_DIR", "STUDENT_FILE", "distill", "distill_run", "distillation_loss", "soft_kl"]
