import pytest
import torch
from torch import nn

from fedrobust.attacks import classification_loss, fgsm
from fedrobust.augment import AdversarialPolicy, ClassicAugment
from fedrobust.config import AugmentSection, TrainSection
from fedrobust.tasks.registry import task_of
from fedrobust.train.local import _fused_step, class_weights, make_optimizer, train_epoch


def _net() -> nn.Module:
    """No BatchNorm/dropout, so train and eval mode agree and fused == naive exactly."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 26 * 26, 3))


def _batch(n=16):
    g = torch.Generator().manual_seed(1)
    return torch.rand(n, 1, 28, 28, generator=g), torch.arange(n) % 3


def _policy(**kw) -> AdversarialPolicy:
    return AdversarialPolicy(AugmentSection(**kw), torch.Generator().manual_seed(7))


def test_append_replace_fraction_and_both():
    model, (x, y) = _net(), _batch()
    b = _policy(mode="fgsm", eps=0.01, fraction=0.5).augment(model, x, y)
    assert len(b.x) == 24 and b.n_adv == 8 and torch.equal(b.x[:16], x)
    b = _policy(mode="both", eps=0.01).augment(model, x, y)
    assert len(b.x) == 48 and b.n_adv == 32
    assert torch.equal(b.x[16:32], fgsm(model, x, y, 0.01))
    b = _policy(mode="invfgsm", eps=0.01, fraction=0.25, combine="replace").augment(model, x, y)
    assert len(b.x) == 16 and b.n_adv == 4
    assert int((b.x != x).flatten(1).any(1).sum()) == 4
    b = _policy(mode="pgd", eps=0.01, pgd_steps=2).augment(model, x, y)
    assert float((b.x[16:] - x).abs().max()) <= 0.01 + 1e-6


def test_sampled_eps_lies_in_zero_eps():
    eps = _policy(mode="fgsm", eps=0.004, eps_sampling="uniform").sample_eps(10_000)
    assert float(eps.min()) > 0 and float(eps.max()) <= 0.004
    assert 0.0018 < float(eps.mean()) < 0.0022
    model, (x, y) = _net(), _batch()
    b = _policy(mode="fgsm", eps=0.004, eps_sampling="uniform").augment(model, x, y)
    delta = (b.x[16:] - x).abs().flatten(1).amax(1)
    assert float(delta.max()) <= 0.004 + 1e-7 and len(torch.unique(delta)) > 1


def test_warmup():
    p = _policy(mode="fgsm", eps=0.01, warmup_epochs=2)
    assert [p.active(e) for e in range(4)] == [False, False, True, True]
    assert not _policy(mode="none").active(5)


@pytest.mark.parametrize("mode", ["fgsm", "invfgsm", "both"])
@pytest.mark.parametrize("sampling", ["fixed", "uniform"])
def test_fused_step_equals_naive_append(mode, sampling):
    """Same weight gradient as the naive clean+adversarial batch, with one forward/backward fewer."""
    x, y = _batch()
    naive, fused = _net(), _net()
    kw = {"mode": mode, "eps": 0.01, "fraction": 0.5, "eps_sampling": sampling}
    batch = _policy(**kw).augment(naive, x, y)
    (classification_loss(naive(batch.x), batch.y, "sum") / len(batch.y)).backward()
    _, n_trained, n_adv, _ = _fused_step(fused, x, y, _policy(**kw, fused=True), task_of("classification"))
    assert (n_trained, n_adv) == (len(batch.y), batch.n_adv)
    for p, q in zip(naive.parameters(), fused.parameters(), strict=True):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-4, atol=1e-6)


def test_fused_step_with_class_weights_equals_naive_append():
    """Weighted classes: the fused step still matches the naive batch (FGSM's sign is unchanged)."""
    x, y = _batch()
    weight = torch.tensor([3.0, 1.0, 0.5])
    naive, fused = _net(), _net()
    kw = {"mode": "both", "eps": 0.01, "fraction": 1.0}
    batch = _policy(**kw).augment(naive, x, y)
    (classification_loss(naive(batch.x), batch.y, "sum", class_weight=weight) / len(batch.y)).backward()
    _fused_step(fused, x, y, _policy(**kw, fused=True), task_of("classification"), class_weight=weight)
    for p, q in zip(naive.parameters(), fused.parameters(), strict=True):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-4, atol=1e-6)


def test_balanced_class_weights_give_every_present_class_the_same_total():
    labels = torch.tensor([0, 1, 1, 1, 1, 1, 1, 0])  # class 2 absent
    assert class_weights(TrainSection(), labels, 3) is None  # default: unweighted
    w = class_weights(TrainSection(class_weights="balanced"), labels, 3)
    torch.testing.assert_close(w, torch.tensor([8 / 6, 8 / 18, 0.0]))
    counts = torch.bincount(labels, minlength=3).float()
    torch.testing.assert_close(w[:2] * counts[:2], torch.full((2,), 8 / 3))
    logits = torch.randn(8, 3)
    per_sample = classification_loss(logits, labels, "none")
    torch.testing.assert_close(classification_loss(logits, labels, "sum", class_weight=w),
                               (per_sample * w[labels]).sum())


def test_train_epoch_reports_adversarial_share():
    model, (x, y) = _net(), _batch(64)
    cfg = TrainSection(batch_size=16, lr=1e-2)
    opt = make_optimizer(model, cfg)
    clean = train_epoch(model, x, y, opt, cfg, policy=_policy(mode="none"), task=task_of("classification"))
    assert clean.adv_share == 0 and clean.num_examples == 64
    both = train_epoch(model, x, y, opt, cfg, policy=_policy(mode="both", eps=0.01, fused=True),
                       task=task_of("classification"))
    assert both.adv_share == pytest.approx(2 / 3) and both.num_examples == 64


def test_classic_augmentations():
    x = torch.rand(8, 1, 28, 28)
    aug = ClassicAugment(["flip", "rotation", "crop", "jitter"], 28)
    torch.manual_seed(0)
    out = aug.images(x)
    assert out.shape == x.shape and float(out.min()) >= 0 and float(out.max()) <= 1
    assert not torch.equal(out, x)
    assert not ClassicAugment([], 28) and torch.equal(ClassicAugment([], 28).images(x), x)
    flip = ClassicAugment(["flip"], 28)
    outs = flip.images(x.repeat(16, 1, 1, 1))  # per-sample randomness: some flipped, some not
    flipped = [torch.equal(o, x[0].flip(-1)) for o in outs[::8]]
    assert any(flipped) and not all(flipped)
