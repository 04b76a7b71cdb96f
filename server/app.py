"""Flower ServerApp: builds the fedrobust config from ``context.run_config`` and runs the rounds."""

from __future__ import annotations

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from fedrobust.config import from_flat
from server.loop import run_federation

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    run_federation(grid, from_flat(dict(context.run_config)))
