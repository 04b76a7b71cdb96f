"""Range and choice checks of a typed config; the first bad key is named with what would fix it."""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

from fedrobust.config.schema import (
    ADVERSARY_KINDS,
    AUGMENT_MODES,
    CLASSIC_AUGMENTS,
    STRATEGIES,
    SWEEP_TARGETS,
    AugmentSection,
    ExperimentConfig,
)
from fedrobust.errors import ConfigError

if TYPE_CHECKING:
    from fedrobust.tasks.specs import TaskSpec


def _require(ok: bool, key: str, message: str) -> None:
    if not ok:
        raise ConfigError(f"{key}: {message}")


def _one_of(value: object, key: str, choices: tuple | list) -> None:
    _require(value in choices, key, f"got {value!r}; choose one of {', '.join(map(str, choices))}")


def validate(cfg: ExperimentConfig) -> None:
    """Range- and choice-check every value; names the first bad key."""
    from fedrobust.models.registry import NORMS
    from fedrobust.tasks.specs import SPECS  # local: the tasks package imports the config schema

    r, d, p, m, t, e = cfg.run, cfg.data, cfg.partition, cfg.model, cfg.train, cfg.eval
    _require(bool(r.name) and "/" not in r.name, "run.name", "must be a non-empty name without '/'")
    _require(r.threads >= 0, "run.threads", f"must be >= 0, got {r.threads}")
    _require(r.device in ("auto", "cpu", "cuda") or re.fullmatch(r"cuda:\d+", r.device) is not None, "run.device",
             f"got {r.device!r}; choose auto, cpu, cuda or cuda:N")
    _one_of(d.task, "data.task", tuple(SPECS))
    spec = SPECS[d.task]
    spec.check_data(d)
    _one_of(p.scheme, "partition.scheme", spec.schemes)
    _require(p.num_clients >= 1, "partition.num_clients", f"must be >= 1, got {p.num_clients}")
    _require(p.alpha > 0, "partition.alpha", f"must be > 0, got {p.alpha}")
    _require(p.labels_per_client >= 1, "partition.labels_per_client", "must be >= 1")
    _require(p.min_samples >= 1, "partition.min_samples", f"must be >= 1, got {p.min_samples}")
    _one_of(m.name, "model.name", _models(spec))
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
    _one_of(t.select, "train.select", tuple(s for s in spec.selects if s != "val_fgsm"))
    _one_of(t.class_weights, "train.class_weights", ("none", "balanced"))
    _one_of(t.logit_adjustment, "train.logit_adjustment", ("none", "client_prior"))
    if d.task != "classification":
        for key, value in (("class_weights", t.class_weights), ("logit_adjustment", t.logit_adjustment)):
            _require(value == "none", f"train.{key}", f"weighs classes of labels; {d.task} has none: use 'none'")
    _validate_augment(cfg.augment, "augment")
    _validate_augment(cfg.alt_augment, "alt_augment")
    _require(e.batch_size >= 1, "eval.batch_size", "must be >= 1")
    for i, eps in enumerate(e.fgsm_eps):
        _require(0 <= eps <= 1, f"eval.fgsm_eps[{i}]", f"must be in [0, 1], got {eps}")
    _validate_federation(cfg)
    _validate_distill(cfg)
    _validate_sweep(cfg)


