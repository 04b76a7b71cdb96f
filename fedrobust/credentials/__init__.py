"""Credentials of a deployment, Flower-free: the CA and the SuperLink's TLS certificate (``tls``), the
SuperNodes' authentication key pairs (``node_keys``). The processes that use them live in ``launcher/``."""
