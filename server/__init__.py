"""The Flower ServerApp of fedrobust: the round loop and Flower's strategies by name.

A thin layer over ``fedrobust.federated``: it samples and screens clients, lets the strategy
aggregate, and has ``FederatedRun`` evaluate, checkpoint and write the run directory.
"""
