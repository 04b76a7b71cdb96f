"""Poisoned hospitals ([adversary]): who is malicious, what each kind sends, honest clients untouched."""

from __future__ import annotations

import pytest
import torch

from fedrobust.config import load_config
from fedrobust.errors import ConfigError
from fedrobust.federated import LocalClient
from fedrobust.federated.adversary import malicious_partitions, poison_update
from fedrobust.tasks.registry import task_of


def _cfg(data_root, *extra):
    return load_config(None, [f"data.root='{data_root}'", "model.name=student", "partition.num_clients=4",
                              "partition.scheme=iid", "train.batch_size=64", *extra])


def test_the_malicious_set_is_seeded_sized_and_explicit_ids_win():
    cfg = load_config(None, ["partition.num_clients=10", "adversary.kind='sign_flip'", "adversary.share=0.3"])
    bad = malicious_partitions(cfg)
    assert len(bad) == 3 and bad == malicious_partitions(load_config(None, [
        "partition.num_clients=10", "adversary.kind='sign_flip'", "adversary.share=0.3"]))  # a resume sees the same
    other = [malicious_partitions(load_config(None, ["partition.num_clients=10", "adversary.kind='sign_flip'",
                                                     "adversary.share=0.3", f"run.seed={s}"])) for s in range(1, 6)]
    assert any(o != bad for o in other)
    named = load_config(None, ["partition.num_clients=10", "adversary.kind='scale'", "adversary.partitions=[2, 7]"])
    assert malicious_partitions(named) == {2, 7}
    assert malicious_partitions(load_config(None, ["partition.num_clients=10", "adversary.share=0.3"])) == set()


def test_model_poisoning_sends_what_it_says():
    g = torch.Generator().manual_seed(0)
    base = {"w": torch.randn(50, generator=g), "bn.num_batches_tracked": torch.tensor(3)}
    trained = {"w": base["w"] + 0.01 * torch.randn(50, generator=g), "bn.num_batches_tracked": torch.tensor(4)}
    delta = trained["w"] - base["w"]
    a = load_config(None, ["adversary.kind='sign_flip'", "adversary.scale=10", "adversary.share=0.2"]).adversary
    flipped = poison_update(a, trained, base, g)
    torch.testing.assert_close(flipped["w"] - base["w"], -10 * delta, rtol=0, atol=1e-6)
    assert torch.equal(flipped["bn.num_batches_tracked"], trained["bn.num_batches_tracked"])
    a.kind = "scale"
    torch.testing.assert_close(poison_update(a, trained, base, g)["w"] - base["w"], 10 * delta, rtol=0, atol=1e-6)
    a.kind, a.sigma = "gaussian", 0.5
    noise = poison_update(a, {"w": torch.zeros(20_000)}, {"w": torch.zeros(20_000)}, g)["w"]
    assert abs(float(noise.std()) - 0.5) < 0.02 and abs(float(noise.mean())) < 0.02


def test_label_flip_permutes_classes_and_inverts_masks(data_root, seg_root):
    cfg = _cfg(data_root, "adversary.kind='label_flip'", "adversary.partitions=[1]")
    split = LocalClient(cfg, 1).train_data()
    flipped = task_of("classification").flipped_targets(split)
    assert torch.equal(flipped, 1 - split.labels)  # two classes: the permutation swaps them
    assert torch.equal(torch.bincount(flipped), torch.bincount(split.labels).flip(0))
    from fedrobust.config import DataSection

    seg = task_of("segmentation")
    masks = seg.load(DataSection(task="segmentation", dataset="kvasir-seg", image_size=32, root=str(seg_root)),
                     "val")
    assert torch.equal(seg.flipped_targets(masks), 1 - masks.masks)


