import functools

import numpy as np
import pytest
import torch
from torch import nn

from fedrobust.attacks import classification_loss, fgsm, invfgsm, pgd
from fedrobust.attacks.gradient import margin_loss
from fedrobust.attacks.library import apgd
from fedrobust.config import TrainSection
from fedrobust.data.loading import load_split
from fedrobust.models import build_model
from fedrobust.tasks.registry import task_of
from fedrobust.train import make_optimizer, train_epoch

EPS = 0.01


@pytest.fixture(scope="module")
def trained(data_root):
    """A student trained briefly on real BreastMNIST, and its test split."""
    torch.manual_seed(0)
    train = load_split("breastmnist", "train", data_root)
    test = load_split("breastmnist", "test", data_root)
    model = build_model("student", 1, 2, 28)
    cfg = TrainSection(epochs=6, lr=3e-3)
    opt = make_optimizer(model, cfg)
    for epoch in range(cfg.epochs):
        train_epoch(model, train.images, train.labels, opt, cfg, epoch=epoch, task=task_of("classification"),
                    generator=torch.Generator().manual_seed(epoch))
    model.eval()
    return model, test.images, test.labels


def _mean_loss(model, x, y):
    with torch.no_grad():
        return float(classification_loss(model(x), y))


def _acc(model, x, y):
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())


@pytest.mark.parametrize("attack", [fgsm, invfgsm, pgd, functools.partial(apgd, steps=5)])
def test_bound_and_range(trained, attack):
    model, x, y = trained
    x_adv = attack(model, x, y, EPS)
    assert float((x_adv - x).abs().max()) <= EPS + 1e-6
    assert float(x_adv.min()) >= 0 and float(x_adv.max()) <= 1
    assert not torch.equal(x_adv, x)


def test_per_sample_eps_bound(trained):
    model, x, y = trained
    eps = torch.linspace(0.0, 0.02, len(x))
    for attack in (fgsm, pgd):
        delta = (attack(model, x, y, eps) - x).abs().flatten(1).amax(1)
        assert torch.all(delta <= eps + 1e-6)


def test_fgsm_raises_and_inverse_lowers_the_loss(trained):
    model, x, y = trained
    clean = _mean_loss(model, x, y)
    assert _mean_loss(model, fgsm(model, x, y, EPS), y) > clean
    assert _mean_loss(model, invfgsm(model, x, y, EPS), y) < clean


def test_pgd_at_least_as_strong_as_fgsm(trained):
    model, x, y = trained
    for eps in (0.005, 0.02):
        gen = torch.Generator().manual_seed(0)
        assert _acc(model, pgd(model, x, y, eps, steps=10, generator=gen), y) <= _acc(model, fgsm(model, x, y, eps), y)
    assert _acc(model, fgsm(model, x, y, 0.05), y) < _acc(model, x, y)


def test_eps_zero_is_identity(trained):
    model, x, y = trained
    for attack in (fgsm, invfgsm):
        assert torch.equal(attack(model, x, y, 0.0), x)
    assert torch.equal(pgd(model, x, y, 0.0), x)


@pytest.mark.parametrize("train_mode", [True, False])
def test_no_side_effects_on_parameters_or_batchnorm(trained, train_mode):
    model, x, y = trained
    model.train(train_mode)
    bn = next(m for m in model.modules() if isinstance(m, nn.BatchNorm2d))
    stats = (bn.running_mean.clone(), bn.running_var.clone(), int(bn.num_batches_tracked))
    for p in model.parameters():
        p.grad = None
    fgsm(model, x[:16], y[:16], EPS)
    pgd(model, x[:16], y[:16], EPS, steps=2)
    apgd(model, x[:16], y[:16], EPS, steps=2)
    assert all(p.grad is None for p in model.parameters())
    assert torch.equal(bn.running_mean, stats[0]) and torch.equal(bn.running_var, stats[1])
    assert int(bn.num_batches_tracked) == stats[2]
    assert model.training is train_mode
    model.eval()


