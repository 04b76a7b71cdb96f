"""Name -> builder registry (as in timm): every architecture is built the same way.

Builders take ``(in_channels, num_classes, image_size)`` and return a randomly initialised
``nn.Module``: a classifier gives ``(N, num_classes)`` logits, a segmenter ``(N, num_classes, H, W)``
per-pixel logits (``num_classes = 1`` for a binary mask; MONAI's UNet). ImageNet weights cannot be fetched from a hub
here; ``pretrained`` takes a local state_dict file instead. Importing the registry loads neither
torch nor torchvision (each builder imports what it builds), so a config is checked in a blink.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from fedrobust.errors import ConfigError

if TYPE_CHECKING:
    from torch import nn

Builder = Callable[..., "nn.Module"]
NORMS = ("batch", "group")


def group_norm(channels: int) -> nn.GroupNorm:
    """GroupNorm with up to 32 groups: batch-independent, so non-IID clients share no statistics
    (Hsieh et al., 2020, "The Non-IID Data Quagmire"); a drop-in for BatchNorm in federated runs."""
    from torch import nn

    return nn.GroupNorm(math.gcd(channels, 32), channels)


def _norm_layer(norm: str) -> Callable[[int], nn.Module] | None:
    return group_norm if norm == "group" else None


def _torchvision():
    from fedrobust.tvcompat import import_torchvision

    return import_torchvision()


_REGISTRY: dict[str, tuple[Builder, int]] = {}  # name -> (builder, minimum image size)
_KINDS: dict[str, str] = {}  # name -> "classifier" | "segmenter"


def register(name: str, min_size: int = 1, kind: str = "classifier") -> Callable[[Builder], Builder]:
    """Decorator adding a builder to the registry under ``name``."""

    def wrap(fn: Builder) -> Builder:
        _REGISTRY[name] = (fn, min_size)
        _KINDS[name] = kind
        return fn

    return wrap


def model_kind(name: str) -> str:
    """What a registered model's output is: "classifier" (logits per image) or "segmenter" (per pixel)."""
    return _KINDS[name]


def _small_stem(model: nn.Module, attr: str, in_channels: int) -> None:
    """3x3 stride-1 first conv (no downsampling stem), the usual CIFAR/MedMNIST adaptation."""
    from torch import nn

    old = getattr(model, attr)
    setattr(model, attr, nn.Conv2d(in_channels, old.out_channels, 3, 1, 1, bias=False))


def _swap_first_conv(conv: nn.Conv2d, in_channels: int) -> nn.Conv2d:
    from torch import nn

    if conv.in_channels == in_channels:
        return conv
    return nn.Conv2d(in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                     bias=conv.bias is not None)


def _resnet(arch: str) -> Builder:
    """torchvision's ``arch`` (resnet18 / resnet50) for ``in_channels``, optionally with the small stem."""

    def build(in_channels: int, num_classes: int, image_size: int, small_stem: bool = False,
              norm: str = "batch") -> nn.Module:
        from torch import nn

        m = getattr(_torchvision().models, arch)(num_classes=num_classes, norm_layer=_norm_layer(norm))
        m.conv1 = _swap_first_conv(m.conv1, in_channels)
        if small_stem:
            _small_stem(m, "conv1", in_channels)
            m.maxpool = nn.Identity()
        return m

    return build


register("resnet18")(_resnet("resnet18"))
register("resnet50")(_resnet("resnet50"))


@register("mobilenet_v2")
def mobilenet_v2(in_channels: int, num_classes: int, image_size: int, small_stem: bool = False,
                 norm: str = "batch") -> nn.Module:
    from torch import nn

    m = _torchvision().models.mobilenet_v2(num_classes=num_classes, norm_layer=_norm_layer(norm))
    first = m.features[0][0]
    m.features[0][0] = _swap_first_conv(first, in_channels)
    if small_stem:
        m.features[0][0] = nn.Conv2d(in_channels, first.out_channels, 3, 1, 1, bias=False)
    return m


