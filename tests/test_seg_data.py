"""Segmentation data layer: Kvasir-SEG split and loading, bad folders and files, hospital partitions by mask."""

from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fedrobust.data.mask_partition import (
    MASK_SCHEMES,
    foreground_fraction,
    partition_masks,
    size_bins,
    size_table,
)
from fedrobust.data.segmentation import (
    DEFAULT_SEG_ROOT,
    ENV_SEG_ROOT,
    SPLITS,
    load_seg_split,
    resolve_seg_root,
    scan_pairs,
    split_names,
)
from fedrobust.errors import ConfigError, DataError


def _one_line(exc_type, fn, *args, **kwargs) -> str:
    with pytest.raises(exc_type) as info:
        fn(*args, **kwargs)
    msg = str(info.value)
    assert "\n" not in msg, msg
    return msg


# ------------------------------------------------------------------------------------------- real data


def test_real_split_is_fixed_and_order_free(seg_root):
    names = list(scan_pairs(resolve_seg_root(seg_root)))
    assert len(names) == 1000
    split = split_names(names)
    sizes = {s: len(split[s]) for s in SPLITS}
    assert sum(sizes.values()) == 1000 and set().union(*split.values()) == set(names)
    assert sizes == {"train": 818, "val": 100, "test": 82}  # pinned: the split must never change silently
    shuffled = names[:]
    random.Random(3).shuffle(shuffled)
    assert split_names(shuffled) == split == split_names(names)
    assert all(split[s] == sorted(split[s]) for s in SPLITS)
    assert split_names(names, seed=1) != split


def test_real_test_split_loads(seg_root):
    s = load_seg_split("test", seg_root, image_size=64)
    n = len(s)
    assert s.images.shape == (n, 3, 64, 64) and s.masks.shape == (n, 1, 64, 64)
    assert s.images.dtype == torch.float32 and s.masks.dtype == torch.float32
    assert set(s.masks.unique().tolist()) == {0.0, 1.0}
    assert float(s.images.min()) >= 0.0 and float(s.images.max()) <= 1.0 and float(s.images.max()) > 0.5
    fractions = foreground_fraction(s.masks)
    assert 0.05 < fractions.mean() < 0.4 and (fractions > 0).all()  # Kvasir-SEG has no empty mask
    assert s.names == split_names(list(scan_pairs(resolve_seg_root(seg_root))))["test"]
    assert load_seg_split("test", seg_root, image_size=64) is s  # cached
    sub = s.subset([2, 0])
    assert sub.names == [s.names[2], s.names[0]] and torch.equal(sub.masks[1], s.masks[0])


def test_real_val_partitions(seg_root):
    masks = load_seg_split("val", seg_root, image_size=32).masks
    for scheme in MASK_SCHEMES:
        parts = partition_masks(masks, 4, scheme, seed=1, alpha=0.5, min_samples=5)
        assert sorted(np.concatenate(parts).tolist()) == list(range(len(masks)))
        assert size_table(masks, parts).sum() == len(masks)


def test_root_resolution(monkeypatch, tmp_path):
    monkeypatch.setenv(ENV_SEG_ROOT, str(tmp_path / "env"))
    assert resolve_seg_root(tmp_path / "arg") == tmp_path / "arg" / "kvasir-seg"
    assert resolve_seg_root(None) == tmp_path / "env" / "kvasir-seg"
    monkeypatch.delenv(ENV_SEG_ROOT)
    assert resolve_seg_root(None) == Path(DEFAULT_SEG_ROOT).expanduser() / "kvasir-seg"
    flat = tmp_path / "flat"
    (flat / "images").mkdir(parents=True)
    (flat / "masks").mkdir()
    assert resolve_seg_root(flat) == flat  # any folder in the images/ + masks/ layout
    (flat / "kvasir-seg").mkdir()
    assert resolve_seg_root(flat) == flat / "kvasir-seg"


# -------------------------------------------------------------------------------------- small folders

_CANDIDATES = split_names([f"p{i:03d}" for i in range(200)])