def _models(spec: TaskSpec) -> tuple[str, ...]:
    from fedrobust.models.registry import MODEL_NAMES, model_kind

    return tuple(n for n in MODEL_NAMES if model_kind(n) == spec.model_kind)


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
    from fedrobust.tasks.specs import SPECS  # local: the tasks package imports the config schema
    d, e = cfg.distill, cfg.export
    spec = SPECS[cfg.data.task]
    _one_of(d.student, "distill.student", _models(spec))
    _one_of(d.data, "distill.data", ("val", "train"))
    _require(d.epochs >= 1, "distill.epochs", f"must be >= 1, got {d.epochs}")
    _require(d.batch_size >= 2, "distill.batch_size", f"must be >= 2 (BatchNorm), got {d.batch_size}")
    _require(d.lr > 0, "distill.lr", f"must be > 0, got {d.lr}")
    _one_of(d.optimizer, "distill.optimizer", ("adam", "adamw", "sgd"))
    _require(d.temperature > 0, "distill.temperature", f"must be > 0, got {d.temperature}")
    _require(0 <= d.alpha <= 1, "distill.alpha", f"must be in [0, 1], got {d.alpha}")
    for i, name in enumerate(d.classic):
        _one_of(name, f"distill.classic[{i}]", CLASSIC_AUGMENTS)
    _one_of(d.adversarial, "distill.adversarial", ("none", "fgsm", "pgd"))
    _require(0 < d.adv_eps <= 1, "distill.adv_eps", f"must be in (0, 1], got {d.adv_eps}")
    _require(d.adv_steps >= 1, "distill.adv_steps", f"must be >= 1, got {d.adv_steps}")
    _one_of(d.select, "distill.select", tuple(s for s in spec.selects if s != "val_fgsm"))
    _require(d.select == "last" or d.data != "val", "distill.select",
             "cannot select on val when distilling on val; use select = 'last' or data = 'train'")
    _require(not e.enabled or d.enabled, "export.enabled",
             "exports the distilled student, so it needs distill.enabled = true (or run `fedrobust export` later)")
    _require(e.calibration_size >= 1, "export.calibration_size", f"must be >= 1, got {e.calibration_size}")
    _require(e.parity_atol > 0, "export.parity_atol", f"must be > 0, got {e.parity_atol}")


def _validate_sweep(cfg: ExperimentConfig) -> None:
    from fedrobust.tasks.specs import SPECS  # local: the tasks package imports the config schema
    w = cfg.sweep
    _require(len(w.eps) >= 1, "sweep.eps", "needs at least one eps")
    for i, eps in enumerate(w.eps):
        _require(0 < eps <= 1, f"sweep.eps[{i}]", f"must be in (0, 1], got {eps}")
    _require(len(w.attacks) >= 1, "sweep.attacks", "needs at least one attack")
    for i, name in enumerate(w.attacks):
        _require(name != "inv_fgsm", f"sweep.attacks[{i}]", "inv_fgsm is spelled invfgsm (as augment.mode)")
        _one_of(name, f"sweep.attacks[{i}]", SPECS[cfg.data.task].attacks)
    _require(len(w.targets) >= 1, "sweep.targets", "needs at least one target")
    for i, name in enumerate(w.targets):
        _one_of(name, f"sweep.targets[{i}]", SWEEP_TARGETS)
    _require(w.pgd_steps >= 1, "sweep.pgd_steps", f"must be >= 1, got {w.pgd_steps}")
    _require(w.pgd_restarts >= 1, "sweep.pgd_restarts", f"must be >= 1, got {w.pgd_restarts}")
    _require(w.apgd_steps >= 1, "sweep.apgd_steps", f"must be >= 1, got {w.apgd_steps}")
    _require(w.apgd_restarts >= 1, "sweep.apgd_restarts", f"must be >= 1, got {w.apgd_restarts}")
    _require(w.square_queries >= 1, "sweep.square_queries", f"must be >= 1, got {w.square_queries}")
    _require(w.max_images >= 0, "sweep.max_images", f"must be >= 0, got {w.max_images}")
    _require(0 <= w.tolerance < 1, "sweep.tolerance", f"must be in [0, 1), got {w.tolerance}")


def _validate_federation(cfg: ExperimentConfig) -> None:
    from fedrobust.tasks.specs import SPECS  # local: the tasks package imports the config schema
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
    _require(f.clip_norm >= 0, "federation.clip_norm", f"must be >= 0 (0 = the round's median), got {f.clip_norm}")
    _require(f.server_lr > 0, "federation.server_lr", f"must be > 0, got {f.server_lr}")
    _require(f.server_tau > 0, "federation.server_tau", f"must be > 0, got {f.server_tau}")
    _require(0 <= f.eval_eps <= 1, "federation.eval_eps", f"must be in [0, 1], got {f.eval_eps}")
    _require(0 <= f.alt_fraction <= 1, "federation.alt_fraction", f"must be in [0, 1], got {f.alt_fraction}")
    _require(f.round_timeout > 0, "federation.round_timeout", "must be > 0")
    _require(f.keep_checkpoints >= 1, "federation.keep_checkpoints", "must be >= 1")
    _one_of(f.select, "federation.select", SPECS[cfg.data.task].selects)
    _one_of(f.bn_recalibration, "federation.bn_recalibration", ("none", "val"))
    _require(sim.num_cpus >= 0, "simulation.num_cpus", f"must be >= 0, got {sim.num_cpus}")
    _require(sim.gpus_per_client >= 0, "simulation.gpus_per_client", f"must be >= 0, got {sim.gpus_per_client}")
    _require(sim.cpus_per_client > 0, "simulation.cpus_per_client", f"must be > 0, got {sim.cpus_per_client}")
    _require(sim.startup_timeout > 0, "simulation.startup_timeout", "must be > 0")
    for name in ("fail_partitions", "nonfinite_partitions"):
        for i, pid in enumerate(getattr(cfg.faults, name)):
            _require(0 <= pid < p.num_clients, f"faults.{name}[{i}]",
                     f"partition {pid} does not exist with {p.num_clients} clients")
    _validate_adversary(cfg)


