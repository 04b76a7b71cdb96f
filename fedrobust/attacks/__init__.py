"""White-box attacks in pixel units on [0, 1] (torchattacks-style: one small function each).

Every attack returns ``x_adv`` with ``x_adv`` in [0, 1] and ``|x_adv - x|_inf <= eps``; it leaves
the model's parameter gradients and BatchNorm running statistics untouched.
"""

from fedrobust.attacks.fgsm import fgsm, invfgsm
from fedrobust.attacks.gradient import classification_loss, input_gradient
from fedrobust.attacks.noise import sign_noise, uniform_noise
from fedrobust.attacks.pgd import pgd
from fedrobust.attacks.square import onnx_logits_fn, square_attack, torch_logits_fn

__all__ = ["classification_loss", "fgsm", "input_gradient", "invfgsm", "onnx_logits_fn", "pgd",
           "sign_noise", "square_attack", "torch_logits_fn", "uniform_noise"]
