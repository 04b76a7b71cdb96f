import subprocess
import sys

import torch

from fedrobust.tvcompat import ensure_torchvision_ops, import_torchvision

CHECK = r"""
import torch
from fedrobust.tvcompat import ensure_torchvision_ops, import_torchvision
mode = ensure_torchvision_ops()
tv = import_torchvision()
from torchvision.transforms import v2
boxes = torch.tensor([[0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60.]])
keep = torch.ops.torchvision.nms(boxes, torch.tensor([0.9, 0.8, 0.7]), 0.5)
assert keep.tolist() == [0, 2], keep
out = tv.models.resnet18(num_classes=2).eval()(torch.rand(1, 3, 28, 28))
assert out.shape == (1, 2)
assert v2.RandomHorizontalFlip(p=1.0)(torch.arange(4.).reshape(1, 2, 2)).tolist() == [[[1., 0.], [3., 2.]]]
print(mode)
"""


def test_torchvision_imports_in_a_fresh_interpreter():
    """The shim must work before the first torchvision import of a new process (as in Ray workers)."""
    result = subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() in {"native", "shim"}


def test_plain_torchvision_import_needs_the_shim_here():
    """Documents why the module exists: on this CPU torch a bare import fails (or loads natively)."""
    result = subprocess.run([sys.executable, "-c", "import torchvision"], capture_output=True, text=True,
                            timeout=120)
    mode = subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True, timeout=120)
    if mode.stdout.strip() == "shim":
        assert result.returncode != 0 and "torchvision::nms" in result.stderr
    else:
        assert result.returncode == 0


def test_idempotent():
    first = ensure_torchvision_ops()
    assert ensure_torchvision_ops() == first
    assert import_torchvision() is import_torchvision()
    assert torch.ops.torchvision.nms(torch.zeros(0, 4), torch.zeros(0), 0.5).numel() == 0