def _names(per_split: int = 2) -> dict[str, list[str]]:
    """Names that the fixed split puts in each split, so a test knows where its bad file lands."""
    return {s: _CANDIDATES[s][:per_split] for s in SPLITS}


def _square(size: int, lo: int, hi: int) -> np.ndarray:
    m = np.zeros((size, size), np.uint8)
    m[lo:hi, lo:hi] = 255
    return m


def _write(folder: Path, names: list[str], size: int = 32, offset=lambda i: 8, side: int = 16) -> Path:
    """Each image: dark noise with a pure red square; its mask: the same square."""
    (folder / "images").mkdir(parents=True, exist_ok=True)
    (folder / "masks").mkdir(exist_ok=True)
    rng = np.random.default_rng(0)
    for i, name in enumerate(names):
        o = offset(i)
        rgb = rng.integers(0, 60, (size, size, 3), dtype=np.uint8)
        rgb[..., 0] = _square(size, o, o + side)
        Image.fromarray(rgb).save(folder / "images" / f"{name}.png")
        Image.fromarray(_square(size, o, o + side)).save(folder / "masks" / f"{name}.png")
    return folder


def _all_names() -> list[str]:
    return [n for s in SPLITS for n in _names()[s]]


def test_resize_keeps_masks_binary_and_aligned(tmp_path):
    names = _all_names()
    offsets = {name: 2 * (i % 5) for i, name in enumerate(names)}  # squares at different places per pair
    folder = _write(tmp_path / "d", names, offset=lambda i: 2 * (i % 5))
    for size, scale in ((16, 0.5), (32, 1), (64, 2)):
        s = load_seg_split("test", folder, image_size=size)
        assert set(s.masks.unique().tolist()) == {0.0, 1.0}
        for name, image, mask in zip(s.names, s.images, s.masks, strict=True):
            lo, hi = int(offsets[name] * scale), int((offsets[name] + 16) * scale)
            expected = torch.from_numpy(_square(size, lo, hi) > 0).float()
            assert torch.equal(mask[0], expected), (size, name)
            assert torch.equal(image[0] > 0.5, mask[0] > 0.5)  # the image's red square sits under its mask


def test_fractional_scale_keeps_square_in_place(tmp_path):
    folder = _write(tmp_path / "d", _all_names(), size=48, offset=lambda i: 12, side=24)
    s = load_seg_split("test", folder, image_size=32)  # 48 -> 32: the square [12, 36) lands on [8, 24)
    expected = torch.from_numpy(_square(32, 8, 24) > 0).float()
    assert all(torch.equal(m[0], expected) for m in s.masks)


def test_jpeg_mask_with_edge_values_is_accepted(tmp_path):
    folder = tmp_path / "jpeg"
    names = _all_names()
    _write(folder, names, size=64)
    for name in names:
        (folder / "masks" / f"{name}.png").unlink()
        Image.fromarray(_square(64, 13, 45)).save(folder / "masks" / f"{name}.JPG", quality=75)
    raw = np.array(Image.open(folder / "masks" / f"{names[0]}.JPG").convert("L"))
    assert ((raw != 0) & (raw != 255)).any()  # really has compression noise along the edges
    s = load_seg_split("val", folder, image_size=64)
    assert len(s) == 2
    assert torch.equal(s.masks[0, 0], torch.from_numpy(_square(64, 13, 45) > 0).float())


def test_missing_folders(tmp_path):
    msg = _one_line(DataError, load_seg_split, "test", tmp_path / "nowhere", image_size=32)
    assert str(tmp_path / "nowhere") in msg and ENV_SEG_ROOT in msg
    (tmp_path / "half" / "images").mkdir(parents=True)
    msg = _one_line(DataError, load_seg_split, "test", tmp_path / "half", image_size=32)
    assert "masks/" in msg and str(tmp_path / "half") in msg
    (tmp_path / "empty" / "kvasir-seg" / "images").mkdir(parents=True)
    (tmp_path / "empty" / "kvasir-seg" / "masks").mkdir()
    msg = _one_line(DataError, load_seg_split, "test", tmp_path / "empty", image_size=32)
    assert "no PNG or JPEG" in msg


