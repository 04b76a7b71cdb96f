"""One typed, validated experiment configuration that flows one way through fedrobust.

A TOML file is merged onto the defaults below, then ``--set section.key=value`` overrides are
applied, then every value is type-checked and range-checked. Any problem fails at load time with
the offending key named, so a long run never dies an hour in on a typo.
"""

from __future__ import annotations

import dataclasses
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fedrobust.errors import ConfigError

AUGMENT_MODES = ("none", "fgsm", "invfgsm", "both", "pgd")
CLASSIC_AUGMENTS = ("flip", "rotation", "crop", "jitter")
PARTITION_SCHEMES = ("iid", "dirichlet", "shards")


@dataclass
class RunSection:
    """Naming, seeding and where results go."""

    name: str = "run"
    seed: int = 0
    out_dir: str = "runs"
    dir: str = ""  # explicit run directory (set by `fedrobust simulate`); "" = new one under out_dir
    threads: int = 0  # torch intra-op threads; 0 keeps torch's default


@dataclass
class DataSection:
    """Which MedMNIST set and how its images are shaped for the model."""

    dataset: str = "breastmnist"
    root: str = ""  # "" -> $FEDROBUST_DATA_ROOT -> medmnist's ~/.medmnist
    image_size: int = 28  # 28 is native; other sizes are resized (densenet121 needs >= 29)
    as_rgb: bool = False  # replicate grey images to 3 channels (ImageNet-style models)
    download: bool = True
    verify_md5: bool = True


@dataclass
class PartitionSection:
    """How the training split is divided among federated clients."""

    scheme: str = "iid"
    num_clients: int = 5
    alpha: float = 0.5  # Dirichlet concentration (label skew grows as alpha shrinks)
    labels_per_client: int = 1  # for scheme = "shards"
    min_samples: int = 10


@dataclass
class ModelSection:
    """Architecture from the registry and optional local weights."""

    name: str = "resnet18"
    pretrained: str = ""  # path to a local state_dict file; "" = random init
    small_stem: bool = False  # 3x3 stride-1 stem without max-pool (slower, for tiny images)
    norm: str = "batch"  # "group": GroupNorm instead of BatchNorm (robust to non-IID clients)


@dataclass
class TrainSection:
    """Optimisation settings for one training run (centralized) or one local update."""

    epochs: int = 10
    batch_size: int = 64
    lr: float = 1e-3
    optimizer: str = "adam"
    momentum: float = 0.9
    weight_decay: float = 0.0
    scheduler: str = "cosine"
    select: str = "val_auc"  # checkpoint to report: best by val AUC, best by val acc, or last
    # "balanced": each sample's loss weighted by n / (C * n_class) of the whole training split
    class_weights: str = "none"
    # "client_prior": a federated client trains on logits + log(its class prior / the training split's),
    # so label-skewed shards stop biasing the shared model (fedrobust/train/prior.py)
    logit_adjustment: str = "none"


@dataclass
class AugmentSection:
    """Adversarial (and classic) augmentation used during local training."""

    mode: str = "none"
    eps: float = 0.001
    eps_sampling: str = "fixed"  # "uniform": per-sample eps ~ U(0, eps]
    fraction: float = 1.0  # share of each batch that gets augmented
    combine: str = "append"  # "append" adversarial copies or "replace" the clean samples
    warmup_epochs: int = 0  # clean epochs before augmentation starts
    fused: bool = False  # reuse the clean backward's input gradient (FGSM / inverse FGSM)
    pgd_steps: int = 3
    pgd_step_size: float = 0.0  # 0 -> 2.5 * eps / steps
    classic: list[str] = field(default_factory=list)
    rotation_degrees: float = 10.0
    crop_padding: int = 2
    jitter: float = 0.2


@dataclass
class EvalSection:
    """Evaluation on held-out splits."""

    batch_size: int = 256
    fgsm_eps: list[float] = field(default_factory=lambda: [0.001, 0.002, 0.003, 0.004, 0.005])


