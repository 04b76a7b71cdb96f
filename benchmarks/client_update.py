"""Time of one federated client update against a bare torch loop doing the same work (client issue).

Config ``configs/quickstart.toml`` (resnet18, BreastMNIST 28 px, 5 clients Dirichlet 0.5, batch 32, Adam,
2 local epochs, augment "both" fused with fraction 0.5, eps uniform, warm-up 2 epochs), on the CPU.

client: ``LocalClient(cfg, partition).train(state, server_round)`` from a CPU copy of a fresh model's state,
  round 1 (clean: global epochs 0-1 < warmup_epochs) and round 2 (adversarial: global epochs 2-3), with
  warm caches (the ClientApp's ``warm_up`` loads the shard and builds the work model before round 1).
bare: a plain torch loop over the same shard (same samples, batch 32, shuffled, same epochs, a trailing
  batch of one dropped as the client does), the same architecture (``model_for``) loaded with the same
  state, a new Adam, and per batch: zero_grad, a forward + backward (adversarial round: with
  ``x.requires_grad_(True)``, then one forward + backward on FGSM and inverse-FGSM copies of half the batch made
  from that input gradient: the fused mode's work), then ``optimizer.step()``. Timed from the optimizer's
  creation to the last step.

Both run with the same torch threads (``torch.set_num_threads``; the ClientApp sets
``simulation.cpus_per_client`` = 1), interleaved (one warm-up each, then ``--repeats`` rounds alternating
which goes first); the table reports medians, and the ratio is the median of the per-repeat ratios.
Goal: ratio <= 1.2. Then the client's update is split into sections (wrapped timers, no code edited) next to
the bare loop's, and cProfile lists its top functions. Writes runs/results/client_update.md. Takes about
3 minutes with one thread on a loaded 2-core machine.

    python benchmarks/client_update.py [--repeats N] [--partition K] [--threads 1 2] [--profile-updates N]

``--threads 1 2`` adds the 2-thread case; it only means something on an otherwise idle machine (with other
jobs on the cores, OpenMP's threads wait on each other and an update takes 10x longer, noise included).
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import functools
import io
import pstats
import resource
import statistics
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).parent))
from _machine import command, describe, write_report

import fedrobust.federated.client as client_mod
import fedrobust.train.local as local_mod
from fedrobust.attacks.gradient import classification_loss
from fedrobust.augment import AdversarialPolicy
from fedrobust.config import ExperimentConfig, load_config
from fedrobust.federated.client import LocalClient
from fedrobust.models.from_config import model_for

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs/quickstart.toml"
ROUNDS = {"clean (round 1)": 1, "adversarial (round 2)": 2}
StateDict = dict[str, torch.Tensor]


# ---------------------------------------------------------------------------------------------- bare loop
def _loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return classification_loss(logits, y, reduction="sum")


def _bare_batch(model: nn.Module, xb: torch.Tensor, yb: torch.Tensor, total: int, m: int, eps: float,
                gen: torch.Generator | None, acc: dict[str, float]) -> None:
    """Forward/backward of one batch (``gen`` given: plus the adversarial copies); a function of its own, so the
    batch's tensors are freed before the optimizer step, as ``_fused_step``'s are."""
    clock = time.perf_counter
    t1 = clock()
    xb.requires_grad_(gen is not None)
    clean = _loss(model(xb), yb)
    t2 = clock()
    (clean / total).backward()
    t3 = clock()
    acc["forward (clean)"] += t2 - t1
    acc["backward (clean)"] += t3 - t2
    if gen is None:
        return
    pick = torch.randperm(len(yb), generator=gen)[:m]
    step = eps * xb.grad[pick].sign()
    xa = torch.cat([(xb.detach()[pick] + step).clamp(0, 1), (xb.detach()[pick] - step).clamp(0, 1)])
    ya = torch.cat([yb[pick], yb[pick]])
    t4 = clock()
    adv = _loss(model(xa), ya)
    t5 = clock()
    (adv / total).backward()
    acc["crafting"] += t4 - t3
    acc["forward (adv)"] += t5 - t4
    acc["backward (adv)"] += clock() - t5


def bare_update(model: nn.Module, state: StateDict, x: torch.Tensor, y: torch.Tensor, cfg: ExperimentConfig,
                adversarial: bool, seed: int, sections: dict[str, float] | None = None) -> tuple[float, float]:
    """The client's forward/backward work as a plain loop; returns the wall-clock and process CPU seconds from
    optimizer creation to the last step (loading ``state`` is not timed). ``sections`` (optional) accumulates
    wall-clock seconds per part."""
    model.load_state_dict(state)
    model.train()
    gen = torch.Generator().manual_seed(seed)
    aug, bs = cfg.augment, cfg.train.batch_size
    clock: Callable[[], float] = time.perf_counter
    acc: dict[str, float] = sections if sections is not None else defaultdict(float)
    start, cpu_start = clock(), time.process_time()
    opt = torch.optim.Adam(model.parameters(), lr=cfg.train.lr, weight_decay=cfg.train.weight_decay)
    acc["optimizer creation"] += clock() - start
    for _ in range(cfg.federation.local_epochs):
        t = clock()
        order = torch.randperm(len(y), generator=gen)
        acc["batching"] += clock() - t
        for s in range(0, len(y), bs):
            t0 = clock()
            idx = order[s:s + bs]
            if len(idx) == 1 and len(y) > 1:
                break
            xb, yb = x[idx], y[idx]
            n = len(yb)
            m = max(1, round(aug.fraction * n))
            t1 = clock()
            opt.zero_grad(set_to_none=True)
            t2 = clock()
            _bare_batch(model, xb, yb, n + 2 * m if adversarial else n, m, aug.eps, gen if adversarial else None,
                        acc)
            t3 = clock()
            opt.step()
            acc["batching"] += t1 - t0
            acc["optimizer.zero_grad"] += t2 - t1
            acc["optimizer.step"] += clock() - t3
    return clock() - start, time.process_time() - cpu_start


# ---------------------------------------------------------------------------------------------- timings
def _client_once(client: LocalClient, state: StateDict, server_round: int) -> tuple[float, float]:
    """Wall-clock and process CPU seconds of one ``client.train`` call."""
    t, c = time.perf_counter(), time.process_time()
    client.train(state, server_round)
    return time.perf_counter() - t, time.process_time() - c


def _bare_once(model: nn.Module, state: StateDict, client: LocalClient, server_round: int,
               rep: int) -> tuple[float, float]:
    data = client.train_data()
    epochs = client.cfg.federation.local_epochs
    adversarial = (server_round - 1) * epochs >= client.cfg.augment.warmup_epochs
    return bare_update(model, state, data.images, data.targets, client.cfg, adversarial, seed=rep)


def measure(client: LocalClient, model: nn.Module, state: StateDict, threads: int,
            repeats: int) -> dict[str, dict[str, list[float]]]:
    """Per case: client and bare seconds of ``repeats`` interleaved repetitions (after one warm-up each)."""
    torch.set_num_threads(threads)
    out: dict[str, dict[str, list[float]]] = {}
    for case, rnd in ROUNDS.items():
        _client_once(client, state, rnd)
        _bare_once(model, state, client, rnd, -1)
        out[case] = {"client": [], "bare": [], "client cpu": [], "bare cpu": [], "client faults": [],
                     "bare faults": []}
    for rep in range(repeats):
        for case, rnd in ROUNDS.items():
            order = ("client", "bare") if rep % 2 == 0 else ("bare", "client")
            for who in order:
                faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
                wall, cpu = (_client_once(client, state, rnd) if who == "client"
                             else _bare_once(model, state, client, rnd, rep))
                out[case][who].append(wall)
                out[case][f"{who} cpu"].append(cpu)
                out[case][f"{who} faults"].append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults)
            c, b = out[case]["client"][-1], out[case]["bare"][-1]
            print(f"{threads} thr rep {rep + 1}/{repeats} {case:22s} client {c:6.3f}s bare {b:6.3f}s "
                  f"ratio {c / b:.2f}", file=sys.stderr)
    return out


# ---------------------------------------------------------------------------------------------- sections
class Sections:
    """Own seconds (nested wrapped calls excluded) per named part of ``LocalClient.train``, from wrappers patched
    in for the duration (a wrapper costs about a microsecond a call)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self._stack: list[float] = []
        self._undo: list[Callable[[], None]] = []

    def _enter(self) -> float:
        self._stack.append(0.0)
        return time.perf_counter()

    def _leave(self, label: str, started: float) -> None:
        dt = time.perf_counter() - started
        self.seconds[label] += dt - self._stack.pop()
        self.calls[label] += 1
        if self._stack:
            self._stack[-1] += dt

    def wrap(self, fn: Callable[..., Any], label: str) -> Callable[..., Any]:
        @functools.wraps(fn)
        def timed(*args: Any, **kwargs: Any) -> Any:
            t = self._enter()
            try:
                return fn(*args, **kwargs)
            finally:
                self._leave(label, t)
        return timed

    def wrap_gen(self, fn: Callable[..., Iterator[Any]], label: str) -> Callable[..., Iterator[Any]]:
        @functools.wraps(fn)
        def timed(*args: Any, **kwargs: Any) -> Iterator[Any]:
            it = fn(*args, **kwargs)
            while True:
                t = self._enter()
                try:
                    item = next(it)
                except StopIteration:
                    return
                finally:
                    self._leave(label, t)
                yield item
        return timed

    def patch(self, owner: Any, name: str, label: str, gen: bool = False) -> None:
        """Replace ``owner.name`` by its timed wrapper until ``restore``."""
        had = isinstance(owner, type) or name in vars(owner)
        old = getattr(owner, name)
        setattr(owner, name, (self.wrap_gen if gen else self.wrap)(old, label))

        def undo() -> None:
            if had:
                setattr(owner, name, old)
            else:
                delattr(owner, name)
        self._undo.append(undo)

    def restore(self) -> None:
        while self._undo:
            self._undo.pop()()


