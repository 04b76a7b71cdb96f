"""Attack sweeps over eps grids against every model a run produced, with sanity checks."""

from fedrobust.sweep.run import SWEEP_CSV, sweep, sweep_run

__all__ = ["SWEEP_CSV", "sweep", "sweep_run"]
