"""Attack sweeps over eps grids against every model a run produced, with sanity checks."""

from fedrobust.sweep.results import SWEEP_CSV
from fedrobust.sweep.run import sweep

__all__ = ["SWEEP_CSV", "sweep"]