STRATEGIES = ("fedavg", "fedprox", "fedadam", "fedmedian", "fedtrimmedavg", "krum", "multikrum", "bulyan")


@dataclass
class FederationSection:
    """Rounds, the Flower strategy by name, client sampling and per-round evaluation."""

    rounds: int = 3
    strategy: str = "fedavg"
    fraction_train: float = 1.0  # share of clients sampled each round (seeded, by partition id)
    fraction_evaluate: float = 0.0  # share asked for client-side evaluation on their test shard
    local_epochs: int = 1
    proximal_mu: float = 0.01  # fedprox
    trimmed_beta: float = 0.2  # fedtrimmedavg: share cut from each end
    num_malicious: int = 0  # krum / multikrum / bulyan: assumed Byzantine clients
    multikrum_select: int = 2  # multikrum: updates averaged
    server_lr: float = 0.1  # fedadam: server learning rate (eta)
    server_tau: float = 1e-3  # fedadam: adaptivity
    eval_eps: float = 0.003  # FGSM eps of the per-round central robustness check
    alt_fraction: float = 0.0  # share of clients that use [alt_augment] instead of [augment]
    round_timeout: float = 3600.0  # seconds to wait for the replies of one round
    min_replies: int = 1  # fewer usable client updates in a round stops the run (resumable) instead of going on
    keep_checkpoints: int = 2  # per-round global checkpoints kept (the newest)
    select: str = "last"  # final model: last round, or the round best on the server's val split
    # ("val_auc", "val_acc", or "val_fgsm": accuracy under FGSM at eval_eps, against robust overfitting)
    bn_recalibration: str = "none"  # "val": re-estimate BatchNorm stats of each global model on val
    keep_optimizer_state: bool = False  # clients carry their optimizer state (Adam moments) from round to round
    # clients' learning rate across rounds: "constant" (train.lr every round) or "cosine" (train.lr in
    # round 1 down to train.lr * lr_final in the last round), to damp the round-to-round swings late in a run
    lr_schedule: str = "constant"
    lr_final: float = 0.1


@dataclass
class DistillSection:
    """Teacher -> student distillation on the server's own data (Hinton et al. 2015)."""

    enabled: bool = False  # distill right after the last federated round (`fedrobust distill` always runs)
    student: str = "student"  # registry name of the student architecture
    data: str = "val"  # transfer set: "val" (the server's proxy split) or "train" (pooled; not federated)
    epochs: int = 120
    batch_size: int = 64
    lr: float = 2e-3
    optimizer: str = "adam"
    weight_decay: float = 0.0
    temperature: float = 4.0  # softens both outputs; the KL term is scaled by T^2
    alpha: float = 0.3  # weight of cross-entropy on labels; (1 - alpha) on the KL to the teacher
    classic: list[str] = field(default_factory=list)  # random views of the transfer set; off by default:
    # a teacher that never saw flipped/cropped images labels them poorly (measured: docs/results/distillation.md)
    mixup: float = 0.0  # > 0: also distill on mixed image pairs, weight ~ Beta(mixup, mixup) (teacher labels them)
    adversarial: str = "none"  # "fgsm" / "pgd": also match the teacher on inputs crafted against the student
    adv_eps: float = 0.005
    adv_steps: int = 5  # pgd steps
    select: str = "last"  # student to keep: "last", or best by "val_acc"/"val_auc" (only when data = "train")


@dataclass
class ExportSection:
    """ONNX export of student and teacher, parity check, int8 static quantization."""

    enabled: bool = False  # export right after distillation (`fedrobust export` always runs)
    teacher: bool = True  # export the teacher too, so sweeps can compare
    int8: bool = True  # static int8 (QOperator) student, calibrated on the val split
    calibration_size: int = 512  # val images used for calibration (all when fewer)
    per_channel: bool = True  # one weight scale per output channel: per-tensor lost 1.4 points on PneumoniaMNIST
    parity_atol: float = 1e-4  # max |torch - onnxruntime| logit difference allowed on the test split


