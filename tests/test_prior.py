"""Logit adjustment by the client's class prior (train.logit_adjustment = "client_prior")."""

from __future__ import annotations

import torch
from torch import nn

from fedrobust.attacks import classification_loss
from fedrobust.train.prior import OffsetLogits, class_prior, prior_offset


class _Bias(nn.Module):
    """A model that ignores its input: its logits are a learnt per-class bias."""

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bias.expand(len(x), -1)


def _fit(model: nn.Module, labels: torch.Tensor, steps: int = 400) -> None:
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    x = torch.zeros(len(labels), 1)
    for _ in range(steps):
        opt.zero_grad()
        classification_loss(model(x), labels).backward()
        opt.step()


def test_offset_is_zero_for_the_federations_prior_and_negative_for_a_rare_class():
    whole = torch.tensor([0] * 30 + [1] * 70)
    torch.testing.assert_close(prior_offset(whole[::2], whole, 2), torch.zeros(2))  # same 30/70 mix
    skewed = torch.tensor([0] * 2 + [1] * 48)
    offset = prior_offset(skewed, whole, 2)
    assert offset[0] < 0 < offset[1]
    assert torch.isfinite(prior_offset(torch.tensor([1] * 20), whole, 2)).all()  # a class the shard lacks
    torch.testing.assert_close(class_prior(whole, 3).sum(), torch.tensor(1.0))


def test_a_skewed_client_learns_the_federations_prior_not_its_own():
    """On a shard that is 4 % class 0, plain cross-entropy drives the shared bias to the shard's prior;
    with the offset, the shared logits settle at the whole split's prior (30 % class 0)."""
    whole = torch.tensor([0] * 300 + [1] * 700)
    shard = torch.tensor([0] * 2 + [1] * 48)
    plain, adjusted = _Bias(2), _Bias(2)
    _fit(plain, shard)
    _fit(OffsetLogits(adjusted, prior_offset(shard, whole, 2)), shard)
    assert plain.bias.softmax(0)[0] < 0.08
    torch.testing.assert_close(adjusted.bias.softmax(0), class_prior(whole, 2), atol=0.02, rtol=0)


def test_the_wrapper_trains_the_wrapped_model_and_adds_nothing_to_its_state():
    model = nn.Linear(1, 2)
    wrapped = OffsetLogits(model, torch.tensor([0.5, -0.5]))
    assert set(wrapped.state_dict()) == {f"model.{k}" for k in model.state_dict()}
    x = torch.randn(3, 1)
    torch.testing.assert_close(wrapped(x), model(x) + torch.tensor([0.5, -0.5]))
    before = model.bias.detach().clone()
    _fit(wrapped, torch.tensor([0, 1, 1]), steps=3)  # zero inputs: only the bias gets a gradient
    assert not torch.equal(before, model.bias)
