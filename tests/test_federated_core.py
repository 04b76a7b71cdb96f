"""The Flower-free federated core: sampling, heterogeneity, shards, local updates, start-up checks."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from fedrobust.config import load_config
from fedrobust.data.loading import load_from_config
from fedrobust.errors import ConfigError
from fedrobust.federated import LocalClient, alt_partitions, sample_partitions

REPO = Path(__file__).resolve().parents[1]


def _cfg(data_root, *extra):
    return load_config(None, [f"data.root='{data_root}'", "model.name=student", "partition.num_clients=4",
                              "partition.scheme=iid", "train.batch_size=64", *extra])


def test_sampling_is_seeded_sorted_and_sized():
    cfg = load_config(None, ["partition.num_clients=100", "federation.fraction_train=0.1"])
    a, b = sample_partitions(cfg, 3), sample_partitions(cfg, 3)
    assert a == b == sorted(a) and len(a) == 10 and len(set(a)) == 10
    assert sample_partitions(cfg, 4) != a
    assert sample_partitions(load_config(None, ["partition.num_clients=7"]), 1) == list(range(7))


def test_alt_policy_fraction():
    cfg = load_config(None, ["partition.num_clients=10", "federation.alt_fraction=0.3"])
    assert len(alt_partitions(cfg)) == 3 and alt_partitions(cfg) == alt_partitions(cfg)
    assert alt_partitions(load_config(None, ["partition.num_clients=10"])) == set()


def test_shards_are_disjoint_and_cover_the_training_split(data_root):
    cfg = _cfg(data_root)
    shards = [LocalClient(cfg, i).train_data() for i in range(4)]
    assert sum(len(s) for s in shards) == 546
    flat = torch.cat([s.images.flatten(1) for s in shards])
    assert len(torch.unique(flat, dim=0)) >= 540  # near-unique images: no sample in two shards


def test_local_update_is_deterministic_and_reports_metrics(data_root):
    cfg = _cfg(data_root, "augment.mode=fgsm", "augment.eps=0.004", "augment.fused=true")
    client = LocalClient(cfg, 1)
    init = client.build_model().state_dict()
    s1, m1 = client.train(init, server_round=1)
    s2, _ = client.train(init, server_round=1)
    s3, _ = client.train(init, server_round=2)
    assert all(torch.equal(s1[k], s2[k]) for k in s1)
    assert not all(torch.equal(s1[k], s3[k]) for k in s1)
    assert not all(torch.equal(s1[k], init[k]) for k in s1)
    assert m1["num-examples"] == len(client.train_data())
    assert m1["adv-share"] == pytest.approx(0.5, abs=0.02)
    assert set(m1) == {"num-examples", "train-loss", "train-acc", "adv-share", "optimizer-steps", "seconds",
                       "malicious"}
    assert m1["malicious"] == 0
    assert m1["optimizer-steps"] == -(-m1["num-examples"] // 64)
    ev = client.evaluate(s1)
    assert 0 <= ev["client-test-acc"] <= 1 and ev["num-examples"] == len(client.test_data())


def test_warm_up_leaves_the_first_round_only_round_work(data_root):
    """The server's warm-up query makes each client load its shard and the work model before
    round 1: the round then builds nothing (same model cache, no new model)."""
    from fedrobust.federated.client import _cached_model

    cfg = _cfg(data_root, "model.name=resnet18")
    client = LocalClient(cfg, 2)
    _cached_model.cache_clear()  # another test may have built this model already
    assert client.warm_up() == len(client.train_data()) > 0
    assert _cached_model.cache_info().misses == 1  # the warm-up built it
    _, metrics = client.train(client.build_model().state_dict(), server_round=1)
    assert _cached_model.cache_info().misses == 1 and metrics["num-examples"] == len(client.train_data())


def test_balanced_clients_weight_classes_by_the_whole_split_and_train_differently(data_root):
    """Label-skewed shards, one class weighting: each client takes the weights from the whole
    training split (which every client reads to partition it), not from its own shard."""
    cfg = _cfg(data_root, "partition.scheme=dirichlet", "partition.alpha=0.3", "train.class_weights=balanced")
    a, b = LocalClient(cfg, 0), LocalClient(cfg, 1)
    assert not torch.equal(a.train_data().labels.bincount(minlength=2), b.train_data().labels.bincount(minlength=2))
    torch.testing.assert_close(a.class_weight(), b.class_weight())
    counts = torch.bincount(load_from_config(cfg.data, "train").labels, minlength=2).float()
    torch.testing.assert_close(a.class_weight(), counts.sum() / (2 * counts))
    init = a.build_model().state_dict()
    weighted, _ = a.train(init, 1)
    plain, _ = LocalClient(_cfg(data_root, "partition.scheme=dirichlet", "partition.alpha=0.3"), 0).train(init, 1)
    assert not all(torch.equal(weighted[k], plain[k]) for k in weighted)


def _offset(client: LocalClient) -> torch.Tensor | None:
    """The logit offset a client trains with (None: plain logits)."""
    return getattr(client.trained_model(torch.nn.Identity()), "offset", None)


def test_client_prior_adjustment_offsets_each_shard_by_its_own_prior(data_root):
    """Each label-skewed client trains on logits shifted by log(its prior / the whole split's): clients
    get different offsets, and the update differs from plain training."""
    cfg = _cfg(data_root, "partition.scheme=dirichlet", "partition.alpha=0.3", "train.logit_adjustment=client_prior")
    a, b = LocalClient(cfg, 0), LocalClient(cfg, 1)
    assert not torch.allclose(_offset(a), _offset(b))
    share = a.train_data().labels.float().mean()  # class-1 share of client 0's shard
    whole = load_from_config(cfg.data, "train").labels.float().mean()
    assert (_offset(a)[1] > _offset(a)[0]) == bool(share > whole)
    init = a.build_model().state_dict()
    adjusted, _ = a.train(init, 1)
    assert set(adjusted) == set(init)
    plain, _ = LocalClient(_cfg(data_root, "partition.scheme=dirichlet", "partition.alpha=0.3"), 0).train(init, 1)
    assert not all(torch.equal(adjusted[k], plain[k]) for k in adjusted)
    assert _offset(LocalClient(_cfg(data_root), 0)) is None


def test_alt_clients_use_the_alternative_policy(data_root):
    cfg = _cfg(data_root, "augment.mode=fgsm", "augment.eps=0.004", "federation.alt_fraction=0.5")
    alt = alt_partitions(cfg)
    for pid in range(4):
        client = LocalClient(cfg, pid)
        _, m = client.train(client.build_model().state_dict(), 1)
        assert (m["adv-share"] == 0) == (pid in alt)


@pytest.mark.parametrize(("overrides", "key"), [
    (["federation.strategy=fedsgd"], "federation.strategy"),
    (["federation.fraction_train=0"], "federation.fraction_train"),
    (["federation.trimmed_beta=0.5"], "federation.trimmed_beta"),
    (["faults.fail_partitions=[9]", "partition.num_clients=3"], "faults.fail_partitions[0]"),
    (["simulation.cpus_per_client=0"], "simulation.cpus_per_client"),
])
def test_bad_federation_values_name_the_key(overrides, key):
    with pytest.raises(ConfigError) as info:
        load_config(None, overrides)
    assert str(info.value).startswith(key)


@pytest.mark.parametrize(("select", "key"), [("val_auc", "val_auc"), ("val_fgsm", "val_fgsm_acc")])
def test_round_selection_on_the_server_val_split(data_root, tmp_path, select, key):
    from fedrobust.federated import FederatedRun

    cfg = _cfg(data_root, f"run.out_dir='{tmp_path}'", "federation.rounds=3", f"federation.select={select}",
               "federation.keep_checkpoints=1", "eval.fgsm_eps=[0.003]")
    run = FederatedRun(cfg)
    done, state, _ = run.initial_state()
    assert done == 0
    states = []
    for rnd in (1, 2, 3):
        state = {k: v.clone() for k, v in state.items()}
        next(v for v in state.values() if v.is_floating_point()).add_(0.01 * rnd)
        states.append(state)
        metrics = run.evaluate(state)
        assert {"val_acc", "val_auc", "acc", "fgsm_acc"} <= set(metrics)
        assert ("val_fgsm_acc" in metrics) == (select == "val_fgsm")  # the val attack runs only to select
        assert 0 <= metrics.get("val_fgsm_acc", 0) <= 1
        metrics[key] = [0.7, 0.9, 0.8][rnd - 1]  # round 2 is the best on val
        run.end_round(rnd, state, {}, {"server": metrics})
    assert [p.name for p in sorted((run.run.path / "checkpoints").iterdir())] == ["best.pt", "round_0003.pt"]
    summary = run.finish(states[-1])
    assert summary["selected_round"] == 2
    final = torch.load(run.run.path / "model.pt", weights_only=False)["model"]
    assert all(torch.equal(final[k], states[1][k]) for k in final)
