"""Common corruptions at five severities: what a clinical model meets before any attacker does.

The kinds of MedMNIST-C / ImageNet-C (noise, blur, contrast, brightness, gamma, pixelation, JPEG), applied
with torch, torchvision and Pillow at the run's own image size (MedMNIST-C's severities are set for 224 px
and it needs ImageMagick). Severities of intensity corruptions are ImageNet-C's where it has them, since a
grey level means the same at any size. Spatial ones (blur sigma, motion length) are set for 28 px, where
ImageNet-C's 224-px values would shrink to under a pixel, and scale linearly with the image size; pixelate
is a fraction of the size already. Every corruption is seeded, so all targets see the same images.
"""

from __future__ import annotations

import io
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from fedrobust.tvcompat import import_torchvision

Corruption = Callable[[torch.Tensor, int, torch.Generator], torch.Tensor]  # (x, severity 1..5, generator)
SEVERITIES = (1, 2, 3, 4, 5)
_BASE = 28  # spatial severities are defined at this size


def _pick(values: tuple[float, ...], s: int) -> float:
    return values[s - 1]


def _scaled(px: float, x: torch.Tensor) -> float:
    return px * x.shape[-1] / _BASE


def gaussian_noise(x: torch.Tensor, s: int, g: torch.Generator) -> torch.Tensor:
    return x + torch.randn(x.shape, generator=g) * _pick((0.08, 0.12, 0.18, 0.26, 0.38), s)


def shot_noise(x: torch.Tensor, s: int, g: torch.Generator) -> torch.Tensor:
    lam = _pick((60, 25, 12, 5, 3), s)
    return torch.poisson(x * lam, generator=g) / lam


def gaussian_blur_(x: torch.Tensor, s: int, g: torch.Generator) -> torch.Tensor:
    sigma = _scaled(_pick((0.4, 0.6, 0.8, 1.1, 1.5), s), x)
    k = 2 * int(np.ceil(3 * sigma)) + 1
    import_torchvision()  # on the CPU torch build, through the remedy (fedrobust.tvcompat)
    from torchvision.transforms.functional import gaussian_blur

    return gaussian_blur(x, [k, k], [sigma, sigma])


def motion_blur(x: torch.Tensor, s: int, g: torch.Generator) -> torch.Tensor:
    """A line kernel of the severity's length at a seeded angle per image (camera or patient motion)."""
    length = max(2, round(_scaled(_pick((2, 3, 4, 5, 7), s), x)))
    out = torch.empty_like(x)
    angles = torch.rand(len(x), generator=g) * np.pi
    size = 2 * length + 1
    for i, a in enumerate(angles.tolist()):
        kernel = torch.zeros(size, size)
        for t in np.linspace(-length / 2, length / 2, 4 * length):
            kernel[round(length + t * np.sin(a)), round(length + t * np.cos(a))] = 1.0
        kernel = (kernel / kernel.sum()).expand(x.shape[1], 1, size, size)
        padded = F.pad(x[i:i + 1], [length] * 4, mode="replicate")
        out[i] = F.conv2d(padded, kernel, groups=x.shape[1])[0]
    return out


def contrast_down(x: torch.Tensor, s: int, g: torch.Generator) -> torch.Tensor:
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * _pick((0.75, 0.6, 0.45, 0.3, 0.2), s) + mean


def contrast_up(x: torch.Tensor, s: int, g: torch.Generator) -> torch.Tensor:
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * _pick((1.25, 1.5, 1.75, 2.0, 2.5), s) + mean


def brightness_up(x: torch.Tensor, s: int, g: torch.Generator) -> torch.Tensor:
    return x + _pick((0.1, 0.2, 0.3, 0.4, 0.5), s)


def brightness_down(x: torch.Tensor, s: int, g: torch.Generator) -> torch.Tensor:
    return x - _pick((0.1, 0.2, 0.3, 0.4, 0.5), s)


def gamma(x: torch.Tensor, s: int, g: torch.Generator) -> torch.Tensor:
    return x.clamp(0, 1) ** _pick((1.3, 1.6, 2.0, 2.5, 3.0), s)


def pixelate(x: torch.Tensor, s: int, g: torch.Generator) -> torch.Tensor:
    size = x.shape[-1]
    small = max(2, round(size * _pick((0.6, 0.5, 0.4, 0.3, 0.25), s)))
    down = F.interpolate(x, size=(small, small), mode="area")
    return F.interpolate(down, size=x.shape[-2:], mode="nearest")


def jpeg(x: torch.Tensor, s: int, g: torch.Generator) -> torch.Tensor:
    quality = int(_pick((25, 18, 15, 10, 7), s))
    out = []
    for img in (x.clamp(0, 1) * 255).round().to(torch.uint8).numpy():
        pil = Image.fromarray(img[0] if img.shape[0] == 1 else img.transpose(1, 2, 0))
        buf = io.BytesIO()
        pil.save(buf, format="JPEG", quality=quality)
        arr = np.asarray(Image.open(buf), dtype=np.float32) / 255.0
        out.append(arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1))
    return torch.from_numpy(np.stack(out))


CORRUPTIONS: dict[str, Corruption] = {
    "gaussian_noise": gaussian_noise, "shot_noise": shot_noise, "gaussian_blur": gaussian_blur_,
    "motion_blur": motion_blur, "contrast_down": contrast_down, "contrast_up": contrast_up,
    "brightness_up": brightness_up, "brightness_down": brightness_down, "gamma": gamma, "pixelate": pixelate,
    "jpeg": jpeg,
}


def corrupt(x: torch.Tensor, name: str, severity: int, seed: int) -> torch.Tensor:
    """``x`` (N, C, H, W) in [0, 1] under corruption ``name`` at ``severity`` (1..5), clipped to [0, 1]."""
    if severity not in SEVERITIES:
        raise ValueError(f"severity must be one of {SEVERITIES}, got {severity}")
    generator = torch.Generator().manual_seed(seed)
    return CORRUPTIONS[name](x.detach().float(), severity, generator).clamp(0.0, 1.0).contiguous()
