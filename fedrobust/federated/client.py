"""One hospital: its shard of the training split and its local (adversarially augmented) update."""

from __future__ import annotations

import dataclasses
import functools
import time
from typing import Any

import numpy as np
import torch

from fedrobust.augment import AdversarialPolicy
from fedrobust.config import DataSection, ExperimentConfig, ModelSection, PartitionSection, RunSection
from fedrobust.device import cpu_state
from fedrobust.errors import FedrobustError
from fedrobust.federated.adversary import DATA_KINDS, MODEL_KINDS, attacks_now, poison_update, poisoned_data
from fedrobust.federated.plan import alt_partitions, local_seed
from fedrobust.models.from_config import model_for
from fedrobust.tasks.base import Split
from fedrobust.tasks.registry import task_for, task_of
from fedrobust.train.evaluate import evaluate
from fedrobust.train.local import make_optimizer, train_epoch

StateDict = dict[str, torch.Tensor]


class InjectedFault(FedrobustError):
    """Raised on purpose by ``[faults] fail_partitions`` to exercise failure handling."""


@functools.lru_cache(maxsize=4)
def _cached_split(data: tuple, split: str) -> Split:
    """Simulation reuses worker processes for many virtual clients: load each split once.

    ``data`` is ``dataclasses.astuple`` of the ``[data]`` section (hashable cache key).
    """
    d = DataSection(*data)
    return task_of(d.task).load(d, split)


@functools.lru_cache(maxsize=16)
def _cached_partition(data: tuple, split: str, partition: tuple, seed: int) -> tuple[np.ndarray, ...]:
    d = DataSection(*data)
    return tuple(task_of(d.task).partition(_cached_split(data, split), PartitionSection(*partition), seed))


@functools.lru_cache(maxsize=4)
def _cached_own_split(path: str, data: tuple, split: str) -> Split:
    d = DataSection(*data)
    return task_of(d.task).load_file(path, d, split)


def _fresh_model(model: tuple, data: tuple, device: str) -> torch.nn.Module:
    """The federation's architecture without local weights: a client always starts from the server's."""
    return model_for(ExperimentConfig(run=RunSection(device=device), model=ModelSection(*model),
                                      data=DataSection(*data)), pretrained=False)


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
        self.task = task_for(cfg)

    # data ---------------------------------------------------------------------------------------
    def _data_key(self) -> tuple:
        return dataclasses.astuple(self.cfg.data)

    def train_data(self) -> Split:
        if self.data_file:
            return _cached_own_split(self.data_file, self._data_key(), "train")
        p = dataclasses.replace(self.cfg.partition, num_clients=self.num_partitions)
        parts = _cached_partition(self._data_key(), "train", dataclasses.astuple(p), self.cfg.run.seed)
        return _cached_split(self._data_key(), "train").subset(parts[self.partition_id])

    def test_data(self) -> Split:
        """This client's IID share of the test split, for client-side evaluation (a node with its
        own file evaluates on that file's test split)."""
        if self.data_file:
            return _cached_own_split(self.data_file, self._data_key(), "test")
        iid = PartitionSection(scheme="iid", num_clients=self.num_partitions, alpha=1.0, labels_per_client=1,
                               min_samples=1)
        parts = _cached_partition(self._data_key(), "test", dataclasses.astuple(iid), self.cfg.run.seed)
        return _cached_split(self._data_key(), "test").subset(parts[self.partition_id])

    def _whole_train(self) -> Split:
        """The training split this client's shard comes from (the split every client reads to
        partition it), or the node's own file."""
        return (_cached_own_split(self.data_file, self._data_key(), "train") if self.data_file
                else _cached_split(self._data_key(), "train"))

    def class_weight(self) -> torch.Tensor | None:
        """``train.class_weights`` from the whole training split, so all clients weight alike."""
        if self.cfg.train.class_weights == "none":
            return None
        return self.task.class_weight(self.cfg.train, self._whole_train())

    def trained_model(self, model: torch.nn.Module) -> torch.nn.Module:
        """``model`` as this client trains it (``train.logit_adjustment``). A node with its own file has no view
        of the federation's prior and trains on plain logits."""
        if self.data_file:
            return model
        return self.task.adjusted(model, self.cfg.train, self.train_data(), self._whole_train())

    def _model_key(self) -> tuple:
        return dataclasses.astuple(self.cfg.model), self._data_key(), self.cfg.run.device

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
        malicious = attacks_now(cfg, self.partition_id, server_round)
        model = self._work_model(state)
        images, targets = data.images, data.targets
        if malicious and cfg.adversary.kind in DATA_KINDS:
            images, targets = poisoned_data(cfg.adversary, self.task, model, data,
                                            torch.Generator().manual_seed(seed + 3))
        anchor = [p.detach().clone() for p in model.parameters()] if proximal_mu > 0 else None
        optimizer = make_optimizer(model, cfg.train)
        aug = cfg.alt_augment if self.uses_alt_policy else cfg.augment
        policy = AdversarialPolicy(aug, torch.Generator().manual_seed(seed + 1), self.task.loss)
        classic = self.task.classic(aug.classic, aug, cfg.data.image_size)
        generator = torch.Generator().manual_seed(seed)
        weight = self.class_weight()
        trained = self.trained_model(model)
        stats = []
        for epoch in range(cfg.federation.local_epochs):
            # warm-up counts rounds: a client's adversarial augmentation starts after
            # `warmup_epochs` of federated training (local epochs x rounds).
            global_epoch = (server_round - 1) * cfg.federation.local_epochs + epoch
            stats.append(train_epoch(trained, images, targets, optimizer, cfg.train, policy, classic,
                                     global_epoch, generator, proximal_mu=proximal_mu, anchor=anchor,
                                     class_weight=weight, task=self.task))
        new_state = cpu_state(model)
        if malicious and cfg.adversary.kind in MODEL_KINDS:
            new_state = poison_update(cfg.adversary, new_state, state, torch.Generator().manual_seed(seed + 2))
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
            "malicious": int(malicious),
        }
        return new_state, metrics

    def evaluate(self, state: StateDict) -> dict[str, Any]:
        """Global model on this client's share of the test split."""
        data = self.test_data()
        model = self._work_model(state)
        m = evaluate(model, data, self.cfg.eval.batch_size, task=self.task)
        return {"num-examples": len(data), f"client-test-{self.task.headline}": m[self.task.headline],
                "client-test-loss": m["loss"]}
