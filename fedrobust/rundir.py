"""One run directory per run: resolved config, metrics.jsonl, checkpoints, summary.json.

Files that other tools read (summary, checkpoints) are written atomically (temp file + rename),
so an interrupted run never leaves a half-written result behind.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import tomli_w
import torch

from fedrobust.config import ExperimentConfig
from fedrobust.errors import FedrobustError


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(_json_safe(obj), indent=2) + "\n").encode())


class RunDirBusy(FedrobustError):
    """Another live process is writing the run directory."""


class RunDir:
    """The folder holding everything one run produced."""

    CONFIG = "config.toml"
    METRICS = "metrics.jsonl"
    SUMMARY = "summary.json"
    LOCK = ".lock"

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock_fd: int | None = None

    # one writer at a time -----------------------------------------------------------------------
    def hold(self, command: str, marker: str = "") -> dict[str, Any]:
        """Become the run directory's one writer (an advisory ``flock`` on ``.lock``), or raise
        RunDirBusy naming the holder's PID. The operating system releases the lock when its holder
        dies, however it dies, so a dead holder never keeps it. Returns what the previous holder
        wrote ({} if none): a launcher uses its ``marker`` to stop what a killed launch left running.
        Without ``fcntl`` (Windows) there is no lock."""
        try:
            import fcntl
        except ImportError:
            return {}
        fd = os.open(self.path / self.LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            raise RunDirBusy(f"{self.path} is in use by PID {holder.get('pid', '?')} ({holder.get('command', '?')}); "
                             f"wait for it to end or stop it, then try again") from None
        previous = _read_holder(fd)
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps({"pid": os.getpid(), "command": command, "marker": marker}).encode(), 0)
        self._lock_fd = fd
        return previous

    def release(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing the descriptor drops the flock
            self._lock_fd = None

    @contextlib.contextmanager
    def lock(self, command: str) -> Iterator[RunDir]:
        """``hold`` for the duration of a block."""
        self.hold(command)
        try:
            yield self
        finally:
            self.release()

    @classmethod
    def create(cls, cfg: ExperimentConfig) -> RunDir:
        """``<out_dir>/<name>-<YYYYmmdd-HHMMSS>[-k]/`` with the resolved config written first."""
        stamp = time.strftime("%Y%m%d-%H%M%S")
        base = Path(cfg.run.out_dir) / f"{cfg.run.name}-{stamp}"
        path, k = base, 1
        while True:
            try:
                path.mkdir(parents=True, exist_ok=False)
                break
            except FileExistsError:
                k += 1
                path = base.with_name(f"{base.name}-{k}")
        run = cls(path)
        run.write_config(cfg)
        return run

    @classmethod
    def open(cls, path: Path, cfg: ExperimentConfig) -> RunDir:
        """An explicit run directory: created with the config if new, else reused (resume)."""
        path = Path(path)
        if path.exists() and not path.is_dir():
            raise FedrobustError(f"run directory {path} is a file; pass a folder")
        path.mkdir(parents=True, exist_ok=True)
        run = cls(path)
        if not (path / cls.CONFIG).exists():
            run.write_config(cfg)
        return run

    def write_config(self, cfg: ExperimentConfig) -> None:
        atomic_write_bytes(self.path / self.CONFIG, tomli_w.dumps(cfg.to_dict()).encode())

    def rewrite_metrics(self, records: list[dict[str, Any]]) -> None:
        text = "".join(json.dumps(_json_safe(r)) + "\n" for r in records)
        atomic_write_bytes(self.path / self.METRICS, text.encode())

    def log(self, record: dict[str, Any]) -> None:
        """Append one JSON line to metrics.jsonl."""
        with (self.path / self.METRICS).open("a") as fh:
            fh.write(json.dumps(_json_safe(record)) + "\n")
            fh.flush()

    def metrics(self) -> list[dict[str, Any]]:
        f = self.path / self.METRICS
        return [json.loads(line) for line in f.read_text().splitlines() if line] if f.exists() else []

    def save_checkpoint(self, name: str, state: dict[str, Any]) -> Path:
        buffer = io.BytesIO()
        torch.save(state, buffer)
        atomic_write_bytes(self.path / name, buffer.getvalue())
        return self.path / name

    def write_summary(self, summary: dict[str, Any]) -> Path:
        atomic_write_json(self.path / self.SUMMARY, summary)
        return self.path / self.SUMMARY


def _read_holder(fd: int) -> dict[str, Any]:
    try:
        return json.loads(os.pread(fd, 4096, 0) or b"{}")
    except ValueError:
        return {}


@contextlib.contextmanager
def staged_dir(final: Path) -> Iterator[Path]:
    """Build a result folder under a temporary name and move it into place only when complete.

    A crash (or Ctrl-C) leaves the previous ``final`` untouched and no half-written one behind.
    """
    final = Path(final)
    tmp = final.with_name(f".{final.name}.partial-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = final.with_name(f".{final.name}.old-{os.getpid()}")
    if final.exists():
        final.rename(old)
    tmp.rename(final)
    shutil.rmtree(old, ignore_errors=True)
