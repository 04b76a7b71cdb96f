"""fedrobust's own attacks in pixel units on [0, 1] (torchattacks-style: one small function each), what
training needs; the evaluation ensemble (APGD, Square) comes from ART through ``library.py``.

Every attack returns ``x_adv`` with ``x_adv`` in [0, 1] and ``|x_adv - x|_inf <= eps``; it leaves
the model's parameter gradients and BatchNorm running statistics untouched.
"""

from fedrobust.attacks.fgsm import fgsm, invfgsm
from fedrobust.attacks.gradient import classification_loss, input_gradient
from fedrobust.attacks.noise import sign_noise, uniform_noise
from fedrobust.attacks.pgd import pgd

__all__ = ["classification_loss", "fgsm", "input_gradient", "invfgsm", "pgd",
           "sign_noise", "uniform_noise"]
