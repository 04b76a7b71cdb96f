"""Reading a config: TOML files (with ``extends``), ``--set section.key=value`` overrides, and the
flat ``{"section.key": value}`` form Flower's run config carries; every value is type-checked.

A TOML file is merged onto the schema's defaults, then the overrides are applied, then
``fedrobust.config.validate`` range-checks it: a bad value fails at load with its key named, so a
long run never dies an hour in on a typo.
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
import typing
from pathlib import Path
from typing import Any

from fedrobust.config.schema import ExperimentConfig
from fedrobust.config.validate import validate
from fedrobust.errors import ConfigError


def _check_type(key: str, value: Any, hint: Any) -> Any:
    """Return ``value`` coerced to ``hint`` (int -> float only) or raise ConfigError."""
    origin = typing.get_origin(hint)
    if origin is list:
        (item,) = typing.get_args(hint)
        if isinstance(value, str):  # flat configs (Flower run_config) carry lists as strings
            value = _parse_list(value)
        if not isinstance(value, list):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        return [_check_type(f"{key}[{i}]", v, item) for i, v in enumerate(value)]
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint is float and isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{key}: must be a finite number, got {value}")
    if hint is int and isinstance(value, bool):
        raise ConfigError(f"{key}: expected an integer, got {value!r}")
    if not isinstance(value, hint):
        raise ConfigError(f"{key}: expected {hint.__name__}, got {type(value).__name__} {value!r}")
    return value


def _parse_list(raw: str) -> Any:
    """'[0.1, 0.2]' (TOML) or '0.1,0.2' or '' -> list; anything else is returned unchanged."""
    text = raw.strip()
    if not text:
        return []
    if not text.startswith("["):
        text = "[" + ",".join(_quote_word(w) for w in text.split(",")) + "]"
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return raw


def _quote_word(word: str) -> str:
    word = word.strip()
    try:
        tomllib.loads(f"v = {word}")
        return word
    except tomllib.TOMLDecodeError:
        return f'"{word}"'


def _build_section(name: str, cls: type, values: dict[str, Any]) -> Any:
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(
            f"{name}.{unknown[0]}: unknown key; valid keys in [{name}] are {', '.join(sorted(known))}"
        )
    kwargs = {k: _check_type(f"{name}.{k}", v, hints[k]) for k, v in values.items()}
    return cls(**kwargs)


def _parse_value(raw: str) -> Any:
    """Parse an override as a TOML value; bare words are strings (``model.name=resnet18``)."""
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw


def apply_overrides(tree: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``section.key=value`` strings onto a nested dict (in place) and return it."""
    for item in overrides:
        key, sep, raw = item.partition("=")
        section, dot, leaf = key.strip().partition(".")
        if not sep or not dot or not leaf:
            raise ConfigError(f"--set {item!r}: expected section.key=value, e.g. train.lr=0.01")
        tree.setdefault(section, {})[leaf] = _parse_value(raw.strip())
    return tree


def from_dict(tree: dict[str, Any]) -> ExperimentConfig:
    """Build a config from a nested dict (e.g. parsed TOML): types, then ``validate``."""
    sections = {f.name: f.type for f in dataclasses.fields(ExperimentConfig)}
    hints = typing.get_type_hints(ExperimentConfig)
    unknown = sorted(set(tree) - set(sections))
    if unknown:
        raise ConfigError(f"[{unknown[0]}]: unknown section; valid sections are {', '.join(sections)}")
    tree = with_task_defaults(tree)
    built = {}
    for name, values in tree.items():
        if not isinstance(values, dict):
            raise ConfigError(f"{name}: expected a table [{name}], got {values!r}")
        built[name] = _build_section(name, hints[name], values)
    cfg = ExperimentConfig(**built)
    validate(cfg)
    return cfg


def with_task_defaults(tree: dict[str, Any]) -> dict[str, Any]:
    """``tree`` with the defaults of its ``data.task`` under every key it leaves out (a copy)."""
    from fedrobust.tasks.specs import SPECS

    out = {k: dict(v) if isinstance(v, dict) else v for k, v in tree.items()}
    data = out.get("data")
    task = data.get("task", "classification") if isinstance(data, dict) else None
    spec = SPECS.get(task) if isinstance(task, str) else None
    for key, value in (spec.defaults.items() if spec else ()):
        section, _, leaf = key.partition(".")
        if isinstance(out.setdefault(section, {}), dict):
            out[section].setdefault(leaf, value)
    return out


def to_flat(cfg: ExperimentConfig) -> dict[str, bool | int | float | str]:
    """``{"section.key": scalar}`` for Flower's run_config (lists become TOML array strings)."""
    flat: dict[str, bool | int | float | str] = {}
    for section, values in cfg.to_dict().items():
        for key, value in values.items():
            flat[f"{section}.{key}"] = (
                "[" + ", ".join(f'"{v}"' if isinstance(v, str) else repr(v) for v in value) + "]"
                if isinstance(value, list) else value
            )
    return flat


def from_flat(flat: dict[str, Any]) -> ExperimentConfig:
    """Inverse of :func:`to_flat`; keys without a dot (Flower's own) are ignored."""
    tree: dict[str, dict[str, Any]] = {}
    for key, value in flat.items():
        section, dot, leaf = key.partition(".")
        if dot:
            tree.setdefault(section, {})[leaf] = value
    return from_dict(tree)


def _merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in top.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def _read_tree(path: Path, seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """Parse a TOML config; a top-level ``extends = "base.toml"`` (relative to the file) is loaded
    first and overridden table by table, so study configs state only what differs."""
    if not path.is_file():
        raise ConfigError(f"config file {path} not found; pass an existing file, e.g. configs/quickstart.toml")
    if path.resolve() in seen:
        raise ConfigError(f"{path}: 'extends' loops back to itself")
    try:
        tree = tomllib.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start}); save the config as UTF-8 TOML") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc}); fix the syntax at that line") from None
    parent = tree.pop("extends", None)
    if parent is None:
        return tree
    if not isinstance(parent, str):
        raise ConfigError(f"{path}: extends must be a file name, got {parent!r}")
    return _merge(_read_tree(path.parent / parent, (*seen, path.resolve())), tree)


def load_config(path: str | Path | None, overrides: list[str] | None = None) -> ExperimentConfig:
    """Load a TOML file (or only defaults when ``path`` is None) and apply overrides."""
    tree = _read_tree(Path(path)) if path is not None else {}
    return from_dict(apply_overrides(tree, overrides or []))