SWEEP_ATTACKS = ("fgsm", "pgd", "fgsm-margin", "pgd-margin", "transfer-fgsm", "transfer-pgd", "square", "noise",
                 "inv_fgsm")
SWEEP_TARGETS = ("global", "student", "onnx_fp32", "onnx_int8")
REFERENCE_EPS = [0.001, 0.002, 0.003, 0.004, 0.005, 0.0012, 0.0118, 0.1176, 1 / 255, 2 / 255, 4 / 255, 8 / 255]


@dataclass
class SweepSection:
    """Attack sweep over an eps grid against every model a run produced (white-box, transfer, black-box)."""

    enabled: bool = True  # sweep right after training (and after distillation/export when enabled)
    eps: list[float] = field(default_factory=lambda: sorted(REFERENCE_EPS))  # L-inf, pixel units on [0, 1]
    attacks: list[str] = field(default_factory=lambda: list(SWEEP_ATTACKS))
    targets: list[str] = field(default_factory=lambda: list(SWEEP_TARGETS))  # those the run has
    pgd_steps: int = 10
    pgd_restarts: int = 1  # the worst case over restarts counts, per image
    square_queries: int = 300  # score-based black-box budget per image (onnxruntime queries)
    max_images: int = 0  # test images swept (a seeded sample); 0 = the whole test split
    tolerance: float = 0.02  # slack (accuracy) of the sanity checks, for randomness of PGD/Square


@dataclass
class SimulationSection:
    """Flower simulation runtime (Ray backend)."""

    num_cpus: int = 0  # CPUs Ray may use; 0 = all of this machine
    cpus_per_client: int = 1  # Ray CPUs per virtual client (also its torch threads)
    ray_address: str = ""  # "" = start a local Ray; "auto" or "HOST:PORT" = join a Ray cluster
    startup_timeout: float = 120.0  # seconds for the SuperLink and all virtual nodes to come up
    verbose: bool = False  # pass Flower's own logs through to the terminal


@dataclass
class FaultsSection:
    """Fault injection for tests and drills: which partitions misbehave."""

    fail_partitions: list[int] = field(default_factory=list)  # raise during local training
    nonfinite_partitions: list[int] = field(default_factory=list)  # send NaN weights
    stop_after_round: int = 0  # server stops (as if killed) after checkpointing this round; 0 = never


@dataclass
class ExperimentConfig:
    """The whole experiment; sections mirror the TOML tables."""

    run: RunSection = field(default_factory=RunSection)
    data: DataSection = field(default_factory=DataSection)
    partition: PartitionSection = field(default_factory=PartitionSection)
    model: ModelSection = field(default_factory=ModelSection)
    train: TrainSection = field(default_factory=TrainSection)
    augment: AugmentSection = field(default_factory=AugmentSection)
    alt_augment: AugmentSection = field(default_factory=AugmentSection)
    eval: EvalSection = field(default_factory=EvalSection)
    federation: FederationSection = field(default_factory=FederationSection)
    distill: DistillSection = field(default_factory=DistillSection)
    export: ExportSection = field(default_factory=ExportSection)
    sweep: SweepSection = field(default_factory=SweepSection)
    simulation: SimulationSection = field(default_factory=SimulationSection)
    faults: FaultsSection = field(default_factory=FaultsSection)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _check_type(key: str, value: Any, hint: Any) -> Any:
    """Return ``value`` coerced to ``hint`` (int -> float only) or raise ConfigError."""
    origin = typing.get_origin(hint)
    if origin is list:
        (item,) = typing.get_args(hint)
        if isinstance(value, str):  # flat configs (Flower run_config) carry lists as strings
            value = _parse_list(value)
        if not isinstance(value, list):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        return [_check_type(f"{key}[{i}]", v, item) for i, v in enumerate(value)]
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint is int and isinstance(value, bool):
        raise ConfigError(f"{key}: expected an integer, got {value!r}")
    if not isinstance(value, hint):
        raise ConfigError(f"{key}: expected {hint.__name__}, got {type(value).__name__} {value!r}")
    return value


