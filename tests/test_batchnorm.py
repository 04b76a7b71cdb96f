import torch
from torch import nn

from fedrobust.train.batchnorm import recalibrate_batchnorm


def test_recalibration_sets_running_stats_from_the_data_and_leaves_weights_alone():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 26 * 26, 2))
    bn = model[1]
    bn.running_mean.fill_(5.0)  # stale statistics, as after averaging skewed clients
    bn.running_var.fill_(9.0)
    weights = {k: v.clone() for k, v in model.named_parameters()}
    images = torch.rand(100, 1, 28, 28) * 2 + 1
    recalibrate_batchnorm(model, images, batch_size=25)  # equal batches: exact mean
    with torch.no_grad():
        feats = model[0](images)
    assert torch.allclose(bn.running_mean, feats.mean((0, 2, 3)), atol=1e-4)
    # cumulative average of per-batch unbiased variances: close to the variance over all data
    assert torch.allclose(bn.running_var, feats.var((0, 2, 3)), rtol=0.05)
    assert bn.momentum == 0.1 and not model.training
    assert all(torch.equal(weights[k], v) for k, v in model.named_parameters())


def test_model_without_batchnorm_is_untouched():
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
    before = [p.clone() for p in model.parameters()]
    recalibrate_batchnorm(model, torch.rand(8, 1, 2, 2))
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
