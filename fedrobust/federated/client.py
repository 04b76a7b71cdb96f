"""One hospital: its shard of the training split and its local (adversarially augmented) update."""

from __future__ import annotations

import dataclasses
import functools
import time
from typing import Any

import numpy as np
import torch

from fedrobust.augment import AdversarialPolicy, ClassicAugment
from fedrobust.config import DataSection, ExperimentConfig, ModelSection
from fedrobust.data.loading import ImageSplit, load_from_config, load_own_file
from fedrobust.data.partition import partition_indices
from fedrobust.errors import FedrobustError
from fedrobust.federated.plan import alt_partitions, local_seed
from fedrobust.models.from_config import model_for
from fedrobust.train.evaluate import evaluate
from fedrobust.train.local import class_weights, make_optimizer, train_epoch
from fedrobust.train.prior import OffsetLogits, prior_offset

StateDict = dict[str, torch.Tensor]


class InjectedFault(FedrobustError):
    """Raised on purpose by ``[faults] fail_partitions`` to exercise failure handling."""


@functools.lru_cache(maxsize=4)
def _cached_split(data: tuple, split: str) -> ImageSplit:
    """Simulation reuses worker processes for many virtual clients: load each split once.

    ``data`` is ``dataclasses.astuple`` of the ``[data]`` section (hashable cache key).
    """
    return load_from_config(DataSection(*data), split)


@functools.lru_cache(maxsize=16)
def _cached_partition(data: tuple, split: str, num_clients: int, scheme: str, seed: int, alpha: float,
                      labels_per_client: int, min_samples: int) -> tuple[np.ndarray, ...]:
    labels = _cached_split(data, split).labels.numpy()
    return tuple(partition_indices(labels, num_clients, scheme, seed=seed, alpha=alpha,
                                   labels_per_client=labels_per_client, min_samples=min_samples))


@functools.lru_cache(maxsize=4)
def _cached_own_split(path: str, data: tuple, split: str) -> ImageSplit:
    d = DataSection(*data)
    return load_own_file(path, d.dataset, split, image_size=d.image_size, as_rgb=d.as_rgb)


def _fresh_model(model: tuple, data: tuple) -> torch.nn.Module:
    """The federation's architecture without local weights: a client always starts from the server's."""
    return model_for(ExperimentConfig(model=ModelSection(*model), data=DataSection(*data)), pretrained=False)


_cached_model = functools.lru_cache(maxsize=2)(_fresh_model)


