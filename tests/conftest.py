"""Shared fixtures: the real MedMNIST data root, and small fake npz files for other sets."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import psutil
import pytest
import torch

from fedrobust.data.catalog import dataset_info
from launcher.cli import main

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data" / "medmnist"
SHARED_SEG = REPO.parent / "shared" / "data" / "segmentation"


def real_data_root() -> Path | None:
    for candidate in (os.environ.get("FEDROBUST_DATA_ROOT"), SHARED):
        if candidate and (Path(candidate) / "breastmnist.npz").is_file():
            return Path(candidate)
    return None


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Modules with the most `slow` tests first. Under --dist loadscope a module runs whole on one worker, and a
    long module that starts last leaves the other worker idle (xdist's default order puts many short tests first)."""
    slow: dict[str, int] = {}
    for item in items:
        module = item.nodeid.split("::")[0]
        slow[module] = slow.get(module, 0) + (item.get_closest_marker("slow") is not None)
    items.sort(key=lambda item: -slow[item.nodeid.split("::")[0]])  # stable: within a module, the file's order


@pytest.fixture(scope="session")
def data_root() -> Path:
    root = real_data_root()
    if root is None:
        pytest.skip("official breastmnist.npz not found: set FEDROBUST_DATA_ROOT")
    return root


@pytest.fixture(scope="session")
def seg_root() -> Path:
    """The segmentation root holding kvasir-seg/ (the real Kvasir-SEG images and masks)."""
    from fedrobust.data.segmentation import ENV_SEG_ROOT, resolve_seg_root

    for candidate in (os.environ.get(ENV_SEG_ROOT), SHARED_SEG):
        if candidate and (resolve_seg_root(candidate) / "images").is_dir():
            return Path(candidate)
    pytest.skip(f"Kvasir-SEG not found at {SHARED_SEG}/kvasir-seg: set {ENV_SEG_ROOT}")


def write_fake_medmnist(root: Path, flag: str, n: tuple[int, int, int] = (40, 10, 10), size: int = 28,
                        seed: int = 0) -> Path:
    """A small npz in the official layout (uint8 images, (N, 1) labels) for ``flag``."""
    info = dataset_info(flag)
    rng = np.random.default_rng(seed)
    arrays = {}
    for split, count in zip(("train", "val", "test"), n, strict=True):
        shape = (count, size, size) + ((3,) if info.channels == 3 else ())
        arrays[f"{split}_images"] = rng.integers(0, 256, shape, dtype=np.uint8)
        arrays[f"{split}_labels"] = (np.arange(count) % info.num_classes).reshape(-1, 1).astype(np.uint8)
    root.mkdir(parents=True, exist_ok=True)
    path = root / f"{flag}.npz"
    np.savez_compressed(path, **arrays)
    return path


FLOWER_PROCS = ("flower-superlink", "flower-supernode", "flower-superexec", "flwr-simulation", "flwr-serverapp",
                "flwr-clientapp", "raylet", "gcs_server", "ray::", "default_worker.py", "dashboard", "log_monitor")


def _worker() -> str:
    """pytest-xdist's worker id (its children inherit it); "" without xdist."""
    return os.environ.get("PYTEST_XDIST_WORKER", "")


def _flower_processes(since: float) -> list[str]:
    """Flower/Ray processes started since ``since`` by this test worker (the other worker's are not ours)."""
    found = []
    for p in psutil.process_iter(["cmdline", "create_time", "name"]):
        try:
            cmd = " ".join(p.info["cmdline"] or [p.info["name"] or ""])
            if p.info["create_time"] >= since - 1 and any(k in cmd for k in FLOWER_PROCS) and (
                    p.environ().get("PYTEST_XDIST_WORKER", "") == _worker()):
                found.append(f"{p.pid} {cmd[:100]}")
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


@pytest.fixture(scope="session")
def flower_processes() -> Callable[[float], list[str]]:
    """Flower/Ray processes started since a time: a test asserts none survives its command."""
    return _flower_processes


@pytest.fixture(autouse=True)
def _threads() -> None:
    torch.set_num_threads(1 if _worker() else 2)  # two workers share the two cores


@pytest.fixture(scope="session")
def trained_run(data_root, tmp_path_factory) -> Path:
    """A small centralized run whose teacher is the student architecture (fast), distilled and exported
    by the pipeline hooks (distill.enabled / export.enabled)."""
    out = tmp_path_factory.mktemp("runs")
    code = main(["train", "--data-root", str(data_root), "--set", f"run.out_dir='{out}'", "--set", "run.name=t",
                 "--set", "model.name=student", "--set", "train.epochs=3", "--set", "eval.fgsm_eps=[0.004]",
                 "--set", "distill.enabled=true", "--set", "distill.epochs=3",
                 "--set", "export.enabled=true", "--set", "sweep.enabled=false"])
    assert code == 0
    (run,) = out.iterdir()
    return run
