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
import inspect
import json
import pathlib
import re
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


def _plain(value: object) -> object:
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, pathlib.Path):
        return str(value)
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    return value


def to_mapping(instance: object) -> dict[str, object]:
    """The inverse of :func:`build`, for printing the effective configuration."""
    result = _plain(instance)
    assert isinstance(result, dict)
    return result


# --- The configuration reference -------------------------------------------------------
#
# Every key is described in its section class's docstring, Google style:
#
#     Attributes:
#         key: What it does, in one or two sentences (units named).
#
#         fps (frames/s): A key whose unit its name does not say.
#
# Without a unit in parentheses it follows from the key's suffix (``_seconds``,
# ``_bytes``, ...); "-" says the key has none although its suffix suggests one.
# ``edge-agent config reference`` renders all of it into docs/config.md.

_UNIT_SUFFIXES = (
    ("_bytes_per_second", "bytes/s"),
    ("_rate_per_second", "1/s"),
    ("_seconds", "s"),
    ("_ms", "ms"),
    ("_bytes", "bytes"),
    ("_days", "days"),
    ("_baud", "baud"),
)


@dataclasses.dataclass(frozen=True)
class KeyDoc:
    """One configuration key as the reference shows it."""

    key: str
    type: str
    default: str
    unit: str
    bounds: str
    description: str | None


_ATTRIBUTE = re.compile(r"^([A-Za-z_]\w*)(?:\s*\(([^)]*)\))?:\s*(.*)$")


def attribute_docs(cls: type[Any]) -> dict[str, tuple[str, str]]:
    """``name (unit): text`` entries of the ``Attributes:`` section of ``cls``'s docstring.

    Maps each name to its unit ("" when not given) and its text, continuation
    lines joined.
    """
    doc = cls.__doc__ or ""
    result: dict[str, tuple[str, str]] = {}
    inside = False
    current: str | None = None
    for line in inspect.cleandoc(doc).splitlines():
        if line.strip() == "Attributes:":
            inside, current = True, None
            continue
        if not inside or not line.strip():
            continue
        indent = len(line) - len(line.lstrip())
        if indent == 0:
            inside = False  # the next section
            continue
        match = _ATTRIBUTE.match(line.strip())
        if indent <= 4 and match:
            current = match.group(1)
            result[current] = (match.group(2) or "", match.group(3))
        elif current is not None:
            unit, text = result[current]
            result[current] = (unit, f"{text} {line.strip()}".strip())
    return result


def type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in typing.get_args(tp) if a is not type(None)]
        return f"{type_name(inner[0])} (optional)"
    if origin is tuple:
        return f"list of {type_name(typing.get_args(tp)[0])}"
    if origin is dict:
        return f"table of {type_name(typing.get_args(tp)[1])}"
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return " | ".join(f'"{m.value}"' for m in tp)
    if tp is pathlib.Path:
        return "path"
    if tp is str:
        return "string"
    if tp is int:
        return "integer"
    if tp is float:
        return "number"
    if tp is bool:
        return "boolean"
    return str(getattr(tp, "__name__", tp))


def toml_value(value: object) -> str:
    """``value`` (as :func:`to_mapping` gives it) as a TOML literal."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"no TOML form for {type(value).__name__}")


def _unit(field: dataclasses.Field[Any], documented: str) -> str:
    if documented:
        return "" if documented == "-" else documented
    for suffix, name in _UNIT_SUFFIXES:
        if field.name.endswith(suffix):
            return name
    return ""


def _bounds(field: dataclasses.Field[Any]) -> str:
    low, high = field.metadata.get("min"), field.metadata.get("max")
    if low is None and high is None:
        return ""
    return f"{'' if low is None else low} … {'' if high is None else high}"


def reference(cls: type[Any], path: str = "") -> list[tuple[str, type[Any], list[KeyDoc]]]:
    """Sections (dotted name, class, keys) of ``cls`` and its nested sections, in order."""
    hints = typing.get_type_hints(cls)
    docs = attribute_docs(cls)
    defaults = cls()
    keys: list[KeyDoc] = []
    nested: list[tuple[str, type[Any], list[KeyDoc]]] = []
    for field in dataclasses.fields(cls):
        tp = hints[field.name]
        sub = _join(path, field.name)
        if dataclasses.is_dataclass(tp) and isinstance(tp, type):
            nested += reference(tp, sub)
            continue
        value = _plain(getattr(defaults, field.name))
        unit, text = docs.get(field.name, ("", ""))
        keys.append(
            KeyDoc(
                sub,
                type_name(tp),
                "(unset)" if value is None else toml_value(value),
                _unit(field, unit),
                _bounds(field),
                text or None,
            )
        )
    return [(path, cls, keys), *nested]


def undocumented(cls: type[Any]) -> list[str]:
    """Dotted keys without a description (and stale descriptions of keys that are gone)."""
    problems: list[str] = []
    for section, section_cls, keys in reference(cls):
        problems += [k.key for k in keys if k.description is None]
        names = {f.name for f in dataclasses.fields(section_cls)}
        problems += [
            f"{_join(section, name)} (described in {section_cls.__name__}, but no such key)"
            for name in attribute_docs(section_cls)
            if name not in names
        ]
    return problems


def summary(cls: type[Any]) -> str:
    """The first paragraph of a section class's docstring ("" without one)."""
    doc = cls.__doc__ or ""
    if not doc or doc.startswith(f"{cls.__name__}("):  # dataclass's generated signature
        return ""
    paragraph = inspect.cleandoc(doc).split("\n\n")[0]
    return "" if paragraph.strip() == "Attributes:" else " ".join(paragraph.split())


def _cell(text: str) -> str:
    # Docstrings quote code reST-style (double backquotes); Markdown takes single ones.
    return text.replace("``", "`").replace("|", "\\|").replace("\n", " ")


def render_reference(cls: type[Any], intro: str) -> str:
    """The Markdown reference of configuration class ``cls`` (docs/config.md)."""
    out = [intro.rstrip(), ""]
    for section, section_cls, keys in reference(cls):
        if not keys:
            continue
        out.append(f"## `[{section}]`" if section else "## Top level")
        out.append("")
        text = summary(section_cls)
        if text:
            out += [text.replace("``", "`"), ""]
        out.append("| Key | Type | Default | Unit | Range | Description |")
        out.append("|---|---|---|---|---|---|")
        for k in keys:
            name = k.key.rpartition(".")[2]
            default = f"`{k.default}`" if k.default != "(unset)" else "(unset)"
            text = k.description or "**undocumented**"
            cells = [f"`{name}`", k.type, default, k.unit, k.bounds, text]
            out.append("| " + " | ".join(_cell(c) for c in cells) + " |")
        out.append("")
    return "\n".join(out)


def to_toml(instance: object) -> str:
    """A configuration instance as TOML that :func:`build` reads back to the same value.

    Unset optional keys (TOML has no null) are shown as comments.
    """
    lines: list[str] = []

    def emit(table: dict[str, object], path: str) -> None:
        scalars = [(k, v) for k, v in table.items() if not isinstance(v, dict)]
        tables = [(k, v) for k, v in table.items() if isinstance(v, dict)]
        if path and (scalars or not tables):
            if lines:
                lines.append("")
            lines.append(f"[{path}]")
        for key, value in scalars:
            lines.append(f"# {key} = (unset)" if value is None else f"{key} = {toml_value(value)}")
        for key, value in tables:
            assert isinstance(value, dict)
            emit(value, _join(path, key))

    emit(to_mapping(instance), "")
    return "\n".join(lines) + "\n"
