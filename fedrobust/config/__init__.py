"""One typed, validated experiment configuration that flows one way through fedrobust:
the schema (``schema``), reading TOML / overrides / Flower's flat run config (``parse``), and the
range checks (``validate``)."""

from fedrobust.config.parse import apply_overrides, from_dict, from_flat, load_config, to_flat
from fedrobust.config.schema import (
    AUGMENT_MODES,
    CLASSIC_AUGMENTS,
    REFERENCE_EPS,
    STRATEGIES,
    SWEEP_ATTACKS,
    SWEEP_TARGETS,
    AugmentSection,
    DataSection,
    DistillSection,
    EvalSection,
    ExperimentConfig,
    ExportSection,
    FaultsSection,
    FederationSection,
    ModelSection,
    PartitionSection,
    RunSection,
    SimulationSection,
    SweepSection,
    TrainSection,
)
from fedrobust.config.validate import validate

__all__ = [
    "AUGMENT_MODES", "CLASSIC_AUGMENTS", "REFERENCE_EPS", "STRATEGIES", "SWEEP_ATTACKS", "SWEEP_TARGETS",
    "AugmentSection", "DataSection", "DistillSection", "EvalSection", "ExperimentConfig", "ExportSection",
    "FaultsSection", "FederationSection", "ModelSection", "PartitionSection", "RunSection", "SimulationSection",
    "SweepSection", "TrainSection", "apply_overrides", "from_dict", "from_flat", "load_config", "to_flat", "validate",
]