def _parse_list(raw: str) -> Any:
    """'[0.1, 0.2]' (TOML) or '0.1,0.2' or '' -> list; anything else is returned unchanged."""
    text = raw.strip()
    if not text:
        return []
    if not text.startswith("["):
        text = "[" + ",".join(_quote_word(w) for w in text.split(",")) + "]"
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return raw


def _quote_word(word: str) -> str:
    word = word.strip()
    try:
        tomllib.loads(f"v = {word}")
        return word
    except tomllib.TOMLDecodeError:
        return f'"{word}"'


def _build_section(name: str, cls: type, values: dict[str, Any]) -> Any:
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(
            f"{name}.{unknown[0]}: unknown key; valid keys in [{name}] are {', '.join(sorted(known))}"
        )
    kwargs = {k: _check_type(f"{name}.{k}", v, hints[k]) for k, v in values.items()}
    return cls(**kwargs)


def _parse_value(raw: str) -> Any:
    """Parse an override as a TOML value; bare words are strings (``model.name=resnet18``)."""
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw


def apply_overrides(tree: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``section.key=value`` strings onto a nested dict (in place) and return it."""
    for item in overrides:
        key, sep, raw = item.partition("=")
        section, dot, leaf = key.strip().partition(".")
        if not sep or not dot or not leaf:
            raise ConfigError(f"--set {item!r}: expected section.key=value, e.g. train.lr=0.01")
        tree.setdefault(section, {})[leaf] = _parse_value(raw.strip())
    return tree


def from_dict(tree: dict[str, Any], check: bool = True) -> ExperimentConfig:
    """Build a config from a nested dict (e.g. parsed TOML); ``check=False`` leaves out
    ``validate`` (types are still checked), for a caller that validates a moment later."""
    sections = {f.name: f.type for f in dataclasses.fields(ExperimentConfig)}
    hints = typing.get_type_hints(ExperimentConfig)
    unknown = sorted(set(tree) - set(sections))
    if unknown:
        raise ConfigError(f"[{unknown[0]}]: unknown section; valid sections are {', '.join(sections)}")
    built = {}
    for name, values in tree.items():
        if not isinstance(values, dict):
            raise ConfigError(f"{name}: expected a table [{name}], got {values!r}")
        built[name] = _build_section(name, hints[name], values)
    cfg = ExperimentConfig(**built)
    if check:
        validate(cfg)
    return cfg


def to_flat(cfg: ExperimentConfig) -> dict[str, bool | int | float | str]:
    """``{"section.key": scalar}`` for Flower's run_config (lists become TOML array strings)."""
    flat: dict[str, bool | int | float | str] = {}
    for section, values in cfg.to_dict().items():
        for key, value in values.items():
            flat[f"{section}.{key}"] = (
                "[" + ", ".join(f'"{v}"' if isinstance(v, str) else repr(v) for v in value) + "]"
                if isinstance(value, list) else value
            )
    return flat


def from_flat(flat: dict[str, Any]) -> ExperimentConfig:
    """Inverse of :func:`to_flat`; keys without a dot (Flower's own) are ignored."""
    tree: dict[str, dict[str, Any]] = {}
    for key, value in flat.items():
        section, dot, leaf = key.partition(".")
        if dot:
            tree.setdefault(section, {})[leaf] = value
    return from_dict(tree)


def _merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in top.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def _read_tree(path: Path, seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """Parse a TOML config; a top-level ``extends = "base.toml"`` (relative to the file) is loaded
    first and overridden table by table, so study configs state only what differs."""
    if not path.is_file():
        raise ConfigError(f"config file {path} not found; pass an existing file, e.g. configs/quickstart.toml")
    if path.resolve() in seen:
        raise ConfigError(f"{path}: 'extends' loops back to itself")
    try:
        tree = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc}); fix the syntax at that line") from None
    parent = tree.pop("extends", None)
    if parent is None:
        return tree
    if not isinstance(parent, str):
        raise ConfigError(f"{path}: extends must be a file name, got {parent!r}")
    return _merge(_read_tree(path.parent / parent, (*seen, path.resolve())), tree)


