"""The staged copy `fedrobust simulate` submits bundles to the same FAB as the project itself."""

from __future__ import annotations

import shutil
from pathlib import Path

from flwr.cli.build import build_fab_from_disk

from launcher.app_bundle import app_files, stage_app

ROOT = Path(__file__).resolve().parents[1]


def _project(root: Path) -> Path:
    """A small Flower app with the kinds of clutter a real checkout has."""
    project = root / "app"
    project.mkdir()
    shutil.copy(ROOT / "pyproject.toml", project / "pyproject.toml")
    for package in ("fedrobust", "clients", "server"):  # what [tool.flwr.app] fab-include names
        (project / package).mkdir()
        (project / package / "app.py").write_text(f"print({package!r})\n")
    (project / ".gitignore").write_text("runs/\n*.npz\nbuild/\n")
    (project / "docs").mkdir()
    (project / "docs" / "notes.md").write_text("# notes\n")
    (project / "data.npz").write_bytes(b"\0" * 10)
    for clutter in ("runs/exp-1", ".venv/lib/site-packages/pkg", ".git/objects", "server/__pycache__", "build/x"):
        (project / clutter).mkdir(parents=True)
        (project / clutter / "module.py").write_text("x = 1\n")
    (project / "link.py").symlink_to(project / "server" / "app.py")
    return project


def test_staged_copy_bundles_the_same_fab(tmp_path: Path) -> None:
    project = _project(tmp_path)
    staged = stage_app(project, tmp_path / "staging")
    assert staged.name == "fedrobust"
    assert build_fab_from_disk(staged) == build_fab_from_disk(project)


def test_ignored_directories_are_not_copied(tmp_path: Path) -> None:
    files = app_files(_project(tmp_path))
    assert {"pyproject.toml", ".gitignore", "server/app.py", "docs/notes.md"} <= set(files)
    for left_out in ("runs/", ".venv/", ".git/", "__pycache__/", "build/", "data.npz", "link.py"):
        assert not any(left_out in name for name in files), left_out