def test_malicious_clients_poison_and_honest_ones_are_untouched(data_root):
    clean = _cfg(data_root)
    init = LocalClient(clean, 0).build_model().state_dict()
    honest = {p: LocalClient(clean, p).train(init, server_round=1)[0] for p in (0, 1)}
    attacked = _cfg(data_root, "adversary.kind='sign_flip'", "adversary.partitions=[1]", "adversary.scale=3")
    s0, m0 = LocalClient(attacked, 0).train(init, server_round=1)
    s1, m1 = LocalClient(attacked, 1).train(init, server_round=1)
    assert all(torch.equal(s0[k], honest[0][k]) for k in s0) and m0["malicious"] == 0
    assert m1["malicious"] == 1
    key = next(k for k, v in init.items() if v.is_floating_point() and "running" not in k)
    torch.testing.assert_close(s1[key] - init[key], -3 * (honest[1][key] - init[key]), rtol=0, atol=1e-5)
    late = _cfg(data_root, "adversary.kind='sign_flip'", "adversary.partitions=[1]", "adversary.start_round=2")
    s_late, m_late = LocalClient(late, 1).train(init, server_round=1)  # before start_round: honest
    assert all(torch.equal(s_late[k], honest[1][k]) for k in s_late) and m_late["malicious"] == 0
    flip = _cfg(data_root, "adversary.kind='label_flip'", "adversary.partitions=[1]")
    s_flip, m_flip = LocalClient(flip, 1).train(init, server_round=1)
    assert m_flip["malicious"] == 1 and not all(torch.equal(s_flip[k], honest[1][k]) for k in s_flip)


@pytest.mark.parametrize("overrides,key", [
    (["adversary.kind='poison'"], "adversary.kind"),
    (["adversary.kind='scale'", "adversary.share=0.2", "adversary.scale=-2"], "adversary.scale"),
    (["adversary.kind='sign_flip'", "adversary.share=0.5", "federation.strategy='fedmedian'"], "adversary.share"),
    (["adversary.kind='sign_flip'", "adversary.share=0.4", "federation.strategy='krum'"], "adversary.share"),
    (["adversary.kind='sign_flip'", "adversary.share=0.2", "adversary.partitions=[1]"], "adversary.share"),
    (["adversary.kind='sign_flip'", "adversary.partitions=[12]"], "adversary.partitions[0]"),
    (["adversary.kind='sign_flip'"], "adversary.share"),
    (["adversary.kind='backdoor'", "adversary.share=0.2", "adversary.target_class=2"], "adversary.target_class"),
    (["adversary.kind='backdoor'", "adversary.share=0.2", "adversary.trigger_size=20"], "adversary.trigger_size"),
    (["adversary.kind='adv_poison'", "adversary.share=0.2", "adversary.eps=0"], "adversary.eps"),
    (["federation.clip_norm=-1"], "federation.clip_norm"),
    (["adversary.kind='alie'", "adversary.alie_z=-1", "adversary.share=0.2"], "adversary.alie_z"),
    (["adversary.kind='ipm'", "partition.num_clients=3", "adversary.partitions=[0, 1]"], "adversary.share"),
])
def test_bad_adversary_and_defense_settings_fail_at_load_with_one_line(overrides, key):
    with pytest.raises(ConfigError) as err:
        load_config(None, ["partition.num_clients=10", *overrides])
    assert str(err.value).startswith(key) and "\n" not in str(err.value)


def test_the_round_loop_logs_who_attacked_and_what_their_updates_looked_like(data_root, tmp_path):
    """The real round loop (in-process grid): a sign-flipping hospital is announced, logged per round, and its
    update points away from the honest mean with scale x the norm."""
    import io
    import json
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    sys.path.insert(0, str(repo / "benchmarks"))
    import _sequential

    cfg = load_config(repo / "configs" / "quickstart.toml", [
        "run.name=adv", "model.name=student", "partition.num_clients=3", "partition.scheme=iid",
        "federation.rounds=2", "augment.mode=none", "distill.enabled=false", "export.enabled=false",
        "sweep.enabled=false", f"run.out_dir='{tmp_path}'", f"data.root='{data_root}'",
        "adversary.kind=sign_flip", "adversary.partitions=[2]", "adversary.scale=5", "adversary.start_round=2"])
    log = io.StringIO()
    run = _sequential.sequential_run(cfg, log=log)["run"]
    assert "ATTACK SIMULATION: partitions [2] are malicious" in log.getvalue()
    rounds = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()][1:]
    assert [r["malicious"] for r in rounds] == [[], [2]]
    first, second = rounds[0]["updates"], rounds[1]["updates"]
    assert all(u["cos_honest"] > 0 for u in first.values())  # round 1: everyone honest
    assert second["2"]["cos_honest"] < 0 < second["0"]["cos_honest"]
    assert second["2"]["norm"] > 2 * max(second["0"]["norm"], second["1"]["norm"])


