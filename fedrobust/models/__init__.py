"""Model zoo: a registry from a name to a builder ``(in_channels, num_classes, image_size)``
(``registry``, which knows nothing of the config); a run's models from its config in ``from_config``."""

from fedrobust.models.registry import (
    CLASSIFIERS,
    MODEL_NAMES,
    NORMS,
    SEGMENTERS,
    build_model,
    count_parameters,
    model_kind,
    register,
)

__all__ = ["CLASSIFIERS", "MODEL_NAMES", "NORMS", "SEGMENTERS", "build_model", "count_parameters", "model_kind",
           "register"]
