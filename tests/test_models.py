import pytest
import torch

from fedrobust.errors import ConfigError
from fedrobust.models import CLASSIFIERS, MODEL_NAMES, SEGMENTERS, build_model, count_parameters


@pytest.mark.parametrize("name", CLASSIFIERS)
@pytest.mark.parametrize("channels", [1, 3])
def test_forward_backward(name, channels):
    size = 32 if name == "densenet121" else 28
    model = build_model(name, channels, 7, size)
    out = model(torch.rand(2, channels, size, size))
    assert out.shape == (2, 7)
    out.sum().backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_registry_has_the_designed_models():
    assert {"densenet121", "mobilenet_v2", "resnet18", "resnet50", "student"} <= set(MODEL_NAMES)


def test_densenet_needs_29_px():
    with pytest.raises(ConfigError, match=r"data\.image_size = 32"):
        build_model("densenet121", 1, 2, 28)


def test_student_is_small():
    assert count_parameters(build_model("student", 3, 8, 28)) <= 150_000


def test_small_stem_keeps_resolution():
    model = build_model("resnet18", 1, 2, 28, small_stem=True)
    assert model.conv1.stride == (1, 1) and isinstance(model.maxpool, torch.nn.Identity)
    assert model(torch.rand(2, 1, 28, 28)).shape == (2, 2)


def test_pretrained_from_local_file(tmp_path):
    source = build_model("resnet18", 3, 1000, 28)  # e.g. an ImageNet-shaped checkpoint
    path = tmp_path / "w.pt"
    torch.save(source.state_dict(), path)
    model = build_model("resnet18", 3, 2, 28, pretrained=str(path))
    assert torch.equal(model.conv1.weight, source.conv1.weight)
    assert model.fc.weight.shape == (2, 512)  # mismatched head left at random init
    (tmp_path / "junk.pt").write_bytes(b"junk")
    with pytest.raises(ConfigError, match="cannot read"):
        build_model("resnet18", 3, 2, 28, pretrained=str(tmp_path / "junk.pt"))
    torch.save(build_model("student", 1, 2, 28).state_dict(), tmp_path / "student.pt")
    with pytest.raises(ConfigError, match="no tensor"):
        build_model("resnet18", 3, 2, 28, pretrained=str(tmp_path / "student.pt"))


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v2", "student"])
def test_group_norm_variant(name):
    model = build_model(name, 1, 2, 28, norm="group")
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    assert any(isinstance(m, torch.nn.GroupNorm) for m in model.modules())
    model.train()
    assert model(torch.rand(1, 1, 28, 28)).shape == (1, 2)  # batch of one: no batch statistics needed
    with pytest.raises(ConfigError, match="norm"):
        build_model("densenet121", 1, 2, 32, norm="group")


@pytest.mark.parametrize("name", SEGMENTERS)
def test_unets_give_one_logit_per_pixel(name):
    model = build_model(name, 3, 1, 64)
    out = model(torch.rand(2, 3, 64, 64))
    assert out.shape == (2, 1, 64, 64)
    out.mean().backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_the_unet_student_fits_the_edge_budget():
    assert count_parameters(build_model("unet_student", 3, 1, 128)) <= 500_000
    student = count_parameters(build_model("unet_student", 3, 1, 128))
    assert count_parameters(build_model("unet", 3, 1, 128)) > 3 * student


def test_medmnist_configs_refuse_a_segmenter():
    from fedrobust.config import load_config

    with pytest.raises(ConfigError, match=r"model\.name: got 'unet'"):
        load_config(None, ["model.name=unet"])
