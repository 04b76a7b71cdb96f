"""The Flower ClientApp of fedrobust (filled by the federation issue).

A thin layer: it reads its partition from the node config, calls ``fedrobust`` to train
locally with adversarial augmentation, and answers with weights and metrics.
"""
