"""The server's side of a federation, Flower-free: the global model's evaluation every round,
per-round checkpoints, metrics.jsonl, resume, and the final summary."""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import torch

from fedrobust.config import ExperimentConfig
from fedrobust.device import cpu_state
from fedrobust.errors import FedrobustError
from fedrobust.federated.adversary import malicious_partitions, with_trigger
from fedrobust.models import count_parameters
from fedrobust.models.from_config import model_for
from fedrobust.predict import torch_logits
from fedrobust.rundir import RunDir
from fedrobust.selection import selection_score
from fedrobust.tasks.base import Task
from fedrobust.tasks.registry import task_for
from fedrobust.train.batchnorm import recalibrate_batchnorm
from fedrobust.train.evaluate import adversarial_images, evaluate, evaluate_robust
from fedrobust.train.local import make_optimizer, train_epoch

StateDict = dict[str, torch.Tensor]
CHECKPOINTS = "checkpoints"


def is_finite_state(state: dict[str, Any]) -> bool:
    """True if every floating-point tensor/array of an update is free of NaN and Inf."""
    for value in state.values():
        t = torch.as_tensor(value)
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            return False
    return True


class FederatedRun:
    """Owns the run directory and the global model's evaluation for a federated run."""

    def __init__(self, cfg: ExperimentConfig) -> None:
        self.cfg = cfg
        self.task = task_for(cfg)
        self.run = RunDir.open(Path(cfg.run.dir), cfg) if cfg.run.dir else RunDir.create(cfg)
        self.test = self.task.load(cfg.data, "test")
        self.model = model_for(cfg)
        select = cfg.federation.select
        needs_val = select != "last" or cfg.federation.bn_recalibration == "val" or cfg.federation.strategy == "fltrust"
        self.val = self.task.load(cfg.data, "val") if needs_val else None
        self.started = time.perf_counter()

    # state ------------------------------------------------------------------------------------
    @property
    def best_path(self) -> Path:
        return self.run.path / CHECKPOINTS / "best.pt"

    def latest_checkpoint(self) -> Path | None:
        found = sorted((self.run.path / CHECKPOINTS).glob("round_*.pt"))
        return found[-1] if found else None

    def initial_state(self) -> tuple[int, StateDict, dict[str, Any]]:
        """(last completed round, global weights, strategy state): fresh, or from the newest checkpoint."""
        ckpt = self.latest_checkpoint()
        if ckpt is None:
            torch.manual_seed(self.cfg.run.seed)
            fresh = model_for(self.cfg)
            return 0, cpu_state(fresh), {}
        saved = torch.load(ckpt, map_location="cpu", weights_only=False)
        done = int(saved["round"])
        # drop metric lines of rounds after the checkpoint (an interrupted round is redone)
        lines = [r for r in self.run.metrics() if r.get("round", 0) <= done]
        self.run.rewrite_metrics(lines)
        return done, saved["model"], saved.get("strategy", {})

    # per round ---------------------------------------------------------------------------------
    def recalibrate(self, state: StateDict) -> StateDict:
        """The aggregated weights with BatchNorm statistics re-estimated on the server's val split
        (``federation.bn_recalibration = "val"``); otherwise ``state`` unchanged."""
        if self.cfg.federation.bn_recalibration != "val" or self.val is None:
            return state
        self.model.load_state_dict(state)
        recalibrate_batchnorm(self.model, self.val.images, self.cfg.eval.batch_size)
        return cpu_state(self.model)

    def trusted_update(self, state: StateDict, server_round: int) -> StateDict:
        """FLTrust's root of trust: the weights after the clients' local recipe (epochs, optimizer, no attack,
        no augmentation) on the server's own clean val split, seeded per round."""
        assert self.val is not None
        torch.manual_seed(self.cfg.run.seed + 104_729 * server_round)
        self.model.load_state_dict(state)
        optimizer = make_optimizer(self.model, self.cfg.train)
        generator = torch.Generator().manual_seed(self.cfg.run.seed + server_round)
        for epoch in range(self.cfg.federation.local_epochs):
            train_epoch(self.model, self.val.images, self.val.targets, optimizer, self.cfg.train, epoch=epoch,
                        generator=generator, task=self.task)
        return cpu_state(self.model)

    def evaluate(self, state: StateDict) -> dict[str, float]:
        """The task's metrics and loss on test, clean and under FGSM at ``federation.eval_eps`` (``fgsm_*``),
        and on val (``val_*``) when the server selects or recalibrates on it."""
        self.model.load_state_dict(state)
        bs, task, metrics = self.cfg.eval.batch_size, self.task, self.task.spec.metrics
        out = evaluate(self.model, self.test, bs, task=task)
        eps = self.cfg.federation.eval_eps
        adv = evaluate(self.model, self.test, bs, x=adversarial_images(self.model, self.test, eps, bs, task=task),
                       task=task)
        out.update({"fgsm_eps": eps, **{f"fgsm_{k}": adv[k] for k in metrics}})
        if self.cfg.adversary.kind == "backdoor":
            out["backdoor_asr"] = self.backdoor_success()
        if self.val is not None:  # the server's own split, for model selection (test never selects)
            val = evaluate(self.model, self.val, bs, task=task)
            out.update({f"val_{k}": val[k] for k in metrics})
            if self.cfg.federation.select == "val_fgsm":  # an attack on val every round only when it selects
                x = adversarial_images(self.model, self.val, eps, bs, task=task)
                out[f"val_fgsm_{task.headline}"] = evaluate(self.model, self.val, bs, x=x, task=task)[task.headline]
        return out

    def backdoor_success(self) -> float:
        """Attack success rate of ``adversary.kind = "backdoor"`` on the triggered test split, current model."""
        a = self.cfg.adversary
        logits = torch_logits(self.model, with_trigger(self.test.images, a.trigger_size), self.cfg.eval.batch_size)
        return self.task.backdoor_success(logits, self.test.targets, a.target_class)

    def end_round(self, server_round: int, state: StateDict, strategy_state: dict[str, Any],
                  record: dict[str, Any]) -> None:
        """Log the round, then checkpoint it (a crash between the two redoes the round on resume)."""
        self.run.log({"round": server_round, **record, "time": time.time()})
        self.run.save_checkpoint(f"{CHECKPOINTS}/round_{server_round:04d}.pt",
                                 {"round": server_round, "model": state, "strategy": strategy_state})
        select = self.cfg.federation.select
        if select != "last":
            score = selection_score(select, record.get("server", {}), server_round, prefix="val_",
                                    headline=self.task.headline)
            best = torch.load(self.best_path, weights_only=False)["score"] if self.best_path.exists() else -math.inf
            if score > best:
                self.run.save_checkpoint(f"{CHECKPOINTS}/best.pt",
                                         {"round": server_round, "model": state, "score": score})
        old = sorted((self.run.path / CHECKPOINTS).glob("round_*.pt"))[: -self.cfg.federation.keep_checkpoints]
        for path in old:
            path.unlink(missing_ok=True)
        stop = self.cfg.faults.stop_after_round
        if stop and server_round == stop and server_round < self.cfg.federation.rounds:
            raise FedrobustError(f"stopping after round {server_round} on purpose ([faults] stop_after_round)")

    def finish(self, state: StateDict) -> dict[str, Any]:
        """Final global model: model.pt, test metrics at every eval eps, summary.json."""
        cfg = self.cfg
        selected = cfg.federation.rounds
        if cfg.federation.select != "last" and self.best_path.exists():
            best = torch.load(self.best_path, weights_only=False)
            state, selected = best["model"], int(best["round"])
        self.model.load_state_dict(state)
        self.run.save_checkpoint("model.pt", {"model": state, "model_name": cfg.model.name,
                                              "config": cfg.to_dict(), "round": selected})
        test = evaluate(self.model, self.test, cfg.eval.batch_size, task=self.task)
        robust = evaluate_robust(self.model, self.test, cfg.eval.fgsm_eps, cfg.eval.batch_size, task=self.task)
        rounds = [r for r in self.run.metrics() if r.get("round", 0) >= 1]
        summary = {
            "kind": "federated",
            "dataset": cfg.data.dataset,
            "task": self.task.name,
            "model": cfg.model.name,
            "parameters": count_parameters(self.model),
            "strategy": cfg.federation.strategy,
            "clients": cfg.partition.num_clients,
            "partition": cfg.partition.scheme,
            "rounds": cfg.federation.rounds,
            "selection": cfg.federation.select,
            "selected_round": selected,
            "augment": cfg.augment.mode,
            "failures": sum(r.get("failures", 0) for r in rounds),
            "rejected_nonfinite": sum(r.get("rejected_nonfinite", 0) for r in rounds),
            "missing": sum(r.get("missing", 0) for r in rounds),
            "seconds": time.perf_counter() - self.started,
            "test": test,
            "test_fgsm": robust,
        }
        if cfg.adversary.kind != "none":
            summary["adversary"] = {"kind": cfg.adversary.kind, "malicious": sorted(malicious_partitions(cfg))}
            if cfg.adversary.kind == "backdoor":
                summary["adversary"]["backdoor_asr"] = self.backdoor_success()
        self.run.write_summary(summary)
        return summary


def describe_round(server_round: int, total: int, record: dict[str, Any], task: Task) -> str:
    """One human line per round."""
    s = record.get("server", {})
    c = record.get("clients", {})
    extra = ""
    if record.get("failures") or record.get("rejected_nonfinite") or record.get("missing"):
        extra = f"  failures {record.get('failures', 0)} rejected {record.get('rejected_nonfinite', 0)}"
        if record.get("missing"):
            extra += f" silent {record['missing']}"
    loss = c.get("train-loss", math.nan)
    return (f"round {server_round:3d}/{total}  clients {record.get('replies', 0)}/{record.get('sampled', 0)}  "
            f"train loss {loss:.4f}  test {task.describe(s)}  "
            f"FGSM@{s.get('fgsm_eps', 0):g} {s.get('fgsm_' + task.headline, math.nan):.3f}  "
            f"({record.get('seconds', 0):.1f}s)"
            + extra)
