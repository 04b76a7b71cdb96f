"""Edge latency of the distilled student against its teacher, in torch and in onnxruntime (edge issue).

Per run directory, on the run's real test-split images, for five engines: torch teacher (model.pt),
torch student (distill/student.pt), ONNX fp32 student, ONNX int8 student, and (for comparison)
ONNX fp32 teacher, all at the same thread count:
  batch-1 latency: every query timed on its own (perf_counter_ns), p50 / p95 / mean in ms;
  batch-N throughput: images/s of one N-image batch (test split tiled if smaller), median over reps;
  file sizes and parameter counts; top-1 agreement with the torch teacher (outside the timed loops).
Engines are interleaved: the batch-1 queries are cut into rounds, and every round runs each engine
on the same images (order rotated per round, untimed warm-up first); batches rotate the same way.
So machine noise hits every engine alike and the ratios come from one process run.
Goals: int8 student p50 >= 50x faster than the torch teacher; int8 student file <= 500 KB.
Writes runs/results/edge_latency.md (command and machine included). Needs the data, e.g.
FEDROBUST_DATA_ROOT=/work/shared/data/medmnist, and each run exported (`fedrobust distill RUN_DIR --export`).

    python benchmarks/edge_latency.py RUN_DIR [RUN_DIR ...] [--queries 500] [--warmup 50] [--threads 1]
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import torch

sys.path.insert(0, str(Path(__file__).parent))
from _machine import command, describe, write_report

from fedrobust.checkpoint import load_model, load_state, run_config, weights_sha256
from fedrobust.config import ExperimentConfig
from fedrobust.distill.run import DISTILL_DIR, STUDENT_FILE
from fedrobust.edge.model import EdgeError, EdgeModel
from fedrobust.errors import FedrobustError
from fedrobust.export.run import EXPORT_DIR
from fedrobust.models import count_parameters
from fedrobust.predict import predicted
from fedrobust.progress import progress_bar
from fedrobust.tasks.base import Split, Task
from fedrobust.tasks.registry import task_for

ROOT = Path(__file__).resolve().parents[1]
MIN_QUERIES = 200  # the minimum for a batch-1 latency figure
GOAL_SPEEDUP = 50.0  # int8 student p50 vs torch teacher p50
GOAL_KB = 500.0  # int8 student file size
REWARM = 10  # untimed queries before each later round: another engine ran in between
TEACHER, STUDENT, ONNX_STUDENT, INT8_STUDENT, ONNX_TEACHER = (
    "torch teacher", "torch student", "ONNX fp32 student", "ONNX int8 student", "ONNX fp32 teacher")


class BenchError(Exception):
    """Bad input to the benchmark: printed as one line, exit code 2."""


@dataclass
class Engine:
    """One way of running one model: ``forward`` takes a prepared input (torch tensor or numpy array)."""

    name: str
    model: str
    file: Path
    params: int
    forward: Callable[[Any], Any]
    prepare: Callable[[torch.Tensor], Any]  # test images -> this engine's native input, done before timing
    logits: Callable[[torch.Tensor], np.ndarray]  # whole test split -> logits, for the sanity check
    latencies_ns: list[int] = field(default_factory=list)
    batch_seconds: list[float] = field(default_factory=list)
    agreement: float = float("nan")
    accuracy: float = float("nan")


@dataclass
class RunFiles:
    """The files of one exported run, checked before anything is measured."""

    path: Path
    cfg: ExperimentConfig
    teacher_pt: Path
    student_pt: Path
    student_onnx: Path
    int8_onnx: Path
    teacher_onnx: Path | None  # optional: export.teacher = false leaves it out


def check_run(arg: str) -> RunFiles:
    """Fail before any measurement if a run lacks a file, so a long benchmark never dies half-way."""
    run = Path(arg)
    if not run.is_dir():
        raise BenchError(f"{arg}: no such run directory")
    cfg = run_config(run)
    hint = f"run `fedrobust distill {run} --export` first"
    teacher_pt, student_pt, export = run / "model.pt", run / DISTILL_DIR / STUDENT_FILE, run / EXPORT_DIR
    if not teacher_pt.is_file():
        raise BenchError(f"{run} has no model.pt (the run has not finished); finish or resume it first")
    if not student_pt.is_file():
        raise BenchError(f"{run} has no distilled student ({DISTILL_DIR}/{STUDENT_FILE}); {hint}")
    if not export.is_dir():
        raise BenchError(f"{run} has no {EXPORT_DIR}/ folder; {hint}")
    for name in ("student.onnx", "student.int8.onnx"):
        if not (export / name).is_file():
            raise BenchError(f"{export} has no {name}; run `fedrobust export {run}` (with export.int8 = true)")
    teacher_onnx = export / "teacher.onnx"
    return RunFiles(run, cfg, teacher_pt, student_pt, export / "student.onnx", export / "student.int8.onnx",
                    teacher_onnx if teacher_onnx.is_file() else None)


def torch_engine(name: str, model: torch.nn.Module, model_name: str, file: Path, batch: int) -> Engine:
    model.eval()

    def logits(images: torch.Tensor) -> np.ndarray:
        return torch.cat([model(images[i:i + batch]) for i in range(0, len(images), batch)]).numpy()

    return Engine(name, model_name, file, count_parameters(model), model, lambda t: t.contiguous(), logits)


def onnx_engine(name: str, path: Path, params: int, threads: int, batch: int,
                expected_sha256: str, mismatches: list[str]) -> Engine:
    """The session EdgeModel configures for the device (threads intra-op, 1 inter-op, sequential).

    Timed through the raw session.run, like the bare torch forward; the sanity check goes through
    EdgeModel.predict_logits, the path an edge caller takes.
    """
    edge = EdgeModel(path, threads)
    meta, session = edge.metadata, edge.session
    if meta.weights_sha256 != expected_sha256:
        mismatches.append(f"{path.name} was not exported from the current checkpoint (weights SHA-256 differ)")
    out_names, in_name = [meta.output_name], meta.input_name

    def forward(x: np.ndarray) -> Any:
        return session.run(out_names, {in_name: x})

    def prepare(t: torch.Tensor) -> np.ndarray:
        return np.ascontiguousarray(t.numpy(), dtype=np.float32)

    return Engine(name, meta.model, path, params, forward, prepare,
                  lambda images: edge.predict_logits(prepare(images), batch))


@contextmanager
def no_gc() -> Iterator[None]:
    """Keep the garbage collector from landing inside a timed call."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def rotated(engines: list[Engine], k: int) -> list[Engine]:
    k %= len(engines)
    return engines[k:] + engines[:k]