def test_unpaired_files(tmp_path):
    names = _all_names()
    folder = _write(tmp_path / "d", names)
    (folder / "masks" / f"{names[3]}.png").unlink()
    msg = _one_line(DataError, load_seg_split, "train", folder, image_size=32)
    assert f"images/{names[3]}.png" in msg and "no mask" in msg
    (folder / "masks" / f"{names[4]}.png").unlink()
    msg = _one_line(DataError, load_seg_split, "train", folder, image_size=32)
    assert "2 images have no mask" in msg and f"images/{min(names[3], names[4])}.png" in msg
    folder = _write(tmp_path / "e", names)
    (folder / "images" / f"{names[0]}.png").unlink()
    msg = _one_line(DataError, load_seg_split, "train", folder, image_size=32)
    assert f"masks/{names[0]}.png" in msg and "no image" in msg
    folder = _write(tmp_path / "f", names)
    Image.new("RGB", (32, 32)).save(folder / "images" / f"{names[0]}.jpg")
    msg = _one_line(DataError, load_seg_split, "train", folder, image_size=32)
    assert f"{names[0]}.jpg" in msg and f"{names[0]}.png" in msg


def test_bad_files_name_the_file(tmp_path):
    victim = _names()["test"][0]
    cases = {
        "garbage": lambda f: (f / "images" / f"{victim}.png").write_bytes(b"not a png at all"),
        "truncated": lambda f: (f / "masks" / f"{victim}.png").write_bytes(
            (f / "masks" / f"{victim}.png").read_bytes()[:60]),
        "grey": lambda f: Image.fromarray(np.tile(np.arange(0, 256, 8, dtype=np.uint8), (32, 1))).save(
            f / "masks" / f"{victim}.png"),
        "zero-one": lambda f: Image.fromarray((_square(32, 8, 24) > 0).astype(np.uint8)).save(
            f / "masks" / f"{victim}.png"),
        "size": lambda f: Image.fromarray(_square(16, 4, 12)).save(f / "masks" / f"{victim}.png"),
        "16-bit": lambda f: Image.fromarray(np.zeros((32, 32), np.uint16)).save(f / "images" / f"{victim}.png"),
    }
    expect = {"garbage": "not a readable image", "truncated": "not a readable image", "grey": "not a two-valued mask",
              "zero-one": "0 and 1", "size": "same size", "16-bit": "not 8-bit"}
    for case, spoil in cases.items():
        folder = _write(tmp_path / case, _all_names())
        spoil(folder)
        load_seg_split("val", folder, image_size=32)  # only the requested split's files are decoded
        msg = _one_line(DataError, load_seg_split, "test", folder, image_size=32)
        assert expect[case] in msg and f"{victim}.png" in msg, (case, msg)
        if case == "size":
            assert f"images/{victim}.png" in msg and f"masks/{victim}.png" in msg


def test_changed_file_is_reloaded(tmp_path):
    folder = _write(tmp_path / "d", _all_names())
    assert len(load_seg_split("test", folder, image_size=32)) == 2
    victim = folder / "masks" / f"{_names()['test'][1]}.png"
    Image.fromarray(np.full((32, 32), 128, np.uint8)).save(victim)
    os.utime(victim, ns=(1, 1))  # a different modification time even on a coarse-clock file system
    assert "two-valued" in _one_line(DataError, load_seg_split, "test", folder, image_size=32)


def test_empty_split_and_bad_arguments(tmp_path):
    folder = _write(tmp_path / "d", _names(3)["train"])
    msg = _one_line(DataError, load_seg_split, "train", folder, image_size=32)
    assert "val split is empty" in msg and "3 images" in msg and str(folder) in msg
    assert "test split is empty" in _one_line(DataError, split_names, _names(3)["train"] + _names(3)["val"])
    folder = _write(tmp_path / "e", _all_names())
    for bad in (60, 0, -16, 8, 32.0):
        msg = _one_line(ConfigError, load_seg_split, "test", folder, image_size=bad)
        assert msg.startswith("data.image_size:") and "multiple of 16 for the UNet" in msg
    assert "choose one of train, val, test" in _one_line(DataError, load_seg_split, "dev", folder, image_size=32)
    _one_line(ConfigError, split_names, ["a"], fractions=(0.5, 0.2, 0.2))


