"""``fedrobust export RUN_DIR``: the distilled student (fp32 and int8) and the teacher as ONNX files
in ``RUN_DIR/export/``, each checked against torch on the test split, with a summary."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from fedrobust.checkpoint import load_model, run_config, weights_sha256
from fedrobust.config import ExperimentConfig
from fedrobust.distill.run import DISTILL_DIR, STUDENT_FILE, load_student
from fedrobust.edge.metadata import ModelMetadata
from fedrobust.edge.model import EdgeModel
from fedrobust.errors import FedrobustError
from fedrobust.export.onnx_export import check_parity, export_onnx
from fedrobust.export.quantize import quantize_int8
from fedrobust.models.from_config import input_shape
from fedrobust.predict import predicted
from fedrobust.rundir import atomic_write_json, staged_dir
from fedrobust.tasks.base import Split, Task
from fedrobust.tasks.registry import task_for

EXPORT_DIR = "export"


def metadata_for(cfg: ExperimentConfig, model: nn.Module, name: str, role: str, run: str,
                 precision: str = "fp32") -> ModelMetadata:
    task = task_for(cfg)
    return ModelMetadata(
        **task.metadata(cfg.data), image_size=cfg.data.image_size, channels=input_shape(cfg.data)[0], model=name,
        role=role, precision=precision, weights_sha256=weights_sha256(model), run=run, output_name=task.output_name,
    )


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _describe(path: Path, logits: np.ndarray, test: Split, started: float, task: Task) -> dict[str, Any]:
    return {"file": path.name, "bytes": path.stat().st_size, "sha256": file_sha256(path),
            "test": task.score(logits, test), "seconds": time.perf_counter() - started}


def calibration_images(cfg: ExperimentConfig) -> np.ndarray:
    """Up to ``export.calibration_size`` val images, a seeded sample: the server's own data."""
    val = task_for(cfg).load(cfg.data, "val")
    n = min(cfg.export.calibration_size, len(val))
    order = torch.randperm(len(val), generator=torch.Generator().manual_seed(cfg.run.seed))[:n]
    return val.images[order].numpy()


def export_model(cfg: ExperimentConfig, model: nn.Module, name: str, role: str, out: Path, run: str,
                 test: Split, log: Callable[[str], Any]) -> tuple[dict[str, Any], np.ndarray]:
    """fp32 ONNX + parity check on the whole test split; the summary entry and the test logits. Both run on the
    CPU, where the edge runtime will (``model`` is moved there)."""
    model = model.cpu()
    task = task_for(cfg)
    started = time.perf_counter()
    path = export_onnx(model, out / f"{role}.onnx", metadata_for(cfg, model, name, role, run))
    parity, logits = check_parity(model, path, test.images, cfg.export.parity_atol, task.min_parity_agreement)
    entry = _describe(path, logits, test, started, task)
    entry["parity"] = parity.to_dict()
    log(f"{path.name}: {entry['bytes'] / 1024:.0f} KB, test {task.headline} {entry['test'][task.headline]:.3f}, "
        f"max |torch - onnxruntime| {parity.max_abs_diff:.1e} on {parity.images} test images")
    return entry, logits


def export(cfg: ExperimentConfig, run_dir: Path, log: Callable[[str], Any] = print) -> Path:
    """Write ``run_dir/export/`` (replacing an earlier one only once the new one is complete)."""
    found = load_student(cfg, run_dir)
    if found is None:
        raise FedrobustError(f"{run_dir} has no distilled student ({DISTILL_DIR}/{STUDENT_FILE}); "
                             f"run `fedrobust distill {run_dir}` first")
    student_name, student = found
    task = task_for(cfg)
    h = task.headline
    test = task.load(cfg.data, "test")
    summary: dict[str, Any] = {"kind": "export", "dataset": cfg.data.dataset, "task": task.name,
                               "test_images": len(test), "parity_atol": cfg.export.parity_atol}
    with staged_dir(run_dir / EXPORT_DIR) as out:
        summary["student"], fp32_logits = export_model(cfg, student, student_name, "student", out, run_dir.name,
                                                       test, log)
        if cfg.export.int8:
            started = time.perf_counter()
            meta = metadata_for(cfg, student, student_name, "student", run_dir.name, precision="int8")
            calibration = calibration_images(cfg)
            int8 = quantize_int8(out / "student.onnx", out / "student.int8.onnx", calibration, meta,
                                 per_channel=cfg.export.per_channel)
            logits = EdgeModel(int8, threads=1).predict_logits(test.images.numpy())
            entry = _describe(int8, logits, test, started, task)
            agree = predicted(logits) == predicted(fp32_logits)
            fp32_score = summary["student"]["test"][h]
            entry.update({
                "calibration_images": len(calibration),
                "agreement_with_fp32": float(agree.mean()),
                f"{h}_change_points": 100 * (entry["test"][h] - fp32_score),
                f"{h}_change_images": round((entry["test"][h] - fp32_score) * len(test)),
                "per_channel": cfg.export.per_channel,
            })
            summary["student_int8"] = entry
            log(f"{int8.name}: {entry['bytes'] / 1024:.0f} KB, test {h} {entry['test'][h]:.3f} "
                f"({entry[f'{h}_change_points']:+.1f} points vs fp32), agrees with fp32 on "
                f"{100 * entry['agreement_with_fp32']:.1f}% of test {task.prediction_unit}")
        if cfg.export.teacher:
            teacher = load_model(cfg, run_dir / "model.pt")
            summary["teacher"], _ = export_model(cfg, teacher, cfg.model.name, "teacher", out, run_dir.name, test, log)
        atomic_write_json(out / "summary.json", summary)
    log(f"ONNX files in {run_dir / EXPORT_DIR}")
    return run_dir / EXPORT_DIR


def export_run(run_dir: Path, overrides: list[str] | None = None, log: Callable[[str], Any] = print) -> Path:
    run_dir = Path(run_dir)
    return export(run_config(run_dir, overrides), run_dir, log)
