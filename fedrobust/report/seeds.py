"""``fedrobust report --seeds RUN_DIR...``: several finished runs (centralized or federated) in one
markdown table, grouped by setting, with test accuracy and FGSM accuracy by seed and their mean,
standard deviation and standard error. The seed (the partition's, the initial weights', the local
updates') moves single runs by several points on these small test splits, so settings are compared
on their seed means, never on one run.

A run's setting is its config.toml (the schema's defaults filling keys an older run lacks) and its
kind, with the keys that only name or place a run ignored (``IGNORED``, ``IGNORED_SECTIONS``). The
figures come from each run's summary.json: the test split at the round or epoch the run selected.
"""

from __future__ import annotations

import json
import math
import re
import statistics
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedrobust.config import ExperimentConfig
from fedrobust.errors import FedrobustError
from fedrobust.rundir import RunDir
from fedrobust.tasks.specs import SPECS

# what a run is called, where it lives and how many threads it used: not part of its setting
IGNORED = frozenset({"run.seed", "run.name", "run.dir", "run.out_dir", "run.threads", "data.root"})
IGNORED_SECTIONS = ("simulation",)  # the runtime's resources and timeouts
SEED_SUFFIX = re.compile(r"-s\d+$")  # the habit `--set run.name=<setting>-s$SEED`


@dataclass
class _Run:
    path: Path
    kind: str
    name: str
    seed: int
    setting: dict[str, Any]  # flat config without the ignored keys
    chosen: Any  # selected round (federated) or epoch (centralized)
    acc: float
    fgsm: dict[str, float]  # eps (summary.json's key) -> test accuracy under FGSM


def _flatten(tree: dict[str, Any]) -> dict[str, Any]:
    flat = {}
    for section, values in tree.items():
        if isinstance(values, dict):
            for key, value in values.items():
                flat[f"{section}.{key}"] = tuple(value) if isinstance(value, list) else value
        else:
            flat[section] = values
    return flat


def _number(value: Any) -> float:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else math.nan


