"""Distill a run's teacher (its final model.pt) into the compact student, on server-side data.

The server holds no client data. Its own labelled split (``val`` by default) is the transfer set;
every epoch shows the teacher fresh random views of it (``distill.classic``), so the student
learns the teacher's function, not only its labels on 78 or 524 images. Results land in
``RUN_DIR/distill/``: the student, per-epoch metrics, the settings used, and a summary comparing
student and teacher on the test split.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fedrobust.attacks import fgsm, pgd
from fedrobust.checkpoint import load_model, load_state, run_config
from fedrobust.config import DistillSection, ExperimentConfig, TrainSection
from fedrobust.device import device_of
from fedrobust.distill.loss import distillation_loss
from fedrobust.errors import FedrobustError
from fedrobust.models import count_parameters
from fedrobust.models.from_config import model_for
from fedrobust.predict import predicted, torch_logits
from fedrobust.progress import progress_bar
from fedrobust.rundir import RunDir, staged_dir
from fedrobust.seeding import seed_everything
from fedrobust.selection import KeepBest
from fedrobust.tasks.base import PairedAugment, Split, Task
from fedrobust.tasks.registry import task_for
from fedrobust.train.batches import iterate_batches
from fedrobust.train.evaluate import evaluate, evaluate_robust
from fedrobust.train.local import make_optimizer

DISTILL_DIR = "distill"
STUDENT_FILE = "student.pt"


def _adversarial_views(student: nn.Module, x: torch.Tensor, y: torch.Tensor, d: DistillSection,
                       generator: torch.Generator, task: Task) -> torch.Tensor:
    """Inputs crafted against the *student* (its weakness), for the teacher to correct."""
    if d.adversarial == "pgd":
        return pgd(student, x, y, d.adv_eps, steps=d.adv_steps, loss=task.loss, generator=generator)
    return fgsm(student, x, y, d.adv_eps, task.loss)


def distill_epoch(student: nn.Module, teacher: nn.Module, data: Split, optimizer: torch.optim.Optimizer,
                  d: DistillSection, classic: PairedAugment, generator: torch.Generator,
                  progress: Any = None, *, task: Task) -> dict[str, float]:
    """One pass over the transfer set; returns mean loss and the student's agreement with the teacher
    (share of predictions: images, or pixels of masks)."""
    student.train()
    teacher.eval()
    total, agree, seen = 0.0, 0.0, 0
    device = device_of(student)  # the teacher's too: both come from model_for
    for xb, yb in iterate_batches(data.images, data.targets, d.batch_size, shuffle=True, generator=generator,
                                  drop_last_singleton=True):
        x, yb = classic(xb, yb) if classic else (xb, yb)
        x, yb = x.to(device), yb.to(device)
        with torch.no_grad():
            t_logits = teacher(x)
        s_logits = student(x)
        loss = distillation_loss(s_logits, t_logits, yb, d.temperature, d.alpha, task.loss)
        if d.adversarial != "none":
            x_adv = _adversarial_views(student, x, yb, d, generator, task)
            with torch.no_grad():
                t_adv = teacher(x_adv)
            loss = 0.5 * (loss + distillation_loss(student(x_adv), t_adv, yb, d.temperature, d.alpha, task.loss))
        if not torch.isfinite(loss):
            raise FedrobustError(f"the distillation loss became {float(loss)}; lower distill.lr (now {d.lr:g})")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total += float(loss.detach()) * len(yb)
        agree += float((predicted(s_logits) == predicted(t_logits)).reshape(len(yb), -1).float().mean(1).sum())
        seen += len(yb)
        if progress is not None:
            progress.update(len(yb))
    return {"loss": total / max(seen, 1), "teacher_agreement": agree / max(seen, 1)}


def distill(cfg: ExperimentConfig, teacher: nn.Module, log: Callable[[str], Any] = print,
            out: Path | None = None) -> tuple[nn.Module, dict[str, Any]]:
    """Train ``cfg.distill.student`` to mimic ``teacher``; returns the student and a summary.

    With ``out``, per-epoch lines go to ``out/metrics.jsonl``.
    """
    d = cfg.distill
    task = task_for(cfg)
    generator = seed_everything(cfg.run.seed + 17, cfg.run.threads)
    transfer = task.load(cfg.data, d.data)
    val = task.load(cfg.data, "val") if d.select != "last" else None
    test = task.load(cfg.data, "test")
    student = model_for(cfg, d.student)
    optimizer = make_optimizer(student, TrainSection(lr=d.lr, optimizer=d.optimizer, weight_decay=d.weight_decay))
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, d.epochs)
    classic = task.classic(d.classic, cfg.augment, cfg.data.image_size)
    log(f"distilling {cfg.model.name} -> {d.student} ({count_parameters(student):,} params) on the "
        f"{d.data} split ({len(transfer)} images), T={d.temperature:g} alpha={d.alpha:g} "
        f"adversarial={d.adversarial}")
    best = KeepBest(d.select)
    started = time.perf_counter()
    with progress_bar(total=d.epochs * len(transfer), desc="distill") as bar:
        for epoch in range(1, d.epochs + 1):
            stats = distill_epoch(student, teacher, transfer, optimizer, d, classic, generator, bar, task=task)
            scheduler.step()
            record: dict[str, Any] = {"epoch": epoch, **stats}
            if val is not None:
                record["val"] = evaluate(student, val, cfg.eval.batch_size, task=task)
            if out is not None:
                RunDir(out).log(record)
            best.offer(epoch, record.get("val", {}), student)
    best.restore(student)
    student.eval()
    bs, eps = cfg.eval.batch_size, cfg.eval.fgsm_eps
    t_test, s_test = evaluate(teacher, test, bs, task=task), evaluate(student, test, bs, task=task)
    t_pred = predicted(torch_logits(teacher, test.images, bs))
    s_pred = predicted(torch_logits(student, test.images, bs))
    summary = {
        "kind": "distillation",
        "dataset": cfg.data.dataset,
        "teacher": {"model": cfg.model.name, "parameters": count_parameters(teacher), "test": t_test,
                    "test_fgsm": evaluate_robust(teacher, test, eps, bs, task=task)},
        "student": {"model": d.student, "parameters": count_parameters(student), "test": s_test,
                    "test_fgsm": evaluate_robust(student, test, eps, bs, task=task)},
        f"{task.headline}_drop_points": 100 * (t_test[task.headline] - s_test[task.headline]),
        "test_agreement": float((t_pred == s_pred).float().mean()),
        "transfer_set": d.data,
        "transfer_images": len(transfer),
        "selected_epoch": best.step,
        "settings": cfg.to_dict()["distill"],
        "seconds": time.perf_counter() - started,
    }
    log(f"student test {task.describe(s_test)}  teacher {task.describe(t_test)}  "
        f"(drop {summary[f'{task.headline}_drop_points']:+.1f} points, agreement {summary['test_agreement']:.3f})")
    return student, summary


def distill_run(run_dir: Path, overrides: list[str] | None = None, log: Callable[[str], Any] = print,
                cfg: ExperimentConfig | None = None) -> Path:
    """``fedrobust distill RUN_DIR``: distill the run's model.pt; writes ``RUN_DIR/distill/``."""
    run_dir = Path(run_dir)
    cfg = cfg or run_config(run_dir, overrides)
    teacher = load_model(cfg, run_dir / "model.pt")
    with staged_dir(run_dir / DISTILL_DIR) as tmp:
        RunDir(tmp).write_config(cfg)
        student, summary = distill(cfg, teacher, log, out=tmp)
        RunDir(tmp).save_checkpoint(STUDENT_FILE, {"model": student.state_dict(), "model_name": cfg.distill.student,
                                                   "teacher": cfg.model.name, "config": cfg.to_dict()})
        RunDir(tmp).write_summary(summary)
    log(f"student in {run_dir / DISTILL_DIR / STUDENT_FILE}")
    return run_dir / DISTILL_DIR


def load_student(cfg: ExperimentConfig, run_dir: Path) -> tuple[str, nn.Module] | None:
    """(architecture name, model in eval mode) of the run's distilled student, or None if there is none."""
    path = Path(run_dir) / DISTILL_DIR / STUDENT_FILE
    if not path.is_file():
        return None
    saved = load_state(path)
    name = saved.get("model_name", cfg.distill.student)
    return name, load_model(cfg, path, name, saved)
