"""The Flower ClientApp of fedrobust: Flower messages in, ``fedrobust.federated.LocalClient`` calls out."""
