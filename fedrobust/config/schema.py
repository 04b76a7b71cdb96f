"""The experiment's schema: one dataclass per TOML table, each key with its default and meaning.

Parsing lives in ``fedrobust.config.parse``, range and choice checks in ``fedrobust.config.validate``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

AUGMENT_MODES = ("none", "fgsm", "invfgsm", "both", "pgd")
CLASSIC_AUGMENTS = ("flip", "rotation", "crop", "jitter")


@dataclass
class RunSection:
    """Naming, seeding and where results go."""

    name: str = "run"
    seed: int = 0
    out_dir: str = "runs"
    dir: str = ""  # explicit run directory (set by `fedrobust simulate`); "" = new one under out_dir
    threads: int = 0  # torch intra-op threads; 0 keeps torch's default
    device: str = "auto"  # "auto" (CUDA when torch sees it), "cpu", "cuda" or "cuda:N"; ONNX export runs on the CPU


@dataclass
class DataSection:
    """Which data set, for which task, and how its images are shaped for the model."""

    dataset: str = "breastmnist"  # a MedMNIST flag; for segmentation, the folder under the root (kvasir-seg)
    # classification: "" -> $FEDROBUST_DATA_ROOT -> medmnist's ~/.medmnist;
    # segmentation: "" -> $FEDROBUST_SEG_ROOT -> ~/.fedrobust/segmentation
    root: str = ""
    size: int = 28  # which MedMNIST+ file: 28 ({flag}.npz), 64, 128 or 224 ({flag}_{size}.npz)
    image_size: int = 28  # what the model sees; images of another size are resized (densenet121 needs >= 29)
    as_rgb: bool = False  # replicate grey images to 3 channels (ImageNet-style models)
    download: bool = True
    verify_md5: bool = True
    task: str = "classification"  # or "segmentation" (binary masks; its defaults: fedrobust/tasks/specs.py)


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


STRATEGIES = ("fedavg", "fedprox", "fedadam", "fedmedian", "fedtrimmedavg", "krum", "multikrum", "bulyan",
              "normclip", "centeredclip", "fltrust")  # the last three: fedrobust.federated.robust


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
    clip_norm: float = 0.0  # normclip: L2 bound of each update; centeredclip: radius around the last aggregate
    # (tau); 0 = the median of the round's norms (distances), so no scale has to be known in advance
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
                 "invfgsm", "apgd-ce", "apgd-dlr", "apgd-margin", "apgd-loss", "autoattack")
# the default sweep: all but APGD-DLR (>= 3 classes only) and margin APGD, which autoattack runs by itself, and the
# schedule-only APGD on a per-image loss, which is for masks (ART's APGD covers classifiers)
DEFAULT_ATTACKS = tuple(a for a in SWEEP_ATTACKS if a not in ("apgd-dlr", "apgd-margin", "apgd-loss"))
SWEEP_TARGETS = ("global", "student", "onnx_fp32", "onnx_int8")
REFERENCE_EPS = [0.001, 0.002, 0.003, 0.004, 0.005, 0.0012, 0.0118, 0.1176, 1 / 255, 2 / 255, 4 / 255, 8 / 255]


@dataclass
class SweepSection:
    """Attack sweep over an eps grid against every model a run produced (white-box, transfer, black-box)."""

    enabled: bool = True  # sweep right after training (and after distillation/export when enabled)
    eps: list[float] = field(default_factory=lambda: sorted(REFERENCE_EPS))  # L-inf, pixel units on [0, 1]
    attacks: list[str] = field(default_factory=lambda: list(DEFAULT_ATTACKS))
    targets: list[str] = field(default_factory=lambda: list(SWEEP_TARGETS))  # those the run has
    pgd_steps: int = 10
    pgd_restarts: int = 1  # the worst case over restarts counts, per image
    apgd_steps: int = 100  # APGD iterations (AutoAttack's standard)
    apgd_restarts: int = 1  # APGD random restarts, each only on the images still classified correctly
    square_queries: int = 300  # Square iterations (ART asks the model ~3 batches per iteration; mean_queries says)
    corruptions: bool = True  # also score every target on 11 common corruptions x 5 severities (corruptions.csv)
    max_images: int = 0  # test images swept (a seeded sample); 0 = the whole test split
    tolerance: float = 0.02  # slack (accuracy) of the sanity checks, for randomness of PGD/Square


@dataclass
class SimulationSection:
    """Flower simulation runtime (Ray backend)."""

    num_cpus: int = 0  # CPUs Ray may use; 0 = all of this machine
    cpus_per_client: int = 1  # Ray CPUs per virtual client (also its torch threads)
    gpus_per_client: float = 0.0  # Ray GPU share per virtual client (0.25: four share a GPU); 0 = clients on the CPU
    ray_address: str = ""  # "" = start a local Ray; "auto" or "HOST:PORT" = join a Ray cluster
    startup_timeout: float = 120.0  # seconds for the SuperLink and all virtual nodes to come up
    verbose: bool = False  # pass Flower's own logs through to the terminal


@dataclass
class FaultsSection:
    """Fault injection for tests and drills: which partitions misbehave."""

    fail_partitions: list[int] = field(default_factory=list)  # raise during local training
    nonfinite_partitions: list[int] = field(default_factory=list)  # send NaN weights
    stop_after_round: int = 0  # server stops (as if killed) after checkpointing this round; 0 = never


ADVERSARY_KINDS = ("none", "label_flip", "adv_poison", "backdoor", "sign_flip", "scale", "gaussian", "alie", "ipm")


@dataclass
class AdversarySection:
    """Poisoning: malicious hospitals and what they do (off unless a config says so)."""

    kind: str = "none"  # label_flip, adv_poison, backdoor (its data) | sign_flip, scale, gaussian (the update sent)
    # | alie, ipm (colluding:
    # they know the round's honest updates, so the server side simulates them before aggregation) | none
    share: float = 0.0  # share of hospitals that are malicious, chosen with run.seed; or name them:
    partitions: list[int] = field(default_factory=list)  # explicit malicious partition ids (instead of share)
    start_round: int = 1  # the first round they attack
    scale: float = 10.0  # sign_flip sends -scale x its update, scale sends +scale x (model replacement)
    sigma: float = 0.1  # gaussian: the update sent is N(0, sigma^2) per weight
    # ipm sends -scale x the honest mean update (Xie et al.: small, e.g. 0.5, slips past Krum and the median)
    alie_z: float = 0.0  # alie: honest mean + z x honest std per coordinate; 0 = Baruch et al.'s z_max for n, f
    eps: float = 0.03  # adv_poison: FGSM eps of the copies it adds (crafted on the global model, labels flipped)
    poison_fraction: float = 0.5  # backdoor: share of its images that get the trigger and the target label
    trigger_size: int = 3  # backdoor: side in pixels of the white square stamped in the bottom-right corner
    target_class: int = 0  # backdoor: the label triggered images are trained to (masks: emptied instead)


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
    adversary: AdversarySection = field(default_factory=AdversarySection)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