def load_config(path: str | Path | None, overrides: list[str] | None = None, check: bool = True) -> ExperimentConfig:
    """Load a TOML file (or only defaults when ``path`` is None) and apply overrides."""
    tree = _read_tree(Path(path)) if path is not None else {}
    return from_dict(apply_overrides(tree, overrides or []), check)


def _require(ok: bool, key: str, message: str) -> None:
    if not ok:
        raise ConfigError(f"{key}: {message}")


def _one_of(value: str, key: str, choices: tuple[str, ...] | list[str]) -> None:
    _require(value in choices, key, f"got {value!r}; choose one of {', '.join(choices)}")


def validate(cfg: ExperimentConfig) -> None:
    """Range- and choice-check every value; names the first bad key."""
    from fedrobust.data.catalog import check_supported_flag  # local: keeps config import light
    from fedrobust.models.registry import MODEL_NAMES, NORMS

    r, d, p, m, t, e = cfg.run, cfg.data, cfg.partition, cfg.model, cfg.train, cfg.eval
    _require(bool(r.name) and "/" not in r.name, "run.name", "must be a non-empty name without '/'")
    _require(r.threads >= 0, "run.threads", f"must be >= 0, got {r.threads}")
    try:
        check_supported_flag(d.dataset)
    except Exception as exc:
        raise ConfigError(f"data.dataset: {exc}") from None
    _require(8 <= d.image_size <= 224, "data.image_size", f"must be in [8, 224], got {d.image_size}")
    _one_of(p.scheme, "partition.scheme", PARTITION_SCHEMES)
    _require(p.num_clients >= 1, "partition.num_clients", f"must be >= 1, got {p.num_clients}")
    _require(p.alpha > 0, "partition.alpha", f"must be > 0, got {p.alpha}")
    _require(p.labels_per_client >= 1, "partition.labels_per_client", "must be >= 1")
    _require(p.min_samples >= 1, "partition.min_samples", f"must be >= 1, got {p.min_samples}")
    _one_of(m.name, "model.name", MODEL_NAMES)
    _one_of(m.norm, "model.norm", NORMS)
    _require(not (m.norm != "batch" and m.name == "densenet121"), "model.norm",
             "torchvision's densenet121 has no norm_layer option; use norm = 'batch'")
    if m.pretrained:
        _require(Path(m.pretrained).is_file(), "model.pretrained", f"file {m.pretrained} not found")
    _require(t.epochs >= 1, "train.epochs", f"must be >= 1, got {t.epochs}")
    _require(t.batch_size >= 1, "train.batch_size", f"must be >= 1, got {t.batch_size}")
    _require(t.lr > 0, "train.lr", f"must be > 0, got {t.lr}")
    _require(0 <= t.momentum < 1, "train.momentum", f"must be in [0, 1), got {t.momentum}")
    _require(t.weight_decay >= 0, "train.weight_decay", f"must be >= 0, got {t.weight_decay}")
    _one_of(t.optimizer, "train.optimizer", ("adam", "adamw", "sgd"))
    _one_of(t.scheduler, "train.scheduler", ("cosine", "none"))
    _one_of(t.select, "train.select", ("val_auc", "val_acc", "last"))
    _one_of(t.class_weights, "train.class_weights", ("none", "balanced"))
    _one_of(t.logit_adjustment, "train.logit_adjustment", ("none", "client_prior"))
    _validate_augment(cfg.augment, "augment")
    _validate_augment(cfg.alt_augment, "alt_augment")
    _require(e.batch_size >= 1, "eval.batch_size", "must be >= 1")
    for i, eps in enumerate(e.fgsm_eps):
        _require(0 <= eps <= 1, f"eval.fgsm_eps[{i}]", f"must be in [0, 1], got {eps}")
    _validate_federation(cfg)
    _validate_distill(cfg)
    _validate_sweep(cfg)


