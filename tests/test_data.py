import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import write_fake_medmnist

from fedrobust.data.catalog import dataset_info
from fedrobust.data.loading import ENV_ROOT, load_split, resolve_data_root
from fedrobust.errors import DataError


def _one_line_error(fn, *args, **kwargs) -> str:
    with pytest.raises(DataError) as info:
        fn(*args, **kwargs)
    msg = str(info.value)
    assert "\n" not in msg, msg
    return msg


@pytest.mark.parametrize("flag", ["breastmnist", "pneumoniamnist"])
def test_real_splits(data_root, flag):
    info = dataset_info(flag)
    for split in ("train", "val", "test"):
        s = load_split(flag, split, data_root)
        assert s.images.shape == (info.n_samples[split], 1, 28, 28)
        assert s.images.dtype == torch.float32
        assert float(s.images.min()) >= 0.0 and float(s.images.max()) <= 1.0
        assert float(s.images.max()) > 0.5  # really scaled from uint8, not left at 0..1/255
        assert s.labels.dtype == torch.int64 and set(s.labels.unique().tolist()) == {0, 1}


def test_rgb_and_resize(data_root):
    s = load_split("breastmnist", "val", data_root, image_size=32, as_rgb=True)
    assert s.images.shape == (78, 3, 32, 32)
    assert torch.equal(s.images[:, 0], s.images[:, 2])
    assert float(s.images.min()) >= 0.0 and float(s.images.max()) <= 1.0


def test_root_precedence(monkeypatch, tmp_path):
    monkeypatch.setenv(ENV_ROOT, str(tmp_path / "env"))
    assert resolve_data_root(tmp_path / "flag") == tmp_path / "flag"
    assert resolve_data_root(None) == tmp_path / "env"
    monkeypatch.delenv(ENV_ROOT)
    assert resolve_data_root(None) == Path("~/.medmnist").expanduser()


def test_env_root_is_used(monkeypatch, data_root):
    monkeypatch.setenv(ENV_ROOT, str(data_root))
    assert len(load_split("breastmnist", "test")) == 156


def test_missing_file_without_network(tmp_path):
    msg = _one_line_error(load_split, "dermamnist", "train", tmp_path, download=True)
    assert "dermamnist.npz" in msg and "download failed" in msg and "--data-root" in msg
    assert not (tmp_path / "dermamnist.npz").exists()  # nothing half-written left behind
    msg = _one_line_error(load_split, "dermamnist", "train", tmp_path, download=False)
    assert "download is off" in msg


def test_md5_mismatch_is_refused(tmp_path, data_root):
    copy = tmp_path / "breastmnist.npz"
    shutil.copy(data_root / "breastmnist.npz", copy)
    raw = bytearray(copy.read_bytes())
    raw[-100] ^= 0xFF
    copy.write_bytes(bytes(raw))
    msg = _one_line_error(load_split, "breastmnist", "train", tmp_path)
    assert "MD5" in msg and str(copy) in msg and "delete it" in msg


def test_corrupt_npz_without_md5_check(tmp_path):
    (tmp_path / "breastmnist.npz").write_bytes(b"this is not a zip file")
    msg = _one_line_error(load_split, "breastmnist", "train", tmp_path, verify_md5=False)
    assert "not a readable MedMNIST npz" in msg


def test_unknown_and_unsupported_flags(tmp_path):
    assert "unknown MedMNIST flag" in _one_line_error(load_split, "cifar10", "train", tmp_path)
    assert "multi-label" in _one_line_error(load_split, "chestmnist", "train", tmp_path)
    assert "3D" in _one_line_error(load_split, "organmnist3d", "train", tmp_path)
    assert "unknown split" in _one_line_error(load_split, "breastmnist", "dev", tmp_path)


@pytest.mark.parametrize(("flag", "channels", "classes"),
                         [("dermamnist", 3, 7), ("octmnist", 1, 4), ("bloodmnist", 3, 8), ("retinamnist", 3, 5)])
def test_other_sets_from_small_files(tmp_path, flag, channels, classes):
    write_fake_medmnist(tmp_path, flag)
    # the official MD5 cannot match a test file: the check refuses it, and can be turned off
    assert "MD5" in _one_line_error(load_split, flag, "train", tmp_path)
    s = load_split(flag, "train", tmp_path, verify_md5=False)
    assert s.images.shape == (40, channels, 28, 28)
    assert s.info.num_classes == classes and int(s.labels.max()) == classes - 1
    s32 = load_split(flag, "test", tmp_path, verify_md5=False, image_size=32, as_rgb=True)
    assert s32.images.shape == (10, 3, 32, 32)


def test_labels_out_of_range_are_refused(tmp_path):
    path = write_fake_medmnist(tmp_path, "octmnist")
    arrays = dict(np.load(path))
    arrays["val_labels"][0] = 9
    np.savez(path, **arrays)
    assert "labels outside" in _one_line_error(load_split, "octmnist", "val", tmp_path, verify_md5=False)


def test_medmnist_plus_sizes_pick_their_own_file(tmp_path):
    """data.size chooses {flag}_{size}.npz (MedMNIST+); data.image_size still resizes what the model sees."""
    from fedrobust.config import load_config
    from fedrobust.data.loading import load_from_config

    write_fake_medmnist(tmp_path, "dermamnist", size=64).rename(tmp_path / "dermamnist_64.npz")
    big = load_split("dermamnist", "train", tmp_path, verify_md5=False, size=64, image_size=64)
    assert big.images.shape == (40, 3, 64, 64)
    cfg = load_config(None, [f"data.root='{tmp_path}'", "data.dataset=dermamnist", "data.size=64",
                             "data.image_size=32", "data.verify_md5=false"])
    assert load_from_config(cfg.data, "val").images.shape == (10, 3, 32, 32)
    missing = _one_line_error(load_split, "dermamnist", "train", tmp_path, download=False, size=128)
    assert "dermamnist_128.npz not found" in missing and "download is off" in missing
    assert "dermamnist_64.npz" not in _one_line_error(load_split, "dermamnist", "train", tmp_path, download=False)
    md5 = _one_line_error(load_split, "dermamnist", "train", tmp_path, size=64)  # its own official MD5, not 28's
    assert dataset_info("dermamnist").md5s[64] in md5 and dataset_info("dermamnist").md5 not in md5


def test_a_size_medmnist_plus_lacks_is_refused_at_load():
    from fedrobust.config import load_config
    from fedrobust.errors import ConfigError

    with pytest.raises(ConfigError, match=r"data\.size: got 32; choose one of 28, 64, 128, 224"):
        load_config(None, ["data.size=32"])