class LocalClient:
    """The ML of one federated client; knows nothing of Flower."""

    def __init__(self, cfg: ExperimentConfig, partition_id: int, num_partitions: int | None = None,
                 data_file: str | None = None) -> None:
        num = cfg.partition.num_clients if num_partitions is None else num_partitions
        if not 0 <= partition_id < num:
            raise FedrobustError(f"partition-id {partition_id} is outside 0..{num - 1} (num-partitions {num})")
        self.cfg = cfg
        self.partition_id = partition_id
        self.num_partitions = num
        self.uses_alt_policy = partition_id in alt_partitions(cfg)
        self.data_file = data_file  # the node's own dataset, used whole instead of a shard of the shared one

    # data ---------------------------------------------------------------------------------------
    def _data_key(self) -> tuple:
        return dataclasses.astuple(self.cfg.data)

    def train_data(self) -> ImageSplit:
        if self.data_file:
            return _cached_own_split(self.data_file, self._data_key(), "train")
        p = self.cfg.partition
        parts = _cached_partition(self._data_key(), "train", self.num_partitions, p.scheme, self.cfg.run.seed,
                                  p.alpha, p.labels_per_client, p.min_samples)
        return _cached_split(self._data_key(), "train").subset(parts[self.partition_id])

    def test_data(self) -> ImageSplit:
        """This client's IID share of the test split, for client-side evaluation (a node with its
        own file evaluates on that file's test split)."""
        if self.data_file:
            return _cached_own_split(self.data_file, self._data_key(), "test")
        parts = _cached_partition(self._data_key(), "test", self.num_partitions, "iid", self.cfg.run.seed,
                                  1.0, 1, 1)
        return _cached_split(self._data_key(), "test").subset(parts[self.partition_id])

    def _whole_train(self) -> ImageSplit:
        """The training split this client's shard comes from (the split every client reads to
        partition it), or the node's own file."""
        return (_cached_own_split(self.data_file, self._data_key(), "train") if self.data_file
                else _cached_split(self._data_key(), "train"))

    def class_weight(self) -> torch.Tensor | None:
        """``train.class_weights`` from the whole training split, so all clients weight alike."""
        split = self._whole_train()
        return class_weights(self.cfg.train, split.labels, split.info.num_classes)

    def logit_offset(self) -> torch.Tensor | None:
        """``train.logit_adjustment``: log(shard prior / whole split's prior) per class, or None. A node
        with its own file has no view of the federation's prior and trains on plain logits."""
        if self.cfg.train.logit_adjustment == "none" or self.data_file:
            return None
        split = self._whole_train()
        return prior_offset(self.train_data().labels, split.labels, split.info.num_classes)

    def _model_key(self) -> tuple:
        return dataclasses.astuple(self.cfg.model), self._data_key()

    def build_model(self) -> torch.nn.Module:
        """A fresh model of this federation's architecture."""
        return _fresh_model(*self._model_key())

    def _work_model(self, state: StateDict) -> torch.nn.Module:
        """The process-wide model instance loaded with ``state``: building a large torchvision
        model costs about as much as a small client's local epoch, so virtual clients reuse one."""
        model = _cached_model(*self._model_key())
        model.load_state_dict(state)
        return model

    def warm_up(self) -> int:
        """Load this client's shard and build the process's work model now, so that its first
        training round does only round work; returns the shard's size. The server asks every node
        once before round 1, while it evaluates the initial model."""
        data = self.train_data()
        _cached_model(*self._model_key())
        return len(data)

    # work ---------------------------------------------------------------------------------------
    def train(self, state: StateDict, server_round: int, proximal_mu: float = 0.0) -> tuple[StateDict, dict[str, Any]]:
        """Local epochs from the global ``state``; returns new weights and metrics."""
        cfg = self.cfg
        if self.partition_id in cfg.faults.fail_partitions:
            raise InjectedFault(f"partition {self.partition_id} fails on purpose ([faults] fail_partitions)")
        started = time.perf_counter()
        seed = local_seed(cfg, server_round, self.partition_id)
        torch.manual_seed(seed)
        data = self.train_data()
        model = self._work_model(state)
        anchor = [p.detach().clone() for p in model.parameters()] if proximal_mu > 0 else None
        optimizer = make_optimizer(model, cfg.train)
        aug = cfg.alt_augment if self.uses_alt_policy else cfg.augment
        policy = AdversarialPolicy(aug, torch.Generator().manual_seed(seed + 1))
        classic = ClassicAugment.of(aug.classic, aug, cfg.data.image_size)
        generator = torch.Generator().manual_seed(seed)
        weight = self.class_weight()
        offset = self.logit_offset()
        trained = OffsetLogits(model, offset) if offset is not None else model
        stats = []
        for epoch in range(cfg.federation.local_epochs):
            # warm-up counts rounds: a client's adversarial augmentation starts after
            # `warmup_epochs` of federated training (local epochs x rounds).
            global_epoch = (server_round - 1) * cfg.federation.local_epochs + epoch
            stats.append(train_epoch(trained, data.images, data.labels, optimizer, cfg.train, policy, classic,
                                     global_epoch, generator, proximal_mu=proximal_mu, anchor=anchor,
                                     class_weight=weight))
        new_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        if self.partition_id in cfg.faults.nonfinite_partitions:
            first = next(k for k, v in new_state.items() if v.is_floating_point())
            new_state[first] = torch.full_like(new_state[first], float("nan"))
        last = stats[-1]
        metrics = {
            "num-examples": len(data),
            "train-loss": float(np.mean([s.loss for s in stats])),
            "train-acc": last.accuracy,
            "adv-share": float(np.mean([s.adv_share for s in stats])),
            "optimizer-steps": sum(s.steps for s in stats),
            "seconds": time.perf_counter() - started,
        }
        return new_state, metrics

    def evaluate(self, state: StateDict) -> dict[str, Any]:
        """Global model on this client's share of the test split."""
        data = self.test_data()
        model = self._work_model(state)
        m = evaluate(model, data, self.cfg.eval.batch_size)
        return {"num-examples": len(data), "client-test-acc": m["acc"], "client-test-loss": m["loss"]}
