"""Robust aggregation that Flower lacks, and the colluding attacks, as functions on flattened updates.

An update is a client's sent weights minus the global weights, over the floating-point entries of the state
dict, flattened to one row. Norm clipping and centered clipping (Karimireddy et al., 2021) and the colluding
attacks ALIE (Baruch et al., 2019) and IPM (Xie et al., 2020) are byzfl's; FLTrust (Cao et al., 2021) is not
in byzfl and is the few lines below. byzfl is imported on first use: it pulls torchvision (through our CPU
remedy), matplotlib and seaborn, seconds that a run without these options should not pay.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

StateDict = dict[str, Any]  # torch tensors or numpy arrays


@functools.cache
def _byzfl() -> Any:
    from fedrobust.tvcompat import import_torchvision

    import_torchvision()  # byzfl imports torchvision at import time
    import byzfl

    return byzfl


def float_keys(state: StateDict) -> list[str]:
    """The entries that are weights (integer buffers, e.g. BatchNorm's batch counter, are not averaged)."""
    return [k for k, v in state.items() if np.issubdtype(np.asarray(v).dtype, np.floating)]


def flatten(sent: list[StateDict], global_state: StateDict) -> np.ndarray:
    """(clients, weights) float32 matrix of updates: sent − global."""
    keys = float_keys(global_state)
    base = np.concatenate([np.asarray(global_state[k], np.float32).ravel() for k in keys])
    return np.stack([np.concatenate([np.asarray(s[k], np.float32).ravel() for k in keys]) - base for s in sent])


def unflatten(update: np.ndarray, global_state: StateDict, like: StateDict) -> dict[str, np.ndarray]:
    """global + ``update`` as a state dict of numpy arrays; integer entries are taken from ``like``."""
    out, offset = {}, 0
    for key, value in global_state.items():
        value = np.asarray(value)
        if np.issubdtype(value.dtype, np.floating):
            out[key] = (value + update[offset:offset + value.size].reshape(value.shape)).astype(value.dtype)
            offset += value.size
        else:
            out[key] = np.asarray(like[key])
    return out


@dataclass
class Aggregate:
    """A defense's result: the aggregated update and which rows it dropped or cut down."""

    update: np.ndarray
    flagged: list[int] = field(default_factory=list)  # rows dropped (FLTrust: trust 0) or clipped
    scores: list[float] = field(default_factory=list)  # per row: the weight the defense gave it


def _median_or(bound: float, distances: np.ndarray) -> float:
    return float(bound) if bound > 0 else float(np.median(distances))


def _clipped(update: np.ndarray, distances: np.ndarray, bound: float) -> Aggregate:
    """``update`` with, per row, the factor min(1, bound / distance) the clipping applied (flagged where < 1)."""
    factor = np.minimum(1.0, bound / np.maximum(distances, 1e-12))
    return Aggregate(np.asarray(update, np.float32), [int(i) for i in np.flatnonzero(factor < 1)],
                     [round(float(f), 6) for f in factor])


def norm_clip(updates: np.ndarray, weights: np.ndarray, bound: float = 0.0) -> Aggregate:
    """Each update scaled to L2 norm ≤ ``bound`` (0: the round's median norm), then FedAvg's weighted mean."""
    norms = np.linalg.norm(updates, axis=1)
    c = _median_or(bound, norms)
    clipped = np.asarray(_byzfl().Clipping(c=c)(updates.copy()))  # clips rows in place
    return _clipped(weights / weights.sum() @ clipped, norms, c)


def centered_clip(updates: np.ndarray, center: np.ndarray | None, bound: float = 0.0,
                  iterations: int = 1) -> Aggregate:
    """Karimireddy et al.'s centered clipping around the previous round's aggregate (``center``; zeros, i.e.
    no change, in round 1): v ← v + mean(clip_τ(u_i − v)). τ = ``bound``, or the median distance to v."""
    v = np.zeros(updates.shape[1], np.float32) if center is None else np.asarray(center, np.float32)
    distances = np.linalg.norm(updates - v, axis=1)
    tau = _median_or(bound, distances)
    rule = _byzfl().CenteredClipping(L=iterations, tau=tau)
    rule.m = v
    return _clipped(rule(updates), distances, tau)


def fltrust(updates: np.ndarray, root: np.ndarray) -> Aggregate:
    """Cao et al.'s FLTrust: each update's trust is ReLU(cos(update, root)), with ``root`` the server's own
    update on its clean split; updates are rescaled to the root's norm and averaged by trust."""
    root_norm = float(np.linalg.norm(root))
    norms = np.linalg.norm(updates, axis=1)
    cos = updates @ root / np.maximum(norms * root_norm, 1e-12)
    trust = np.maximum(cos, 0.0)
    flagged = [int(i) for i in np.flatnonzero(trust == 0)]
    if trust.sum() == 0:
        return Aggregate(np.zeros_like(root, dtype=np.float32), flagged, [0.0] * len(updates))
    scaled = updates * (root_norm / np.maximum(norms, 1e-12))[:, None]
    return Aggregate((trust @ scaled / trust.sum()).astype(np.float32), flagged,
                     [round(float(t), 6) for t in trust])


def alie_z(clients: int, malicious: int) -> float:
    """Baruch et al.'s z_max: the largest shift that still leaves the malicious rows inside the majority a
    median or Krum would pick (s = ⌊n/2 + 1⌋ − f honest clients must sit farther from the mean)."""
    from scipy.stats import norm

    s = math.floor(clients / 2 + 1) - malicious
    return float(norm.ppf((clients - s) / clients))


def colluding_update(kind: str, honest: np.ndarray, clients: int, malicious: int, scale: float,
                     z: float = 0.0) -> np.ndarray:
    """The one update every colluding client sends, computed from the round's honest updates (rows)."""
    byzfl = _byzfl()
    if kind == "alie":
        return np.asarray(byzfl.ALittleIsEnough(tau=float(z or alie_z(clients, malicious)))(honest), np.float32)
    if kind == "ipm":
        return np.asarray(byzfl.InnerProductManipulation(tau=float(scale))(honest), np.float32)
    raise ValueError(f"adversary.kind {kind!r} is not a colluding attack")


def detection(flagged: set[int], malicious: set[int], present: set[int]) -> dict[str, float | None]:
    """Precision and recall of a defense's flags against the true malicious clients of the round (None where
    undefined: nothing flagged, or no attacker present; metrics.jsonl stays valid JSON)."""
    bad = malicious & present
    hits = len(flagged & bad)
    return {"precision": hits / len(flagged) if flagged else None, "recall": hits / len(bad) if bad else None}
