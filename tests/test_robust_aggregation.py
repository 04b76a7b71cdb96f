"""Defenses Flower lacks (norm clipping, centered clipping, FLTrust) and the colluding attacks (ALIE, IPM):
each does what its paper says on update matrices, and the round loop logs what they did."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from fedrobust.config import load_config
from fedrobust.federated import robust

REPO = Path(__file__).resolve().parents[1]


def _honest(n: int = 8, d: int = 500, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.normal(0.5, 1.0, d) + rng.normal(0, 0.3, (n, d))).astype(np.float32)


def test_flatten_and_unflatten_round_trip_weights_and_keep_integer_buffers():
    g = {"w": np.ones((2, 3), np.float32), "bn.num_batches_tracked": np.array(5)}
    sent = [{"w": np.full((2, 3), 3.0, np.float32), "bn.num_batches_tracked": np.array(6)}]
    u = robust.flatten(sent, g)
    assert u.shape == (1, 6) and np.all(u == 2)
    back = robust.unflatten(u[0], g, sent[0])
    assert np.array_equal(back["w"], sent[0]["w"]) and back["w"].dtype == np.float32
    assert int(back["bn.num_batches_tracked"]) == 6


def test_alie_stays_inside_the_honest_spread_per_coordinate():
    honest = _honest()
    z = robust.alie_z(10, 2)
    assert z == pytest.approx(0.2533, abs=1e-3)  # Baruch et al.: s = 6 - 2, z = Phi^-1(6 / 10)
    crafted = robust.colluding_update("alie", honest, clients=10, malicious=2, scale=1.0)
    mean, std = honest.mean(0), honest.std(0, ddof=1)
    assert np.all(np.abs(crafted - mean) <= z * std + 1e-5)
    assert np.allclose(crafted, mean + z * std, atol=1e-5)  # pushed the same way on every coordinate
    assert np.all((crafted >= honest.min(0)) & (crafted <= honest.max(0)))  # no coordinate is an outlier


def test_ipm_sends_minus_scale_times_the_honest_mean():
    honest = _honest()
    crafted = robust.colluding_update("ipm", honest, clients=10, malicious=2, scale=0.5)
    np.testing.assert_allclose(crafted, -0.5 * honest.mean(0), rtol=1e-6)


def test_norm_clipping_bounds_a_boosted_update_and_flags_it():
    honest = _honest(n=4)
    updates = np.vstack([honest, 50 * honest[:1]])
    out = robust.norm_clip(updates, np.ones(5))
    norms = np.linalg.norm(updates, axis=1)
    c = np.median(norms)
    assert out.flagged == [int(i) for i in np.flatnonzero(norms > c)] and 4 in out.flagged
    clipped = updates * np.minimum(1, c / norms)[:, None]
    np.testing.assert_allclose(out.update, clipped.mean(0), rtol=1e-5, atol=1e-6)
    fixed = robust.norm_clip(updates, np.array([1.0, 1, 1, 1, 0]), bound=1e9)  # no clip: FedAvg's weighted mean
    np.testing.assert_allclose(fixed.update, honest.mean(0), rtol=1e-5, atol=1e-6)
    assert fixed.flagged == []


def test_centered_clipping_ignores_a_far_outlier():
    honest = _honest(n=6)
    updates = np.vstack([honest, -100 * honest[:2]])
    out = robust.centered_clip(updates, center=honest.mean(0))
    assert {6, 7} <= set(out.flagged)
    plain = updates.mean(0)
    assert np.linalg.norm(out.update - honest.mean(0)) < 0.1 * np.linalg.norm(plain - honest.mean(0))


def test_fltrust_gives_no_trust_to_an_update_against_the_root():
    honest = _honest(n=4)
    root = honest.mean(0) + np.random.default_rng(1).normal(0, 0.1, honest.shape[1]).astype(np.float32)
    updates = np.vstack([honest, -10 * honest[:1]])
    out = robust.fltrust(updates, root)
    assert out.flagged == [4] and out.scores[4] == 0 and min(out.scores[:4]) > 0.5
    rescaled = honest * (np.linalg.norm(root) / np.linalg.norm(honest, axis=1))[:, None]
    trust = np.array(out.scores[:4])
    np.testing.assert_allclose(out.update, trust @ rescaled / trust.sum(), rtol=1e-4, atol=1e-6)
    none = robust.fltrust(-updates[:4], root)  # nobody agrees with the server: the global model stays
    assert none.flagged == [0, 1, 2, 3] and not none.update.any()


def test_detection_precision_and_recall():
    assert robust.detection({1, 2}, {2, 5}, {0, 1, 2, 3}) == {"precision": 0.5, "recall": 1.0}
    assert robust.detection(set(), {2}, {0, 1, 2}) == {"precision": None, "recall": 0.0}
    assert robust.detection({0}, {2}, {0, 1}) == {"precision": 0.0, "recall": None}  # attacker not sampled


def _loop(data_root, tmp_path, *extra: str) -> tuple[list[dict], Path]:
    sys.path.insert(0, str(REPO / "benchmarks"))
    import _sequential

    cfg = load_config(REPO / "configs" / "quickstart.toml", [
        "model.name=student", "partition.num_clients=4", "partition.scheme=iid", "federation.rounds=2",
        "augment.mode=none", "distill.enabled=false", "export.enabled=false", "sweep.enabled=false",
        f"run.out_dir='{tmp_path}'", f"data.root='{data_root}'", "federation.local_epochs=1", *extra])
    run = _sequential.sequential_run(cfg, log=io.StringIO())["run"]
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()][1:], run


def test_fltrust_in_the_round_loop_drops_the_sign_flipper(data_root, tmp_path):
    rounds, run = _loop(data_root, tmp_path, "run.name=fltrust", "federation.strategy='fltrust'",
                   "adversary.kind=sign_flip", "adversary.partitions=[3]", "adversary.start_round=2")
    assert rounds[0]["malicious"] == [] and rounds[0]["defense"]["flagged"] == []  # no attack yet, nothing dropped
    assert rounds[0]["detection"] == {"precision": None, "recall": None}
    assert rounds[1]["malicious"] == [3] and rounds[1]["defense"]["flagged"] == [3]
    assert rounds[1]["defense"]["weights"]["3"] == 0 and rounds[1]["detection"] == {"precision": 1.0, "recall": 1.0}
    from fedrobust.checkpoint import run_config
    from fedrobust.report.poisoning import poisoning_section
    from fedrobust.tasks.specs import SPECS

    (run / "plots").mkdir()
    lines = poisoning_section(run_config(run), run, run / "plots", SPECS["classification"])
    assert lines[0] == "## Poisoning: sign_flip from round 2 against fltrust"
    assert "| 2 | [3] | [3] | 1.00 | 1.00 |" in "\n".join(lines)
    assert (run / "plots" / "poisoning.png").stat().st_size > 1000


def test_alie_is_applied_by_the_server_and_multikrum_selection_is_logged(data_root, tmp_path):
    rounds, _ = _loop(data_root, tmp_path, "run.name=alie", "partition.num_clients=7",
                      "federation.strategy='multikrum'", "federation.num_malicious=2", "federation.multikrum_select=3",
                      "adversary.kind=alie", "adversary.partitions=[4, 5]")
    for r in rounds:
        assert r["malicious"] == [4, 5] and len(r["selected"]) == 3
        u = r["updates"]
        assert u["4"] == u["5"]  # colluders send the one crafted update
        assert u["4"]["cos_honest"] > 0.5  # ALIE hides near the honest mean instead of opposing it
        assert set(r["detection"]) == {"precision", "recall"}
