"""The host-side launcher: the ``fedrobust`` command and the Flower processes it starts and stops.

``fedrobust simulate`` (a private simulation SuperLink + ``flwr run``) and ``fedrobust deploy``
(SuperLink, SuperNodes, ``flwr run`` against them) live here; the ML lives in ``fedrobust/``, the
Flower apps in ``server/`` (ServerApp) and ``clients/`` (ClientApp). Nothing in ``fedrobust/``
imports this package.
"""