def _read(path: Path, defaults: dict[str, Any]) -> _Run:
    """One finished run, or FedrobustError naming what is missing."""
    if not path.is_dir():
        raise FedrobustError(f"{path}: not a folder")
    config, summary = path / RunDir.CONFIG, path / RunDir.SUMMARY
    if not config.is_file():
        raise FedrobustError(f"{path}: not a run directory (no {RunDir.CONFIG})")
    if not summary.is_file():
        raise FedrobustError(f"{path}: not finished (no {RunDir.SUMMARY})")
    try:
        flat = {**defaults, **_flatten(tomllib.loads(config.read_text()))}
        s = json.loads(summary.read_text())
        headline = SPECS[str(flat.get("data.task", "classification"))].headline
        acc = s["test"][headline]
    except (tomllib.TOMLDecodeError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise FedrobustError(f"{path}: unreadable {type(exc).__name__.removesuffix('Error')}") from None
    except (KeyError, TypeError):
        raise FedrobustError(f"{path}: {RunDir.SUMMARY} has no test score (or an unknown data.task)") from None
    setting = {k: v for k, v in flat.items() if k not in IGNORED and k.partition(".")[0] not in IGNORED_SECTIONS}
    fgsm = {str(e): _number(m.get(headline) if isinstance(m, dict) else None)
            for e, m in (s.get("test_fgsm") or {}).items()}
    return _Run(path=path, kind=str(s.get("kind", "?")), name=str(flat.get("run.name", path.name)),
                seed=int(flat.get("run.seed", 0)), setting=setting,
                chosen=s.get("selected_round", s.get("selected_epoch", "")), acc=_number(acc), fgsm=fgsm)


def _mean_sd_se(values: list[float]) -> tuple[float, float, float]:
    """Mean, sample standard deviation (n - 1) and standard error of the finite ``values`` (NaN
    where there are too few)."""
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return math.nan, math.nan, math.nan
    mean = statistics.mean(finite)
    if len(finite) < 2:
        return mean, math.nan, math.nan
    sd = statistics.stdev(finite)
    return mean, sd, sd / math.sqrt(len(finite))


def _spread(values: list[float]) -> str:
    mean, sd, se = _mean_sd_se(values)
    if math.isnan(sd):
        return f"{mean:.3f}"
    return f"{mean:.3f} ± {sd:.3f} (se {se:.3f})"


def _by_seed(values: list[float]) -> str:
    return " / ".join(f"{v:.3f}" if math.isfinite(v) else "–" for v in values)


def _value(v: Any) -> str:
    if isinstance(v, tuple):
        return "[" + ", ".join(_value(x) for x in v) + "]"
    if isinstance(v, bool):
        return str(v).lower()
    return f"{v:g}" if isinstance(v, float) else str(v)


def _eps_key(eps: str) -> float:
    try:
        return float(eps)
    except ValueError:
        return math.inf


def seed_table(run_dirs: list[Path]) -> str:
    """Markdown: one row per setting (runs whose config differs only in the ignored keys, and of
    the same kind), seeds in ascending order; raises FedrobustError (one line) if any folder is
    not a finished run."""
    if not run_dirs:
        raise FedrobustError("no run directories given")
    defaults = _flatten(ExperimentConfig().to_dict())
    runs, problems = [], []
    for path in run_dirs:
        try:
            runs.append(_read(Path(path), defaults))
        except FedrobustError as exc:
            problems.append(str(exc))
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise FedrobustError(f"{problems[0]}{more}: pass finished runs only (made by `fedrobust train` or "
                             "`fedrobust simulate`, with summary.json)")

    groups: dict[tuple, list[_Run]] = {}
    for run in runs:
        key = (run.kind, tuple(sorted(run.setting.items(), key=lambda kv: kv[0])))
        groups.setdefault(key, []).append(run)
    settings = [{"kind": kind, **dict(items)} for kind, items in groups]
    keys = sorted({k for s in settings for k in s})
    differ = [k for k in keys if len({_value(s.get(k, "–")) for s in settings}) > 1]
    eps = sorted({e for r in runs for e in r.fgsm}, key=_eps_key)

    tasks = {str(s.get("data.task", "classification")) for s in settings}
    if len(tasks) > 1:
        raise FedrobustError(f"the runs mix tasks ({', '.join(sorted(tasks))}); compare runs of one task")
    short = SPECS[tasks.pop()].short
    head = ["setting", "differs by", "runs", "seeds", f"test {short} by seed", f"test {short} mean ± sd (se)"]
    for e in eps:
        head += [f"FGSM@{e} by seed", f"FGSM@{e} mean ± sd (se)"]
    head.append("selected round / epoch by seed")
    common = settings[0]
    shared = (f"they differ in {', '.join(differ)}" if differ
              else f"{common['data.dataset']} · {common['model.name']} · {common['kind']}")
    lines = [f"{len(runs)} finished run{'s' if len(runs) != 1 else ''} in {len(groups)} setting"
             f"{'s' if len(groups) != 1 else ''} ({shared}); test split at each run's selected round or epoch; "
             "mean ± sample sd (se = sd / √n) over seeds.",
             "", "| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for setting, group in zip(settings, groups.values(), strict=True):
        group = sorted(group, key=lambda r: r.seed)
        names = list(dict.fromkeys(SEED_SUFFIX.sub("", r.name) for r in group))
        label = ", ".join(f"{k}={_value(setting.get(k, '–'))}" for k in differ) or "–"
        acc = [r.acc for r in group]
        cells = [" / ".join(names), label, str(len(group)), ", ".join(str(r.seed) for r in group), _by_seed(acc),
                 _spread(acc)]
        for e in eps:
            values = [r.fgsm.get(e, math.nan) for r in group]
            cells += [_by_seed(values), _spread(values)]
        cells.append(" / ".join(str(r.chosen) for r in group))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
