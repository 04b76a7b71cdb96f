"""Common corruptions: shape, range, seeding, and severity that means something, at 28 px and 128 px RGB."""

from __future__ import annotations

import pytest
import torch

from fedrobust.sweep.corruptions import CORRUPTIONS, SEVERITIES, corrupt


def _images(channels: int, size: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    smooth = torch.nn.functional.interpolate(torch.rand(4, channels, 7, 7, generator=g), size=(size, size),
                                             mode="bilinear")
    return (0.2 + 0.6 * smooth).clamp(0, 1)


@pytest.mark.parametrize("name", sorted(CORRUPTIONS))
@pytest.mark.parametrize("channels,size", [(1, 28), (3, 128)])
def test_each_corruption_is_seeded_bounded_and_worse_at_higher_severity(name, channels, size):
    x = _images(channels, size)
    change = []
    for s in SEVERITIES:
        out = corrupt(x, name, s, seed=1)
        assert out.shape == x.shape and out.dtype == torch.float32
        assert float(out.min()) >= 0 and float(out.max()) <= 1
        assert torch.equal(out, corrupt(x, name, s, seed=1))
        change.append(float((out - x).abs().mean()))
    assert change[0] > 1e-3, "severity 1 must change the image"
    assert change[-1] > change[0], f"severity 5 must change it more than severity 1: {change}"


def test_bad_severity_is_refused():
    with pytest.raises(ValueError, match="severity must be one of"):
        corrupt(_images(1, 28), "jpeg", 6, seed=0)
