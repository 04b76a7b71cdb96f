"""Model zoo: a registry from a name to a builder ``(in_channels, num_classes, image_size)``
(``registry``, which knows nothing of the config); a run's models from its config in ``from_config``."""

from fedrobust.models.registry import MODEL_NAMES, NORMS, build_model, count_parameters, register

__all__ = ["MODEL_NAMES", "NORMS", "build_model", "count_parameters", "register"]
