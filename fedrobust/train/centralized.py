"""Centralized training: the non-federated baseline every federated number is compared to."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any

import torch

from fedrobust.augment import AdversarialPolicy
from fedrobust.config import ExperimentConfig
from fedrobust.device import resolve_device
from fedrobust.models import count_parameters
from fedrobust.models.from_config import model_for
from fedrobust.pipeline import after_training
from fedrobust.progress import progress_bar
from fedrobust.rundir import RunDir
from fedrobust.seeding import seed_everything
from fedrobust.selection import KeepBest
from fedrobust.tasks.registry import task_for
from fedrobust.train.evaluate import adversarial_images, evaluate, evaluate_robust
from fedrobust.train.local import class_weights, make_optimizer, train_epoch


def run_centralized(cfg: ExperimentConfig, log: Callable[[str], Any] = print) -> RunDir:
    """Train on the train split, select on val, report on test; returns the run directory."""
    resolve_device(cfg.run.device)  # a device this machine lacks fails before any data is read
    generator = seed_everything(cfg.run.seed, cfg.run.threads)
    task = task_for(cfg)
    train, val, test = (task.load(cfg.data, s) for s in ("train", "val", "test"))
    model = model_for(cfg)
    optimizer = make_optimizer(model, cfg.train)
    scheduler = (torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, cfg.train.epochs)
                 if cfg.train.scheduler == "cosine" else None)
    policy = AdversarialPolicy(cfg.augment, torch.Generator().manual_seed(cfg.run.seed + 1), task.loss)
    a = cfg.augment
    classic = task.classic(a.classic, a, cfg.data.image_size)
    weights = class_weights(cfg.train, train.targets, task.input_shape(cfg.data)[1])
    run = RunDir.create(cfg)
    with run.lock("fedrobust train"):  # one writer: a second command on this folder is refused
        log(f"run {run.path}: {cfg.model.name} ({count_parameters(model):,} params) on {cfg.data.dataset} "
            f"train/val/test {len(train)}/{len(val)}/{len(test)}, augment={a.mode}")

        best = KeepBest(cfg.train.select)
        started = time.perf_counter()
        for epoch in range(cfg.train.epochs):
            with progress_bar(total=len(train), desc=f"epoch {epoch + 1}/{cfg.train.epochs}") as bar:
                stats = train_epoch(model, train.images, train.targets, optimizer, cfg.train, policy,
                                    classic, epoch, generator, progress=bar, class_weight=weights, task=task)
            lr = optimizer.param_groups[0]["lr"]
            if scheduler is not None:
                scheduler.step()
            val_m = evaluate(model, val, cfg.eval.batch_size, task=task)
            # the learning curve on test too (as the reference papers plot it); test never selects
            eps = cfg.federation.eval_eps
            test_adv = adversarial_images(model, test, eps, cfg.eval.batch_size, task=task)
            curve = {"test": evaluate(model, test, cfg.eval.batch_size, task=task),
                     "test_fgsm": {"eps": eps, **evaluate(model, test, cfg.eval.batch_size, x=test_adv, task=task)}}
            run.log({"epoch": epoch + 1, "lr": lr, "train": stats.to_dict(), "val": val_m, **curve})
            log(f"epoch {epoch + 1:3d}  loss {stats.loss:.4f}  adv {stats.adv_share:.2f}  "
                f"val {task.describe(val_m)}  ({stats.seconds:.1f}s)")
            best.offer(epoch + 1, val_m, model)
        run.save_checkpoint("last.pt", {"model": model.state_dict(), "epoch": cfg.train.epochs})
        best.restore(model)
        best_epoch = best.step
        run.save_checkpoint("model.pt", {"model": model.state_dict(), "epoch": best_epoch,
                                         "model_name": cfg.model.name, "config": cfg.to_dict()})
        test_m = evaluate(model, test, cfg.eval.batch_size, task=task)
        robust = evaluate_robust(model, test, cfg.eval.fgsm_eps, cfg.eval.batch_size, task=task)
        summary = {
            "kind": "centralized",
            "dataset": cfg.data.dataset,
            "task": task.name,
            "model": cfg.model.name,
            "parameters": count_parameters(model),
            "augment": cfg.augment.mode,
            "selected_epoch": best_epoch,
            "selection": cfg.train.select,
            "train_seconds": time.perf_counter() - started,
            "test": test_m,
            "test_fgsm": robust,
        }
        run.write_summary(summary)
        h = task.headline
        fg = "  ".join(f"{e}:{m[h]:.3f}" for e, m in robust.items())
        log(f"test {task.describe(test_m)}  (epoch {best_epoch}, by {cfg.train.select})")
        if fg:
            log(f"test FGSM {h} by eps  {fg}")
        after_training(cfg, run.path, log)
        log(f"results in {run.path}")
        sys.stdout.flush()
        return run
