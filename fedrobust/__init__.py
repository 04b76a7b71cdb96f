"""fedrobust: federated, adversarially robust medical imaging on MedMNIST.

The core library. It knows nothing of Flower: ``clients/`` and ``server/`` translate between
Flower messages and the functions here.
"""

__version__ = "0.1.0"