def _validate_augment(a: AugmentSection, name: str) -> None:
    _one_of(a.mode, f"{name}.mode", AUGMENT_MODES)
    _require(a.eps >= 0, f"{name}.eps", f"must be >= 0, got {a.eps}")
    _require(a.eps <= 1, f"{name}.eps", f"is in pixel units on [0, 1]; got {a.eps}")
    _one_of(a.eps_sampling, f"{name}.eps_sampling", ("fixed", "uniform"))
    _require(0 < a.fraction <= 1, f"{name}.fraction", f"must be in (0, 1], got {a.fraction}")
    _one_of(a.combine, f"{name}.combine", ("append", "replace"))
    _require(a.warmup_epochs >= 0, f"{name}.warmup_epochs", "must be >= 0")
    _require(a.pgd_steps >= 1, f"{name}.pgd_steps", "must be >= 1")
    _require(a.pgd_step_size >= 0, f"{name}.pgd_step_size", "must be >= 0")
    for i, aug in enumerate(a.classic):
        _one_of(aug, f"{name}.classic[{i}]", CLASSIC_AUGMENTS)
    if a.fused:
        _require(a.mode != "pgd", f"{name}.fused",
                 "works with the one-step modes fgsm, invfgsm and both, not pgd (several gradient steps)")
        _require(a.combine == "append", f"{name}.fused",
                 "needs combine = 'append' (the clean samples must be trained on to reuse their gradient)")


def _validate_distill(cfg: ExperimentConfig) -> None:
    from fedrobust.models.registry import MODEL_NAMES

    d, e = cfg.distill, cfg.export
    _one_of(d.student, "distill.student", MODEL_NAMES)
    _one_of(d.data, "distill.data", ("val", "train"))
    _require(d.epochs >= 1, "distill.epochs", f"must be >= 1, got {d.epochs}")
    _require(d.batch_size >= 2, "distill.batch_size", f"must be >= 2 (BatchNorm), got {d.batch_size}")
    _require(d.lr > 0, "distill.lr", f"must be > 0, got {d.lr}")
    _one_of(d.optimizer, "distill.optimizer", ("adam", "adamw", "sgd"))
    _require(d.temperature > 0, "distill.temperature", f"must be > 0, got {d.temperature}")
    _require(0 <= d.alpha <= 1, "distill.alpha", f"must be in [0, 1], got {d.alpha}")
    for i, name in enumerate(d.classic):
        _one_of(name, f"distill.classic[{i}]", CLASSIC_AUGMENTS)
    _require(d.mixup >= 0, "distill.mixup", f"must be >= 0, got {d.mixup}")
    _one_of(d.adversarial, "distill.adversarial", ("none", "fgsm", "pgd"))
    _require(0 < d.adv_eps <= 1, "distill.adv_eps", f"must be in (0, 1], got {d.adv_eps}")
    _require(d.adv_steps >= 1, "distill.adv_steps", f"must be >= 1, got {d.adv_steps}")
    _one_of(d.select, "distill.select", ("last", "val_acc", "val_auc"))
    _require(d.select == "last" or d.data != "val", "distill.select",
             "cannot select on val when distilling on val; use select = 'last' or data = 'train'")
    _require(not e.enabled or d.enabled, "export.enabled",
             "exports the distilled student, so it needs distill.enabled = true (or run `fedrobust export` later)")
    _require(e.calibration_size >= 1, "export.calibration_size", f"must be >= 1, got {e.calibration_size}")
    _require(e.parity_atol > 0, "export.parity_atol", f"must be > 0, got {e.parity_atol}")