# aggregators that tolerate a malicious minority, and the largest count f they take of n clients
_TOLERANCE = {"fedmedian": lambda n: (n - 1) // 2, "fedtrimmedavg": lambda n: (n - 1) // 2,
              "krum": lambda n: (n - 3) // 2, "multikrum": lambda n: (n - 3) // 2, "bulyan": lambda n: (n - 3) // 4}


def _validate_adversary(cfg: ExperimentConfig) -> None:
    from fedrobust.tasks.specs import SPECS  # local: the tasks package imports the config schema
    a, n = cfg.adversary, cfg.partition.num_clients
    _one_of(a.kind, "adversary.kind", ADVERSARY_KINDS)
    _require(0 <= a.share < 1, "adversary.share", f"must be in [0, 1), got {a.share}")
    _require(not (a.share and a.partitions), "adversary.share",
             "give either a share or explicit adversary.partitions, not both")
    for i, pid in enumerate(a.partitions):
        _require(0 <= pid < n, f"adversary.partitions[{i}]", f"partition {pid} does not exist with {n} clients")
    _require(len(set(a.partitions)) == len(a.partitions), "adversary.partitions", "lists a partition twice")
    _require(a.start_round >= 1, "adversary.start_round", f"must be >= 1, got {a.start_round}")
    _require(a.scale > 0, "adversary.scale", f"must be > 0 (sign_flip already negates), got {a.scale}")
    _require(a.sigma > 0, "adversary.sigma", f"must be > 0, got {a.sigma}")
    _require(a.alie_z >= 0, "adversary.alie_z", f"must be >= 0 (0 = Baruch et al.'s z_max), got {a.alie_z}")
    _require(0 < a.eps <= 1, "adversary.eps", f"must be in (0, 1], got {a.eps}")
    _require(0 < a.poison_fraction <= 1, "adversary.poison_fraction", f"must be in (0, 1], got {a.poison_fraction}")
    half = cfg.data.image_size // 2
    _require(1 <= a.trigger_size <= half, "adversary.trigger_size",
             f"must be 1 .. {half} pixels at data.image_size {cfg.data.image_size}, got {a.trigger_size}")
    classes = SPECS[cfg.data.task].classes
    top = classes(cfg.data) - 1 if classes else 0
    _require(0 <= a.target_class <= top, "adversary.target_class",
             f"must be a class id 0 .. {top} of {cfg.data.dataset}, got {a.target_class}")
    if a.kind == "none":
        return
    count = len(a.partitions) if a.partitions else round(a.share * n)
    _require(count >= 1, "adversary.share" if not a.partitions else "adversary.partitions",
             f"adversary.kind = {a.kind!r} but no hospital is malicious ({a.share} x {n} clients rounds to 0)")
    if a.kind in ("alie", "ipm"):
        _require(n - count >= 2, "adversary.share", f"{a.kind} estimates the honest spread: it needs at least 2 "
                 f"honest hospitals, and {count} of {n} are malicious")
    limit = _TOLERANCE.get(cfg.federation.strategy)
    if limit is not None:
        _require(count <= limit(n), "adversary.share",
                 f"{count} malicious of {n} clients is more than {cfg.federation.strategy} tolerates "
                 f"({limit(n)}); use fewer malicious hospitals or more clients")
