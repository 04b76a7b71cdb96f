import pytest
import tomli_w

from fedrobust.config import ExperimentConfig, apply_overrides, from_dict, load_config
from fedrobust.errors import ConfigError


def _err(tree) -> str:
    with pytest.raises(ConfigError) as info:
        from_dict(tree)
    msg = str(info.value)
    assert "\n" not in msg
    return msg


def test_defaults_are_valid():
    cfg = load_config(None)
    assert isinstance(cfg, ExperimentConfig)
    assert cfg.data.dataset == "breastmnist"


def test_repo_configs_load():
    from pathlib import Path

    configs = sorted((Path(__file__).parents[1] / "configs").rglob("*.toml"))
    assert configs
    for path in configs:
        load_config(path)


@pytest.mark.parametrize(
    ("tree", "key"),
    [
        ({"train": {"epoch": 3}}, "train.epoch"),
        ({"trian": {}}, "[trian]"),
        ({"train": {"lr": "fast"}}, "train.lr"),
        ({"train": {"epochs": 2.5}}, "train.epochs"),
        ({"train": {"epochs": True}}, "train.epochs"),
        ({"augment": {"eps": -0.1}}, "augment.eps"),
        ({"augment": {"mode": "fgsn"}}, "augment.mode"),
        ({"partition": {"alpha": 0.0}}, "partition.alpha"),
        ({"model": {"name": "vgg99"}}, "model.name"),
        ({"data": {"dataset": "cifar10"}}, "data.dataset"),
        ({"data": {"dataset": "chestmnist"}}, "data.dataset"),
        ({"augment": {"mode": "pgd", "fused": True}}, "augment.fused"),
        ({"augment": {"mode": "fgsm", "fused": True, "combine": "replace"}}, "augment.fused"),
        ({"eval": {"fgsm_eps": [0.1, -1]}}, "eval.fgsm_eps[1]"),
        ({"augment": {"classic": ["flip", "mixup"]}}, "augment.classic[1]"),
    ],
)
def test_bad_values_name_the_key(tree, key):
    assert _err(tree).startswith(key)


def test_int_is_accepted_for_float():
    assert from_dict({"train": {"lr": 1}}).train.lr == 1.0


def test_overrides_parse_toml_values_and_bare_words():
    tree = apply_overrides({}, ["train.lr=0.01", "model.name=student", "augment.classic=['flip']",
                                "data.as_rgb=true"])
    cfg = from_dict(tree)
    assert cfg.train.lr == 0.01 and cfg.model.name == "student"
    assert cfg.augment.classic == ["flip"] and cfg.data.as_rgb is True
    with pytest.raises(ConfigError, match=r"section\.key=value"):
        apply_overrides({}, ["lr=0.1"])


def test_resolved_config_round_trips(tmp_path):
    cfg = load_config(None, ["augment.mode=both", "augment.eps=0.002"])
    path = tmp_path / "c.toml"
    path.write_text(tomli_w.dumps(cfg.to_dict()))
    assert load_config(path) == cfg


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[train\nlr = 1")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(bad)


def test_extends_merges_table_by_table(tmp_path):
    (tmp_path / "base.toml").write_text('[train]\nepochs = 7\nlr = 0.5\n[model]\nname = "student"\n')
    (tmp_path / "child.toml").write_text('extends = "base.toml"\n[train]\nlr = 0.1\n')
    cfg = load_config(tmp_path / "child.toml")
    assert (cfg.train.epochs, cfg.train.lr, cfg.model.name) == (7, 0.1, "student")
    (tmp_path / "loop.toml").write_text('extends = "loop.toml"\n')
    with pytest.raises(ConfigError, match="loops"):
        load_config(tmp_path / "loop.toml")