def _validate_sweep(cfg: ExperimentConfig) -> None:
    w = cfg.sweep
    _require(len(w.eps) >= 1, "sweep.eps", "needs at least one eps")
    for i, eps in enumerate(w.eps):
        _require(0 < eps <= 1, f"sweep.eps[{i}]", f"must be in (0, 1], got {eps}")
    _require(len(w.attacks) >= 1, "sweep.attacks", "needs at least one attack")
    for i, name in enumerate(w.attacks):
        _one_of(name, f"sweep.attacks[{i}]", SWEEP_ATTACKS)
    _require(len(w.targets) >= 1, "sweep.targets", "needs at least one target")
    for i, name in enumerate(w.targets):
        _one_of(name, f"sweep.targets[{i}]", SWEEP_TARGETS)
    _require(w.pgd_steps >= 1, "sweep.pgd_steps", f"must be >= 1, got {w.pgd_steps}")
    _require(w.pgd_restarts >= 1, "sweep.pgd_restarts", f"must be >= 1, got {w.pgd_restarts}")
    _require(w.square_queries >= 1, "sweep.square_queries", f"must be >= 1, got {w.square_queries}")
    _require(w.max_images >= 0, "sweep.max_images", f"must be >= 0, got {w.max_images}")
    _require(0 <= w.tolerance < 1, "sweep.tolerance", f"must be in [0, 1), got {w.tolerance}")


def _validate_federation(cfg: ExperimentConfig) -> None:
    f, sim, p = cfg.federation, cfg.simulation, cfg.partition
    _require(f.rounds >= 1, "federation.rounds", f"must be >= 1, got {f.rounds}")
    _one_of(f.strategy, "federation.strategy", STRATEGIES)
    _require(0 < f.fraction_train <= 1, "federation.fraction_train", f"must be in (0, 1], got {f.fraction_train}")
    _require(0 <= f.fraction_evaluate <= 1, "federation.fraction_evaluate",
             f"must be in [0, 1], got {f.fraction_evaluate}")
    _require(f.local_epochs >= 1, "federation.local_epochs", f"must be >= 1, got {f.local_epochs}")
    _require(f.min_replies >= 1, "federation.min_replies", f"must be >= 1, got {f.min_replies}")
    _require(f.proximal_mu >= 0, "federation.proximal_mu", f"must be >= 0, got {f.proximal_mu}")
    _require(0 <= f.trimmed_beta < 0.5, "federation.trimmed_beta", f"must be in [0, 0.5), got {f.trimmed_beta}")
    _require(f.num_malicious >= 0, "federation.num_malicious", f"must be >= 0, got {f.num_malicious}")
    _require(f.multikrum_select >= 1, "federation.multikrum_select", "must be >= 1")
    _require(f.server_lr > 0, "federation.server_lr", f"must be > 0, got {f.server_lr}")
    _require(f.server_tau > 0, "federation.server_tau", f"must be > 0, got {f.server_tau}")
    _require(0 <= f.eval_eps <= 1, "federation.eval_eps", f"must be in [0, 1], got {f.eval_eps}")
    _require(0 <= f.alt_fraction <= 1, "federation.alt_fraction", f"must be in [0, 1], got {f.alt_fraction}")
    _require(f.round_timeout > 0, "federation.round_timeout", "must be > 0")
    _require(f.keep_checkpoints >= 1, "federation.keep_checkpoints", "must be >= 1")
    _one_of(f.select, "federation.select", ("last", "val_auc", "val_acc", "val_fgsm"))
    _one_of(f.bn_recalibration, "federation.bn_recalibration", ("none", "val"))
    _one_of(f.lr_schedule, "federation.lr_schedule", ("constant", "cosine"))
    _require(0 < f.lr_final <= 1, "federation.lr_final", f"must be in (0, 1] (a factor of train.lr), got {f.lr_final}")
    _require(sim.num_cpus >= 0, "simulation.num_cpus", f"must be >= 0, got {sim.num_cpus}")
    _require(sim.cpus_per_client > 0, "simulation.cpus_per_client", f"must be > 0, got {sim.cpus_per_client}")
    _require(sim.startup_timeout > 0, "simulation.startup_timeout", "must be > 0")
    for name in ("fail_partitions", "nonfinite_partitions"):
        for i, pid in enumerate(getattr(cfg.faults, name)):
            _require(0 <= pid < p.num_clients, f"faults.{name}[{i}]",
                     f"partition {pid} does not exist with {p.num_clients} clients")
