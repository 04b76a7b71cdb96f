"""The Flower ServerApp of fedrobust (filled by the federation issue).

A thin layer: it picks a Flower strategy by name, evaluates the global model centrally with
``fedrobust`` every round, and writes the run directory.
"""
