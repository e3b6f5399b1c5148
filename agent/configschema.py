"""Turning a parsed TOML mapping into frozen dataclasses, strictly.

Every section of the configuration is a frozen dataclass whose fields carry
defaults.  :func:`build` walks a mapping against such a class using the type
hints, and rejects anything it does not expect -- an unknown key, a wrong type,
an enum value that does not exist -- with a :class:`ConfigError` naming the
dotted key path.  Supported field types: ``bool``, ``int``, ``float``, ``str``,
``pathlib.Path``, ``enum.Enum`` subclasses, nested dataclasses, ``X | None``,
``tuple[X, ...]`` and ``dict[str, X]``.

A field may carry ``metadata={"min": a, "max": b}`` for numeric bounds or
``metadata={"check": fn}`` where ``fn(value) -> str | None`` returns an error
message.
"""

from __future__ import annotations

import dataclasses
import enum
import pathlib
import types
import typing
from collections.abc import Mapping
from typing import Any, TypeVar

from agent.errors import ConfigError

T = TypeVar("T")


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _describe(value: object) -> str:
    return f"{type(value).__name__} {value!r}"[:120]


def _convert(tp: Any, value: object, path: str) -> object:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        non_none = [a for a in args if a is not type(None)]
        if len(non_none) == 1:
            return _convert(non_none[0], value, path)
        raise ConfigError(path, "unsupported union type in schema")
    if origin is tuple:
        args = typing.get_args(tp)
        if not isinstance(value, list | tuple):
            raise ConfigError(path, f"expected a list, got {_describe(value)}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(args[0], v, f"{path}[{i}]") for i, v in enumerate(value))
        if len(args) != len(value):
            raise ConfigError(path, f"expected {len(args)} items, got {len(value)}")
        pairs = enumerate(zip(args, value, strict=True))
        return tuple(_convert(a, v, f"{path}[{i}]") for i, (a, v) in pairs)
    if origin is dict:
        key_tp, val_tp = typing.get_args(tp)
        if not isinstance(value, Mapping):
            raise ConfigError(path, f"expected a table, got {_describe(value)}")
        return {
            str(_convert(key_tp, k, path)): _convert(val_tp, v, _join(path, str(k)))
            for k, v in value.items()
        }
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        if not isinstance(value, Mapping):
            raise ConfigError(path, f"expected a table, got {_describe(value)}")
        return build(tp, value, path)
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        allowed = [m.value for m in tp]
        for member in tp:
            if member.value == value:
                return member
        raise ConfigError(path, f"must be one of {allowed}, got {value!r}")
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(path, f"expected true or false, got {_describe(value)}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(path, f"expected an integer, got {_describe(value)}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(path, f"expected a number, got {_describe(value)}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(path, f"expected a string, got {_describe(value)}")
        return value
    if tp is pathlib.Path:
        if not isinstance(value, str) or not value:
            raise ConfigError(path, f"expected a path string, got {_describe(value)}")
        return pathlib.Path(value)
    raise ConfigError(path, f"unsupported schema type {tp!r}")


def _check_bounds(field: dataclasses.Field[Any], value: object, path: str) -> None:
    meta = field.metadata
    if isinstance(value, int | float) and not isinstance(value, bool):
        if "min" in meta and value < meta["min"]:
            raise ConfigError(path, f"must be >= {meta['min']}, got {value!r}")
        if "max" in meta and value > meta["max"]:
            raise ConfigError(path, f"must be <= {meta['max']}, got {value!r}")
    check = meta.get("check")
    if check is not None:
        problem = check(value)
        if problem:
            raise ConfigError(path, str(problem))


def build(cls: type[T], data: Mapping[str, object], path: str = "") -> T:
    """Build dataclass ``cls`` from ``data``; unknown keys are an error."""
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls!r} is not a dataclass")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    for key in data:
        if key not in fields:
            known = ", ".join(sorted(fields)) or "none"
            raise ConfigError(_join(path, str(key)), f"unknown key (known keys: {known})")
    kwargs: dict[str, object] = {}
    for name, field in fields.items():
        if name not in data:
            continue
        sub = _join(path, name)
        value = _convert(hints[name], data[name], sub)
        _check_bounds(field, value, sub)
        kwargs[name] = value
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise ConfigError(path, str(exc)) from exc


def validate_defaults(cls: type[Any], path: str = "") -> None:
    """Check that the defaults of ``cls`` satisfy their own bounds (used by tests)."""
    instance = cls()
    for field in dataclasses.fields(cls):
        value = getattr(instance, field.name)
        sub = _join(path, field.name)
        _check_bounds(field, value, sub)
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            validate_defaults(type(value), sub)


def to_mapping(instance: object) -> dict[str, object]:
    """The inverse of :func:`build`, for printing the effective configuration."""

    def plain(value: object) -> object:
        if isinstance(value, enum.Enum):
            return value.value
        if isinstance(value, pathlib.Path):
            return str(value)
        if isinstance(value, tuple):
            return [plain(v) for v in value]
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
        return value

    result = plain(instance)
    assert isinstance(result, dict)
    return result
