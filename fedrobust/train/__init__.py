"""Training and evaluation shared by centralized runs and federated clients."""

from fedrobust.train.evaluate import evaluate, evaluate_robust
from fedrobust.train.local import EpochStats, make_optimizer, train_epoch

__all__ = ["EpochStats", "evaluate", "evaluate_robust", "make_optimizer", "train_epoch"]
