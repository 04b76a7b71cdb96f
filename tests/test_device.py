"""``run.device``: resolved once, the model placed where it is built, everything else following the model.

No GPU here, so the checks are: ``auto`` picks the CPU, ``cuda`` fails at start in one line, the GPU share reaches
Ray, and on PyTorch's ``meta`` device (data-less tensors that refuse to meet a CPU tensor) every attack and the
adversarial augmentation create their tensors where their inputs live, never on the CPU by default.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

from fedrobust.attacks import fgsm, invfgsm, pgd, sign_noise, uniform_noise
from fedrobust.attacks.fgsm import signed_step
from fedrobust.augment import AdversarialPolicy
from fedrobust.config import AugmentSection, ExperimentConfig, load_config
from fedrobust.device import cpu_state, device_of, resolve_device
from fedrobust.errors import ConfigError
from fedrobust.models.from_config import model_for
from fedrobust.train.prior import OffsetLogits
from launcher.cli import main
from launcher.simulation import _federation_config

META = torch.device("meta")
no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the machine without CUDA")


@no_cuda
def test_auto_is_the_cpu_and_the_model_is_built_there():
    assert resolve_device("auto") == torch.device("cpu")
    cfg = load_config(None, ["model.name=student"])
    assert cfg.run.device == "auto" and device_of(model_for(cfg)).type == "cpu"


@no_cuda
def test_cuda_without_cuda_is_one_config_error():
    with pytest.raises(ConfigError, match=r"^run.device: 'cuda' but torch .* sees no CUDA device; use"):
        resolve_device("cuda")
    with pytest.raises(ConfigError, match=r"^run.device: got 'gpu'; choose auto, cpu, cuda or cuda:N"):
        load_config(None, ["run.device=gpu"])


@no_cuda
@pytest.mark.parametrize("command", ["train", "simulate"])
def test_cuda_fails_at_start_with_one_line_and_leaves_nothing(command, tmp_path, capsys):
    out = tmp_path / "runs"
    assert main([command, "--set", "run.device=cuda", "--set", f"run.out_dir='{out}'"]) == 2
    err = capsys.readouterr().err.strip()
    assert "run.device: 'cuda'" in err and err.count("\n") == 0 and "Traceback" not in err, err
    assert not out.exists() or not any(out.iterdir())


def test_a_gpu_share_reaches_ray_and_cuda_without_one_is_refused():
    cfg = ExperimentConfig()
    assert "num-gpus" not in _federation_config(cfg)
    cfg.simulation = dataclasses.replace(cfg.simulation, gpus_per_client=0.25)
    assert "client-resources-num-gpus=0.25" in _federation_config(cfg)
    cfg.simulation = dataclasses.replace(cfg.simulation, gpus_per_client=0.0)
    cfg.run.device = "cuda"
    with pytest.raises(ConfigError, match=r"^simulation.gpus_per_client: run.device is cuda"):
        _federation_config(cfg)
    with pytest.raises(ConfigError, match=r"^simulation.gpus_per_client: must be >= 0"):
        load_config(None, ["simulation.gpus_per_client=-1"])


class _Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.head = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.conv(x).mean((2, 3)))


def _on_meta() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    return _Tiny().to(META), torch.rand(6, 1, 8, 8).to(META), torch.tensor([0, 1, 0, 1, 1, 0]).to(META)


def test_attacks_create_their_tensors_on_the_model_and_input_device():
    model, x, y = _on_meta()
    g = torch.Generator().manual_seed(0)  # a CPU generator, as training and sweeps use
    per_sample = torch.full((6,), 0.01)  # per-sample eps arrive from the CPU
    outs = [fgsm(model, x, y, 0.01), invfgsm(model, x, y, per_sample), pgd(model, x, y, 0.01, steps=2, generator=g),
            pgd(model, x, y, per_sample, steps=1, generator=g), uniform_noise(x, 0.01, g), sign_noise(x, 0.01, g),
            signed_step(x, x, per_sample, 1.0)]
    assert all(o.device == META and o.shape == x.shape for o in outs)


@pytest.mark.parametrize("mode", ["fgsm", "invfgsm", "both", "pgd"])
@pytest.mark.parametrize("sampling", ["fixed", "uniform"])
def test_adversarial_augmentation_follows_the_batch_device(mode, sampling):
    model, x, y = _on_meta()
    policy = AdversarialPolicy(AugmentSection(mode=mode, eps=0.01, eps_sampling=sampling, fraction=0.5, pgd_steps=1))
    batch = policy.augment(model, x, y)
    assert batch.x.device == META and batch.y.device == META
    fused = policy.augment(model, x, y, input_grad=torch.ones_like(x))
    assert fused.x.device == META


def test_the_logit_offset_and_the_state_sent_follow_the_model():
    model = _Tiny().to(META)
    assert OffsetLogits(model, torch.zeros(2)).offset.device == META
    cpu = _Tiny()
    assert all(v.device.type == "cpu" for v in cpu_state(cpu).values())
    assert cpu_state(cpu)["head.weight"].data_ptr() != cpu.state_dict()["head.weight"].data_ptr()  # a copy