def measure_batch1(engines: list[Engine], images: torch.Tensor, queries: int, warmup: int, rounds: int,
                   desc: str) -> None:
    """Batch-1 latency, interleaved: each round runs every engine on the same block of query images."""
    n = len(images)
    inputs = {e.name: [e.prepare(images[i:i + 1]) for i in range(n)] for e in engines}
    blocks = [b for b in np.array_split(np.arange(queries), min(rounds, queries)) if len(b)]
    with progress_bar(total=queries * len(engines), desc=desc, unit="query") as bar:
        for r, block in enumerate(blocks):
            for e in rotated(engines, r):
                xs, fwd = inputs[e.name], e.forward
                for q in range(warmup if r == 0 else min(warmup, REWARM)):
                    fwd(xs[(int(block[0]) + q) % n])
                with no_gc():
                    for q in block:
                        x = xs[int(q) % n]
                        t0 = time.perf_counter_ns()
                        fwd(x)
                        e.latencies_ns.append(time.perf_counter_ns() - t0)
                if bar is not None:
                    bar.update(len(block))


def measure_batches(engines: list[Engine], images: torch.Tensor, batch: int, reps: int, desc: str) -> None:
    """Throughput on one batch of ``batch`` test images (tiled if the split is smaller), interleaved."""
    tiled = images.repeat((batch + len(images) - 1) // len(images), 1, 1, 1)[:batch].contiguous()
    inputs = {e.name: e.prepare(tiled) for e in engines}
    for e in engines:  # warm-up: allocator, kernel selection, weights into cache
        e.forward(inputs[e.name])
    with progress_bar(total=reps * len(engines), desc=desc, unit="batch") as bar:
        for r in range(reps):
            for e in rotated(engines, r):
                x = inputs[e.name]
                with no_gc():
                    t0 = time.perf_counter()
                    e.forward(x)
                    e.batch_seconds.append(time.perf_counter() - t0)
                if bar is not None:
                    bar.update(1)


def sanity(engines: list[Engine], test: Split, task: Task) -> None:
    """Agreement with the torch teacher (top-1, or mask pixels) and the test headline metric (accuracy, or polyp
    IoU): catches a broken or stale engine."""
    reference = predicted(engines[0].logits(test.images))
    for e in engines:
        logits = e.logits(test.images)
        e.agreement = float((predicted(logits) == reference).mean())
        e.accuracy = task.score(logits, test)[task.headline]


def kb(path: Path) -> float:
    return path.stat().st_size / 1024


def ms(ns: float) -> float:
    return ns / 1e6


def p50(e: Engine) -> float:
    return float(np.percentile(e.latencies_ns, 50))


def bench_run(files: RunFiles, args: argparse.Namespace) -> tuple[list[str], list[str], bool]:
    """Measure one run; returns its report section, its reading lines and whether both goals are met."""
    cfg, run = files.cfg, files.path
    print(f"{run}: loading models and the {cfg.data.dataset} test split", file=sys.stderr)
    task = task_for(cfg)
    agree = "top-1" if task.prediction_unit == "images" else task.prediction_unit
    test = task.load(cfg.data, "test")
    teacher = load_model(cfg, files.teacher_pt)
    student_name = load_state(files.student_pt).get("model_name", "student")
    student = load_model(cfg, files.student_pt, student_name)
    t_sha, s_sha = weights_sha256(teacher), weights_sha256(student)
    s_params, stale = count_parameters(student), []
    engines = [
        torch_engine(TEACHER, teacher, cfg.model.name, files.teacher_pt, args.batch),
        torch_engine(STUDENT, student, student_name, files.student_pt, args.batch),
        onnx_engine(ONNX_STUDENT, files.student_onnx, s_params, args.threads, args.batch, s_sha, stale),
        onnx_engine(INT8_STUDENT, files.int8_onnx, s_params, args.threads, args.batch, s_sha, stale),
    ]
    if files.teacher_onnx is not None:
        engines.append(onnx_engine(ONNX_TEACHER, files.teacher_onnx, count_parameters(teacher), args.threads,
                                   args.batch, t_sha, stale))
    with torch.inference_mode():
        sanity(engines, test, task)
        measure_batch1(engines, test.images, args.queries, args.warmup, args.rounds, f"{run.name} batch-1")
        measure_batches(engines, test.images, args.batch, args.batches, f"{run.name} batch-{args.batch}")

    by = {e.name: e for e in engines}
    base = p50(by[TEACHER])
    lines = [
        f"## {run.name}",
        "",
        f"{cfg.data.dataset} test split ({len(test)} images, {cfg.data.image_size} px, "
        f"{test.images.shape[1]} channel(s)); teacher {cfg.model.name}, student {student_name}. "
        f"Batch-1: {args.queries} queries per engine in {min(args.rounds, args.queries)} interleaved rounds "
        f"(warm-up {args.warmup} queries, then {min(args.warmup, REWARM)} per later round). "
        f"Batch-{args.batch}: median of {args.batches} interleaved batches"
        + (f" (test split tiled {args.batch / len(test):.2f}×)" if len(test) < args.batch else "") + ".",
        "",
        f"| engine | model | file | size KB | params | batch-1 p50 ms | p95 ms | mean ms | p50 speed-up vs "
        f"torch teacher | batch-{args.batch} img/s | agreement with torch teacher ({agree}) | test {task.headline} |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for e in engines:
        lat = np.asarray(e.latencies_ns, dtype=np.float64)
        throughput = args.batch / statistics.median(e.batch_seconds)
        lines.append(
            f"| {e.name} | {e.model} | {e.file.relative_to(run)} | {kb(e.file):,.1f} | {e.params:,} | "
            f"{ms(np.percentile(lat, 50)):.3f} | {ms(np.percentile(lat, 95)):.3f} | {ms(lat.mean()):.3f} | "
            f"{base / p50(e):.1f}× | {throughput:,.0f} | {e.agreement:.3f} | {e.accuracy:.3f} |"
        )
    int8 = by[INT8_STUDENT]
    speedup, size = base / p50(int8), kb(int8.file)
    ok_speed, ok_size = speedup >= GOAL_SPEEDUP, size <= GOAL_KB
    lines += [
        "",
        f"Goals: int8 student p50 speed-up vs torch teacher ≥ {GOAL_SPEEDUP:g}×: "
        f"{'met' if ok_speed else 'NOT met'} ({speedup:.1f}×); int8 student ≤ {GOAL_KB:g} KB: "
        f"{'met' if ok_size else 'NOT met'} ({size:.1f} KB).",
    ]
    if args.queries < MIN_QUERIES:
        lines.append(f"Only {args.queries} batch-1 queries per engine (the issue asks for ≥ {MIN_QUERIES}): "
                     f"a smoke measurement, not a result.")
    lines += [f"Warning: {s}." for s in stale]
    lines.append("")

    fp32, tput = by[ONNX_STUDENT], {e.name: args.batch / statistics.median(e.batch_seconds) for e in engines}
    worst = min(engines[1:], key=lambda e: e.agreement)
    reading = [
        f"- {run.name}: int8 vs fp32 ONNX student: p50 {p50(fp32) / p50(int8):.2f}× faster, file "
        f"{kb(fp32.file) / size:.2f}× smaller; ONNX fp32 vs torch student p50 {p50(by[STUDENT]) / p50(fp32):.2f}× "
        f"faster; int8 student batch-{args.batch} throughput {tput[INT8_STUDENT] / tput[TEACHER]:.1f}× the torch "
        f"teacher's.",
        f"- {run.name}: lowest agreement ({agree}) with the torch teacher: {worst.name} {worst.agreement:.3f}; "
        f"test {task.headline} torch teacher {by[TEACHER].accuracy:.3f}, int8 student {int8.accuracy:.3f}.",
    ]
    if ONNX_TEACHER in by:
        reading.append(f"- {run.name}: ONNX fp32 teacher vs torch teacher p50 {base / p50(by[ONNX_TEACHER]):.2f}× "
                       f"faster, agreement {by[ONNX_TEACHER].agreement:.3f}; int8 student vs ONNX fp32 teacher p50 "
                       f"{p50(by[ONNX_TEACHER]) / p50(int8):.1f}× faster.")
    return lines, reading, ok_speed and ok_size


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="run folder with distill/ and export/")
    p.add_argument("--queries", type=int, default=500, help="timed batch-1 queries per engine (issue: >= 200)")
    p.add_argument("--warmup", type=int, default=50, help="untimed batch-1 queries before an engine's first round")
    p.add_argument("--rounds", type=int, default=5, help="interleaved rounds the batch-1 queries are cut into")
    p.add_argument("--threads", type=int, default=1, help="torch and onnxruntime intra-op threads (1 = one edge core)")
    p.add_argument("--batch", type=int, default=256, help="images per throughput batch")
    p.add_argument("--batches", type=int, default=10, help="timed throughput batches per engine (median reported)")
    p.add_argument("--out", default=str(ROOT / "runs/results/edge_latency.md"))
    args = p.parse_args()
    for name in ("queries", "rounds", "threads", "batch", "batches"):
        if getattr(args, name) < 1:
            p.error(f"--{name} must be >= 1")
    if args.warmup < 0:
        p.error("--warmup must be >= 0")
    torch.set_num_threads(args.threads)

    try:
        runs = [check_run(d) for d in args.run_dirs]
        results = [bench_run(files, args) for files in runs]
    except (BenchError, FedrobustError, EdgeError) as exc:
        print(f"edge_latency: error: {exc}", file=sys.stderr)
        return 2

    lines = [
        "# Edge latency: distilled student vs teacher, torch vs onnxruntime (edge issue)",
        "",
        f"Command: `{command()}`  ",
        f"Machine: {describe()}",
        "",
        f"Every engine at {args.threads} thread(s): torch.set_num_threads({args.threads}) and "
        f"torch.inference_mode(); onnxruntime {ort.__version__} CPU provider, intra-op {args.threads}, inter-op 1, "
        f"sequential execution, all graph optimisations (the EdgeModel session). Batch-1 latency is each query "
        f"timed alone with perf_counter_ns (garbage collector paused), bare forward / session.run on a prepared "
        f"input; p95 by linear interpolation. KB = 1024 bytes. Agreement and test acc are computed on the whole "
        f"test split outside the timed loops (ONNX through EdgeModel.predict_logits).",
        "",
    ]
    reading: list[str] = []
    for section, facts, _ in results:
        lines += section
        reading += facts
    lines += ["## Reading", "", *reading]
    text = write_report(args.out, lines)
    print(text)
    return 0 if all(ok for *_, ok in results) else 1


if __name__ == "__main__":
    sys.exit(main())