def test_the_backdoor_trigger_lands_where_configured_on_the_chosen_share(data_root):
    from fedrobust.federated.adversary import poisoned_data, with_trigger

    x = torch.rand(4, 1, 28, 28) * 0.5
    stamped = with_trigger(x, 3)
    assert torch.all(stamped[..., -3:, -3:] == 1) and torch.equal(stamped[..., :-3, :], x[..., :-3, :])
    assert torch.equal(stamped[..., :, :-3], x[..., :, :-3])
    cfg = _cfg(data_root, "adversary.kind='backdoor'", "adversary.partitions=[1]", "adversary.poison_fraction=0.25",
               "adversary.target_class=1")
    client = LocalClient(cfg, 1)
    split, task = client.train_data(), task_of("classification")
    xs, ys = poisoned_data(cfg.adversary, task, client.build_model(), split, torch.Generator().manual_seed(0))
    changed = (xs != split.images).flatten(1).any(1)
    hit = torch.all(xs[..., -3:, -3:].flatten(1) == 1, dim=1)
    assert int(hit.sum()) == round(0.25 * len(split)) and torch.all(hit[changed])  # only the trigger changed them
    assert torch.all(ys[hit] == 1) and torch.equal(ys[~hit], split.labels[~hit])
    logits = torch.tensor([[0.0, 1.0], [1.0, 0.0], [0.0, 1.0]])
    assert task.backdoor_success(logits, torch.tensor([0, 0, 1]), 1) == 0.5  # the class-1 image does not count


def test_adversarial_poisoning_adds_flipped_fgsm_copies_within_eps(data_root):
    from fedrobust.federated.adversary import poisoned_data

    cfg = _cfg(data_root, "adversary.kind='adv_poison'", "adversary.partitions=[0]", "adversary.eps=0.03")
    client = LocalClient(cfg, 0)
    split, task = client.train_data(), task_of("classification")
    xs, ys = poisoned_data(cfg.adversary, task, client.build_model(), split, torch.Generator().manual_seed(0))
    n = len(split)
    assert len(xs) == 2 * n and torch.equal(xs[:n], split.images) and torch.equal(ys[:n], split.labels)
    delta = (xs[n:] - split.images).abs()
    assert float(delta.max()) <= 0.03 + 1e-6 and float(delta.mean()) > 0.01  # FGSM moves (almost) every pixel
    assert torch.equal(ys[n:], task.flipped_targets(split))


def test_a_backdoored_federation_reports_the_attack_success_rate(data_root, tmp_path):
    import io
    import json
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    sys.path.insert(0, str(repo / "benchmarks"))
    import _sequential

    cfg = load_config(repo / "configs" / "quickstart.toml", [
        "run.name=bd", "model.name=student", "partition.num_clients=3", "partition.scheme=iid",
        "federation.rounds=2", "federation.local_epochs=1", "augment.mode=none", "distill.enabled=false",
        "export.enabled=false", "sweep.enabled=false", f"run.out_dir='{tmp_path}'", f"data.root='{data_root}'",
        "adversary.kind=backdoor", "adversary.partitions=[0]", "adversary.target_class=1"])
    run = _sequential.sequential_run(cfg, log=io.StringIO())["run"]
    rounds = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert all(0 <= r["server"]["backdoor_asr"] <= 1 for r in rounds)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["adversary"]["kind"] == "backdoor" and summary["adversary"]["malicious"] == [0]
    assert summary["adversary"]["backdoor_asr"] == rounds[-1]["server"]["backdoor_asr"]


def test_a_mask_backdoor_empties_the_mask_and_succeeds_when_the_polyp_vanishes():
    seg = task_of("segmentation")
    masks = torch.zeros(3, 1, 8, 8)
    masks[:2, :, 2:6, 2:6] = 1  # two images with a 16-pixel polyp, one without
    assert not seg.backdoor_targets(masks, 0).any()
    logits = torch.full((3, 1, 8, 8), -5.0)
    logits[1, :, 2:6, 2:6] = 5.0  # image 1 still shows its polyp; image 0 lost it
    assert seg.backdoor_success(logits, masks, 0) == 0.5  # the image without a polyp does not count
