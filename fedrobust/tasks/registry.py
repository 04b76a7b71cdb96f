"""``data.task`` -> its Task: the one import task-agnostic modules make to reach task-specific code."""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

from fedrobust.errors import ConfigError
from fedrobust.tasks.specs import SPECS

if TYPE_CHECKING:
    from fedrobust.config.schema import ExperimentConfig
    from fedrobust.tasks.base import Task


@functools.cache
def task_of(name: str) -> Task:
    """The Task named ``name`` ("classification" or "segmentation"), built once per process."""
    if name == "classification":
        from fedrobust.tasks.classification import Classification

        return Classification()
    if name == "segmentation":
        from fedrobust.tasks.segmentation import Segmentation

        return Segmentation()
    raise ConfigError(f"data.task: got {name!r}; choose one of {', '.join(SPECS)}")


def task_for(cfg: ExperimentConfig) -> Task:
    """The task of a run's config."""
    return task_of(cfg.data.task)