def _patched(client: LocalClient, sec: Sections) -> None:
    """Patch the timed wrappers of ``sec`` into ``LocalClient.train``'s callees (undone by ``sec.restore``)."""
    model = client_mod._cached_model(*client._model_key())
    real_make_optimizer = client_mod.make_optimizer

    def make_optimizer(*args: Any, **kwargs: Any) -> torch.optim.Optimizer:
        opt = real_make_optimizer(*args, **kwargs)
        opt.step = sec.wrap(opt.step, "optimizer.step")  # type: ignore[method-assign]
        opt.zero_grad = sec.wrap(opt.zero_grad, "optimizer.zero_grad")  # type: ignore[method-assign]
        return opt

    client_mod.make_optimizer = sec.wrap(make_optimizer, "optimizer creation")  # type: ignore[assignment]
    sec._undo.append(lambda: setattr(client_mod, "make_optimizer", real_make_optimizer))
    sec.patch(client_mod, "local_seed", "seeding (local_seed)")
    sec.patch(client_mod.torch, "manual_seed", "seeding (torch.manual_seed)")
    sec.patch(LocalClient, "train_data", "shard fetch (train_data, x2)")
    sec.patch(LocalClient, "_work_model", "model load_state_dict (_work_model)")
    sec.patch(LocalClient, "class_weight", "class_weight")
    sec.patch(LocalClient, "trained_model", "trained_model")
    sec.patch(client_mod, "AdversarialPolicy", "policy + generators")
    sec.patch(client_mod, "cpu_state", "state dict copy (cpu_state)")
    sec.patch(client_mod, "train_epoch", "train_epoch own (loop, float(), counters)")
    sec.patch(client.task, "classic", "classic augment setup")
    sec.patch(local_mod, "iterate_batches", "batching (randperm, x[idx].contiguous())", gen=True)
    sec.patch(local_mod, "_fused_step", "_fused_step own (losses, detach, float())")
    sec.patch(AdversarialPolicy, "augment", "crafting (policy.augment)")
    sec.patch(client.task, "per_sample", "per_sample metric (incl. .cpu())")
    sec.patch(model, "forward", "forward (clean + adv)")
    sec.patch(torch.Tensor, "backward", "backward (clean + adv)")


