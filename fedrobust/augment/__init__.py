"""Training-time augmentation: adversarial (FGSM / inverse FGSM / PGD) and classic transforms."""

from fedrobust.augment.adversarial import AdversarialPolicy, AugmentedBatch
from fedrobust.augment.classic import ClassicAugment

__all__ = ["AdversarialPolicy", "AugmentedBatch", "ClassicAugment"]