@register("densenet121", min_size=29)
def densenet121(in_channels: int, num_classes: int, image_size: int, small_stem: bool = False,
                norm: str = "batch") -> nn.Module:
    if norm != "batch":
        raise ConfigError("model.norm: torchvision's densenet121 has no norm_layer option; use norm = 'batch'")
    from torch import nn

    m = _torchvision().models.densenet121(num_classes=num_classes)
    m.features.conv0 = _swap_first_conv(m.features.conv0, in_channels)
    if small_stem:
        _small_stem(m.features, "conv0", in_channels)
        m.features.pool0 = nn.Identity()
    return m


@register("student")
def student(in_channels: int, num_classes: int, image_size: int, small_stem: bool = False,
            norm: str = "batch") -> nn.Module:
    from torch import nn

    from fedrobust.models.student import StudentCNN

    return StudentCNN(in_channels, num_classes, norm_layer=_norm_layer(norm) or nn.BatchNorm2d)


def _unet(channels: tuple[int, ...]) -> Builder:
    """MONAI's 2D UNet with residual units; ``num_classes`` output channels of per-pixel logits. Images
    must be a multiple of 2 ** (levels - 1) px."""

    def build(in_channels: int, num_classes: int, image_size: int, small_stem: bool = False,
              norm: str = "batch") -> nn.Module:
        if norm != "batch":  # MONAI normalises its 1-channel output block too: no group count fits every layer
            raise ConfigError("model.norm: the UNets take norm = 'batch'")
        from monai.networks.nets import UNet

        return UNet(spatial_dims=2, in_channels=in_channels, out_channels=num_classes, channels=channels,
                    strides=(2,) * (len(channels) - 1), num_res_units=2, norm="batch")

    return build


register("unet", min_size=16, kind="segmenter")(_unet((16, 32, 64, 128, 256)))  # 1.6 M parameters: the teacher
register("unet_student", min_size=16, kind="segmenter")(_unet((8, 16, 32, 64, 128)))  # 0.41 M: the edge student


MODEL_NAMES: tuple[str, ...] = tuple(_REGISTRY)
CLASSIFIERS: tuple[str, ...] = tuple(n for n in MODEL_NAMES if _KINDS[n] == "classifier")
SEGMENTERS: tuple[str, ...] = tuple(n for n in MODEL_NAMES if _KINDS[n] == "segmenter")


def _load_pretrained(model: nn.Module, path: str) -> None:
    """Load a local state_dict; tensors whose shapes differ (e.g. a 1000-class head) are skipped."""
    import torch

    try:
        state = torch.load(Path(path), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ConfigError(
            f"model.pretrained: cannot read {path} as a torch state_dict ({type(exc).__name__})"
        ) from None
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]  # a fedrobust checkpoint
    if not isinstance(state, dict):
        raise ConfigError(f"model.pretrained: {path} holds a {type(state).__name__}, not a state_dict")
    own = model.state_dict()
    usable = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    if not usable:
        raise ConfigError(f"model.pretrained: no tensor in {path} matches this architecture; wrong model.name?")
    model.load_state_dict(usable, strict=False)


def build_model(
    name: str,
    in_channels: int,
    num_classes: int,
    image_size: int,
    *,
    pretrained: str = "",
    small_stem: bool = False,
    norm: str = "batch",
) -> nn.Module:
    """Build a registered model; checks the image size it needs."""
    if name not in _REGISTRY:
        raise ConfigError(f"model.name: unknown model {name!r}; choose one of {', '.join(_REGISTRY)}")
    builder, min_size = _REGISTRY[name]
    if image_size < min_size and not small_stem:
        raise ConfigError(
            f"model.name: {name} needs images of at least {min_size} px, got {image_size}; "
            f"set data.image_size = 32"
        )
    if norm not in NORMS:
        raise ConfigError(f"model.norm: got {norm!r}; choose one of {', '.join(NORMS)}")
    model = builder(in_channels, num_classes, image_size, small_stem=small_stem, norm=norm)
    if pretrained:
        _load_pretrained(model, pretrained)
    return model


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
