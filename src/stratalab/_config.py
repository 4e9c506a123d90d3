"""The one ``to_dict`` / ``from_dict`` of every config dataclass (TrainConfig, D3MConfig,
GeorgeConfig, ScalingConfig): tuples are written as lists (JSON/YAML), unknown keys are refused by
name, then the dataclass checks its values."""

from __future__ import annotations

from dataclasses import asdict, fields
from typing import Any, TypeVar

T = TypeVar("T")


def config_from_dict(cls: type[T], d: dict[str, Any], what: str) -> T:
    """``cls(**d)`` after refusing keys that are not fields of ``cls`` (``what`` names the config)."""
    if not isinstance(d, dict):
        raise ValueError(f"{what} must be a mapping of settings, got {type(d).__name__}.")
    names = {f.name for f in fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(d) - names)
    if unknown:
        raise ValueError(f"unknown {what} key {unknown[0]!r}; known keys: {', '.join(sorted(names))}.")
    return cls(**d)


def config_to_dict(config: Any) -> dict[str, Any]:
    """``dataclasses.asdict`` with every tuple field as a list, so the dict round-trips through
    JSON and YAML unchanged."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(config).items()}


def split_flat(d: dict[str, Any], train_fields: set[str], own_fields: set[str], what: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """A flat settings mapping (as flags, recipes and files written before configs were composed
    give them) split into the nested training config's keys and the config's own keys; a key that
    is neither is refused by name. The config's own fields win where a name is in both."""
    unknown = sorted(set(d) - train_fields - own_fields - {"train"})
    if unknown:
        raise ValueError(f"unknown {what} key {unknown[0]!r}; known keys: {', '.join(sorted(own_fields | train_fields))}.")
    nested = d.get("train") or {}
    if not isinstance(nested, dict):
        raise ValueError(f"{what}: 'train' must be a mapping of training settings, got {type(nested).__name__}.")
    train = {**nested, **{k: v for k, v in d.items() if k in train_fields and k not in own_fields}}
    own = {k: v for k, v in d.items() if k in own_fields}
    return train, own
