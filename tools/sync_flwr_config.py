"""Rewrite ``[tool.flwr.app.config]`` in pyproject.toml from configs/quickstart.toml.

Flower reads an app's defaults from pyproject; fedrobust's single source of truth is its typed
config. Run this (``make flwr-config``) after changing the config schema or the quickstart;
tests/test_flower_app.py fails while the two disagree.
"""

from __future__ import annotations

from pathlib import Path

import tomli_w

from fedrobust.config import load_config, to_flat

ROOT = Path(__file__).resolve().parents[1]
MARK = "[tool.flwr.app.config."


def main() -> None:
    flat = to_flat(load_config(ROOT / "configs" / "quickstart.toml"))
    nested: dict[str, dict] = {}
    for key, value in flat.items():
        section, leaf = key.split(".", 1)
        nested.setdefault(section, {})[leaf] = value
    text = (ROOT / "pyproject.toml").read_text()
    head = text[: text.index(MARK)] if MARK in text else text.rstrip() + "\n\n"
    body = tomli_w.dumps({"tool": {"flwr": {"app": {"config": nested}}}})
    (ROOT / "pyproject.toml").write_text(head + body)
    print(f"updated {len(flat)} keys in pyproject.toml")


if __name__ == "__main__":
    main()