def test_multiclass_and_single_logit_heads():
    torch.manual_seed(0)
    x = torch.rand(8, 3, 28, 28)
    multi = build_model("student", 3, 7, 28).eval()
    y7 = torch.arange(8) % 7
    x_adv = fgsm(multi, x, y7, EPS)
    assert _mean_loss(multi, x_adv, y7) > _mean_loss(multi, x, y7)
    single = nn.Sequential(nn.Flatten(), nn.Linear(3 * 28 * 28, 1))
    y2 = torch.arange(8) % 2
    x_adv = fgsm(single, x, y2, EPS)
    assert float((x_adv - x).abs().max()) <= EPS + 1e-6
    assert _mean_loss(single, x_adv, y2) > _mean_loss(single, x, y2)
    with torch.no_grad():
        assert float(margin_loss(single(x_adv), y2)) > float(margin_loss(single(x), y2))


# ------------------------------------------------- fedrobust's attacks against ART's (a maintained library)


def _art(model):
    from art.estimators.classification import PyTorchClassifier

    return PyTorchClassifier(model=model, loss=nn.CrossEntropyLoss(), input_shape=(1, 28, 28), nb_classes=2,
                             clip_values=(0.0, 1.0), device_type="cpu")


def test_fgsm_equals_art_fgsm_bit_for_bit(trained):
    from art.attacks.evasion import FastGradientMethod

    model, x, y = trained
    for eps in (0.002, EPS):
        ours = fgsm(model, x, y, eps)
        theirs = FastGradientMethod(_art(model), eps=eps, batch_size=len(x)).generate(x.numpy(), y.numpy())
        assert torch.equal(ours, torch.from_numpy(theirs))


def test_pgd_within_one_image_of_art_pgd(trained):
    from art.attacks.evasion import ProjectedGradientDescent

    model, x, y = trained
    steps, eps = 10, 0.02
    ours = _acc(model, pgd(model, x, y, eps, steps=steps, generator=torch.Generator().manual_seed(0)), y)
    attack = ProjectedGradientDescent(_art(model), eps=eps, eps_step=2.5 * eps / steps, max_iter=steps,
                                      num_random_init=1, batch_size=len(x), verbose=False)
    np.random.seed(0)
    theirs = _acc(model, torch.from_numpy(attack.generate(x.numpy(), y.numpy())), y)
    assert ours < _acc(model, x, y) - 0.05  # the attack bites at this eps, so agreement means something
    assert abs(ours - theirs) <= 1 / len(x) + 1e-9


@pytest.mark.parametrize("loss", ["ce", "margin"])
def test_apgd_never_weaker_than_pgd(trained, loss):
    """APGD's step-size schedule (25 steps here, 100 in sweeps) is at least as strong as 10-step PGD on the same
    loss, within one image."""
    model, x, y = trained
    x, y = x[:64], y[:64]
    for eps in (0.003, 0.01, 0.03):
        p = pgd(model, x, y, eps, steps=10, loss=loss, generator=torch.Generator().manual_seed(0))
        a = apgd(model, x, y, eps, loss=loss, steps=25, seed=0)
        assert float((a - x).abs().max()) <= eps + 1e-6
        assert _acc(model, a, y) <= _acc(model, p, y) + 1 / len(x) + 1e-9, eps


def test_apgd_dlr_needs_three_classes(trained):
    model, x, y = trained
    with pytest.raises(ValueError, match="needs >= 3 classes"):
        apgd(model, x[:4], y[:4], EPS, loss="dlr")
    multi = build_model("student", 3, 7, 28).eval()
    x7, y7 = torch.rand(8, 3, 28, 28), torch.arange(8) % 7
    assert float((apgd(multi, x7, y7, EPS, loss="dlr", steps=5) - x7).abs().max()) <= EPS + 1e-6
