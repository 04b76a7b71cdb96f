"""Progress display for long work: a tqdm bar on a terminal, nothing in logs."""

from __future__ import annotations

import sys
from contextlib import nullcontext
from typing import Any

from tqdm.auto import tqdm


class _Silent:
    """Stands in for a bar when there is no terminal: ``update`` and ``set_postfix_str`` do nothing."""

    def update(self, n: int = 1) -> None:
        pass

    def set_postfix_str(self, text: str) -> None:
        pass


def progress_bar(total: int, desc: str, unit: str = "img", **kwargs: Any):
    """A context-managed tqdm bar, or a no-op when stderr is not a terminal (CI logs stay clean)."""
    if not sys.stderr.isatty():
        return nullcontext(_Silent())
    return tqdm(total=total, desc=desc, unit=unit, leave=False, dynamic_ncols=True, **kwargs)