def sections(client: LocalClient, model: nn.Module, state: StateDict, server_round: int,
             times: int) -> tuple[dict[str, float], dict[str, float]]:
    """Mean seconds per part of ``client.train(state, server_round)`` and of the bare loop, over ``times``
    updates of each, interleaved."""
    data = client.train_data()
    epochs = client.cfg.federation.local_epochs
    adversarial = (server_round - 1) * epochs >= client.cfg.augment.warmup_epochs
    sec = Sections()
    bare: dict[str, float] = defaultdict(float)
    client_total = bare_total = 0.0
    for rep in range(times):
        _patched(client, sec)
        try:
            client_total += _client_once(client, state, server_round)[0]
        finally:
            sec.restore()
        bare_total += bare_update(model, state, data.images, data.targets, client.cfg, adversarial, rep, bare)[0]
    cs = {k: v / times for k, v in sec.seconds.items()}
    cs["train (total)"] = client_total / times
    bs = {k: v / times for k, v in bare.items()}
    bs["total"] = bare_total / times
    return cs, bs


def profile_top(client: LocalClient, state: StateDict, server_round: int, times: int, top: int) -> list[str]:
    """cProfile of ``times`` client updates: the ``top`` functions by own time, per update."""
    prof = cProfile.Profile()
    prof.enable()
    for _ in range(times):
        client.train(state, server_round)
    prof.disable()
    stats = pstats.Stats(prof, stream=io.StringIO())
    rows = []
    for (file, line, name), (_cc, ncalls, tt, ct, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        where = name if file == "~" else f"{Path(file).name}:{line} {name}"
        rows.append((tt / times, ct / times, ncalls // times, where))
    rows.sort(reverse=True)
    lines = ["| function | own s / update | cumulative s / update | calls / update |", "| --- | --- | --- | --- |"]
    lines += [f"| `{w}` | {tt:.4f} | {ct:.4f} | {n} |" for tt, ct, n, w in rows[:top]]
    return lines


# ---------------------------------------------------------------------------------------------- report
# client section -> the bare loop's sections doing the same work (none: the bare loop has no such part)
SHARED = {"batching (randperm, x[idx].contiguous())": ("batching",),
          "forward (clean + adv)": ("forward (clean)", "forward (adv)"),
          "backward (clean + adv)": ("backward (clean)", "backward (adv)"),
          "crafting (policy.augment)": ("crafting",),
          "optimizer.step": ("optimizer.step",),
          "optimizer.zero_grad": ("optimizer.zero_grad",),
          "optimizer creation": ("optimizer creation",)}


def section_table(cs: dict[str, float], bs: dict[str, float]) -> list[str]:
    """Client sections (own seconds) next to the bare loop's, sorted by the client's excess."""
    total = cs.pop("train (total)")
    cs["LocalClient.train own (metrics, np.mean)"] = total - sum(cs.values())
    rows = []
    for k, v in cs.items():
        b = sum(bs.get(x, 0.0) for x in SHARED.get(k, ()))
        rows.append((v - b, k, v, b))
    rows.sort(reverse=True)
    lines = ["| section | client s | bare s | client - bare s |", "| --- | --- | --- | --- |"]
    lines += [f"| {k} | {v:.4f} | {b:.4f} | {d:+.4f} |" for d, k, v, b in rows]
    lines.append(f"| **total** | **{total:.4f}** | **{bs['total']:.4f}** | **{total - bs['total']:+.4f}** |")
    own = sum(v for k, v in cs.items() if k not in SHARED)
    lines += ["", f"Work the bare loop does not do at all (the rows with bare 0): {own:.4f} s per update, "
              f"{100 * own / total:.1f} % of the update; the shared rows differ by machine noise."]
    return lines


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=5, help="interleaved repetitions per case (after one warm-up)")
    p.add_argument("--partition", type=int, default=None, help="client partition id (default: the largest shard)")
    p.add_argument("--threads", type=int, nargs="+", default=[1],
                   help="torch thread counts to measure (e.g. 1 2; threads beyond the idle cores measure contention)")
    p.add_argument("--profile-updates", type=int, default=3, help="client updates per section / cProfile pass")
    p.add_argument("--out", default=str(ROOT / "runs/results/client_update.md"))
    args = p.parse_args()

    cfg = load_config(CONFIG, ["run.device=cpu"])
    torch.set_num_threads(args.threads[0])
    sizes = {k: len(LocalClient(cfg, k).train_data()) for k in range(cfg.partition.num_clients)}
    part = max(sizes, key=lambda k: sizes[k]) if args.partition is None else args.partition
    client = LocalClient(cfg, part)
    torch.manual_seed(cfg.run.seed)
    state = {k: v.detach().to("cpu", copy=True) for k, v in model_for(cfg).state_dict().items()}
    bare_model = model_for(cfg, pretrained=False)
    t = time.perf_counter()
    shard = client.warm_up()
    warm_s = time.perf_counter() - t
    t = time.perf_counter()
    client.train(state, 1)
    first_s = time.perf_counter() - t

    results = {th: measure(client, bare_model, state, th, args.repeats) for th in args.threads}

    torch.set_num_threads(args.threads[0])
    adv_round = ROUNDS["adversarial (round 2)"]
    sec_tables = {}
    for case, rnd in ROUNDS.items():
        cs, bs = sections(client, bare_model, state, rnd, args.profile_updates)
        sec_tables[case] = section_table(cs, bs)
    prof_lines = profile_top(client, state, adv_round, args.profile_updates, 15)

    epochs = cfg.federation.local_epochs
    lines = [
        "# One federated client update against a bare torch loop (client issue)",
        "",
        f"Command: `{command()}`  ",
        f"Machine: {describe()}",
        "",
        f"`{CONFIG.relative_to(ROOT)}`: {cfg.model.name}, {cfg.data.dataset} {cfg.data.image_size} px, "
        f"partition {part} of {cfg.partition.num_clients} ({shard} images; shard sizes "
        f"{', '.join(str(sizes[k]) for k in sorted(sizes))}), batch {cfg.train.batch_size}, {cfg.train.optimizer}, "
        f"{epochs} local epochs, augment {cfg.augment.mode!r} fused, fraction {cfg.augment.fraction}, "
        f"eps {cfg.augment.eps} {cfg.augment.eps_sampling}, warmup_epochs {cfg.augment.warmup_epochs}. "
        f"Warm caches (`warm_up()` {warm_s:.2f} s, then a first update {first_s:.2f} s, before timing). "
        f"Medians of {args.repeats} interleaved repetitions; ratio = median of per-repetition client / bare; "
        f"images/s = clean shard images x epochs / client seconds. The machine was shared with other jobs: "
        f"the absolute seconds are noisy, the interleaved ratios less so.",
        "",
        "| case | threads | client update s | bare loop s | ratio (min-max) | client CPU s | bare CPU s | CPU ratio "
        "| images/s | page faults client / bare |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    worst = 0.0
    for th, res in results.items():
        for case, r in res.items():
            c, b = statistics.median(r["client"]), statistics.median(r["bare"])
            ratios = [x / y for x, y in zip(r["client"], r["bare"], strict=True)]
            ratio = statistics.median(ratios)
            cpu_ratio = statistics.median(x / y for x, y in zip(r["client cpu"], r["bare cpu"], strict=True))
            worst = max(worst, ratio)
            lines.append(f"| {case} | {th} | {c:.3f} | {b:.3f} | {ratio:.2f} ({min(ratios):.2f}-{max(ratios):.2f}) "
                         f"| {statistics.median(r['client cpu']):.3f} | {statistics.median(r['bare cpu']):.3f} "
                         f"| {cpu_ratio:.2f} | {shard * epochs / c:.0f} "
                         f"| {statistics.median(r['client faults']):.0f} / {statistics.median(r['bare faults']):.0f} |")
    ok = worst <= 1.2
    lines += ["", "CPU s: `time.process_time()` of this process over the same interval (all its threads), less "
              "sensitive to the other jobs than wall-clock seconds. Page faults: median minor faults per update "
              "(memory the allocator gave back and touches again; they come and go in bursts of up to 10^5 and "
              "account for much of the noise).", "",
              f"Goal ratio <= 1.2: {'met' if ok else 'NOT met'} (worst median wall-clock ratio {worst:.2f}).", ""]
    for case, tab in sec_tables.items():
        lines += [f"## Where the time goes: {case}, {args.threads[0]} thread(s), mean of {args.profile_updates} "
                  "updates (interleaved with as many bare ones)", "",
                  "Wrapped timers around the parts of `LocalClient.train` / `train_epoch` next to the bare loop's "
                  "same parts; sorted by the client's excess.", "", *tab, ""]
    lines += ["## cProfile of the adversarial update (top 15 by own time, per update; cProfile itself slows "
              "Python calls)", "", *prof_lines]
    text = write_report(args.out, lines)
    print(text)
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
