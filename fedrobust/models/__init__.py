"""Model zoo: a registry from a name to a builder ``(in_channels, num_classes, image_size)``."""

from fedrobust.models.registry import MODEL_NAMES, NORMS, build_model, count_parameters, model_for, register

__all__ = ["MODEL_NAMES", "NORMS", "build_model", "count_parameters", "model_for", "register"]