# ------------------------------------------------------------------------------------------ partitions


def _masks(n: int = 120, size: int = 16, seed: int = 0) -> torch.Tensor:
    """Square polyps of random side: foreground fractions from 1/256 to 225/256."""
    rng = np.random.default_rng(seed)
    out = torch.zeros(n, 1, size, size)
    for i, side in enumerate(rng.integers(1, size, n)):
        out[i, 0, :side, :side] = 1.0
    return out


def test_every_image_exactly_once_never_pixels():
    masks = _masks()
    for scheme in MASK_SCHEMES:
        parts = partition_masks(masks, 5, scheme, seed=2, alpha=0.3, min_samples=3)
        flat = np.concatenate(parts)
        assert len(flat) == len(masks) and sorted(flat.tolist()) == list(range(len(masks)))  # N, not N*H*W
        assert all(p.dtype == np.int64 and np.array_equal(p, np.sort(p)) and len(p) >= 3 for p in parts)
        again = partition_masks(masks.clone(), 5, scheme, seed=2, alpha=0.3, min_samples=3)
        assert all(np.array_equal(a, b) for a, b in zip(parts, again, strict=True))  # a pure function
    with pytest.raises(ValueError, match="N x 1 x H x W"):
        partition_masks(torch.zeros(120), 5, "iid")


def test_dirichlet_skews_polyp_size():
    masks = _masks()
    fractions = foreground_fraction(masks)

    def spread(scheme: str) -> float:
        out = []
        for seed in range(5):
            parts = partition_masks(masks, 4, scheme, seed=seed, alpha=0.1, min_samples=2)
            out.append(np.std([fractions[p].mean() for p in parts]))
        return float(np.mean(out))

    assert spread("dirichlet") > 2 * spread("iid")
    table = size_table(masks, partition_masks(masks, 4, "dirichlet", seed=0, alpha=0.1, min_samples=2))
    assert table.shape == (4, 4) and table.sum() == len(masks)


def test_quantity_skew_sizes():
    masks = _masks()
    sizes = [len(p) for p in partition_masks(masks, 6, "quantity", seed=0, alpha=0.5, min_samples=4)]
    assert sum(sizes) == len(masks) and min(sizes) >= 4 and max(sizes) - min(sizes) > 10
    iid = [len(p) for p in partition_masks(masks, 6, "iid", seed=0)]
    assert max(iid) - min(iid) <= 1


def test_size_bins_are_balanced_quantiles():
    fractions = foreground_fraction(_masks())
    ids = size_bins(fractions, 4)
    assert np.bincount(ids).tolist() == [30, 30, 30, 30]
    order = np.argsort(fractions, kind="stable")
    assert np.all(np.diff(ids[order]) >= 0)  # bin 0 holds the smallest polyps
    assert np.bincount(size_bins(np.zeros(10), 3)).tolist() == [4, 3, 3]  # ties still balanced
    assert foreground_fraction(torch.ones(3, 8, 8)).tolist() == [1.0, 1.0, 1.0]


def test_impossible_partitions():
    masks = _masks(10)
    cases = [
        ({"num_clients": 0, "scheme": "iid"}, "num_clients"),
        ({"num_clients": 4, "scheme": "iid", "min_samples": 3}, "exceeds the 10"),
        ({"num_clients": 2, "scheme": "quantity", "alpha": 0.0}, "partition.alpha"),
        ({"num_clients": 2, "scheme": "shards"}, "iid, quantity, dirichlet"),
        ({"num_clients": 2, "scheme": "dirichlet", "bins": 0}, "partition.bins"),
        ({"num_clients": 5, "scheme": "dirichlet", "alpha": 0.001, "min_samples": 2}, "could not give"),
    ]
    for kwargs, fragment in cases:
        assert fragment in _one_line(ConfigError, partition_masks, masks, **kwargs), kwargs
