"""Machine description recorded next to every benchmark result."""

from __future__ import annotations

import os
import platform
import shlex
import sys
import time
from pathlib import Path

import torch


def describe() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next(line.split(":", 1)[1].strip() for line in fh if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    mem = ""
    try:
        with open("/proc/meminfo") as fh:
            kb = int(next(line.split()[1] for line in fh if line.startswith("MemTotal")))
        mem = f", {kb / 2**20:.0f} GiB RAM"
    except (OSError, StopIteration):
        pass
    threads = torch.get_num_threads()
    return (f"{os.cpu_count()} CPUs ({cpu}){mem}, torch {torch.__version__} with {threads} "
            f"thread{'' if threads == 1 else 's'}, "
            f"Python {platform.python_version()}, {time.strftime('%Y-%m-%d')}")


def command() -> str:
    return "python " + " ".join(shlex.quote(a) for a in sys.argv)


def write_report(out: str | Path, lines: list[str]) -> str:
    """Write the generated tables (markdown lines) to ``out`` and return the text. The default ``out`` of
    every benchmark is under ``runs/results/``: the pages in ``docs/results/`` are edited for readers
    from these figures, so a rerun never overwrites them."""
    text = "\n".join(lines) + "\n"
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(text)
    return text
