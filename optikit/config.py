"""Turns text (CLI `key=value`, TOML tables) into frozen config dataclasses, at the edge, in one place."""
from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from typing import Any, Literal, TypeVar, get_args, get_origin

from optikit.errors import ConfigError

C = TypeVar("C")

_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}


def parse_pass_spec(spec: str) -> tuple[str, dict[str, str]]:
    """Splits `name[:key=value,...]`; a bare item after `key=a` extends a list (`ops=MatMul,Gather`)."""
    name, _, rest = spec.partition(":")
    name = name.strip()
    if not name:
        raise ConfigError(f"empty pass name in {spec!r}: write NAME or NAME:key=value,...")
    options: dict[str, str] = {}
    last: str | None = None
    for item in filter(None, (part.strip() for part in rest.split(","))):
        key, eq, value = item.partition("=")
        if not eq:
            if last is None:
                raise ConfigError(f"malformed option {item!r} in {spec!r}: write key=value, e.g. {name}:amount=0.5")
            options[last] += "," + item
            continue
        key = key.strip().replace("-", "_")
        if not key or not value.strip():
            raise ConfigError(f"malformed option {item!r} in {spec!r}: write key=value, e.g. {name}:amount=0.5")
        options[key] = value.strip()
        last = key
    if rest.strip() == "" and ":" in spec:
        raise ConfigError(f"no options after ':' in {spec!r}: write {name} or {name}:key=value")
    return name, options


def _resolve_hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _coerce(value: Any, hint: Any, where: str) -> Any:
    origin = get_origin(hint)
    if hint is Any:
        return value
    if origin is Literal:
        allowed = get_args(hint)
        for option in allowed:
            if value == option or (isinstance(value, str) and str(option) == value):
                return option
        raise ConfigError(f"{where} must be one of {', '.join(map(str, allowed))}, got {value!r}")
    if origin in (typing.Union, types.UnionType):
        args = get_args(hint)
        if value is None or (isinstance(value, str) and value.lower() in {"none", "null"}):
            if type(None) in args:
                return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if errors else f"{where}: cannot use {value!r}")
    if origin is tuple:
        items = value.split(",") if isinstance(value, str) else list(value)
        inner = get_args(hint)[0] if get_args(hint) else str
        return tuple(_coerce(item.strip() if isinstance(item, str) else item, inner, where) for item in items if item != "")
    if hint is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in _TRUE | _FALSE:
            return value.lower() in _TRUE
        raise ConfigError(f"{where} must be true or false, got {value!r}")
    if hint is int:
        if isinstance(value, bool):
            raise ConfigError(f"{where} must be an integer, got {value!r}")
        try:
            return int(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{where} must be an integer, got {value!r}") from None
    if hint is float:
        if isinstance(value, bool):
            raise ConfigError(f"{where} must be a number, got {value!r}")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{where} must be a number, got {value!r}") from None
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where} must be text, got {value!r}")
        return value
    return value


def build_config(cls: type[C], options: Mapping[str, Any], owner: str) -> C:
    """Builds `cls` from text or TOML values; an unknown key names the known ones."""
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}  # type: ignore[arg-type]
    hints = _resolve_hints(cls)
    kwargs: dict[str, Any] = {}
    for key, value in options.items():
        key = key.replace("-", "_")
        if key not in fields:
            known = ", ".join(sorted(fields)) or "none"
            raise ConfigError(f"unknown option {key!r} for {owner}: known options are {known}")
        kwargs[key] = _coerce(value, hints[key], f"{owner} option {key!r}")
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{owner}: {exc}") from None


def describe_options(cls: type) -> list[tuple[str, str, str]]:
    """(name, type, default) for each option, for `optikit passes`; a config that picks a strategy's own config
    (quantize's backends) describes its options itself."""
    own = getattr(cls, "describe_options", None)
    if callable(own):
        return list(own())
    hints = _resolve_hints(cls)
    rows = []
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        hint = hints[f.name]
        if get_origin(hint) is Literal:
            kind = "|".join(map(str, get_args(hint)))
        else:
            kind = getattr(hint, "__name__", str(hint)).replace("typing.", "")
        if f.default is not dataclasses.MISSING:
            default = repr(f.default)
        elif f.default_factory is not dataclasses.MISSING:
            default = repr(f.default_factory())
        else:
            default = "required"
        rows.append((f.name, kind, default))
    return rows


def config_to_dict(config: Any) -> dict[str, Any]:
    """A JSON-ready dict of a config dataclass (tuples become lists)."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(config).items()}


def require(condition: bool, message: str) -> None:
    """Raises ConfigError(message) unless `condition`; used in `__post_init__` validators."""
    if not condition:
        raise ConfigError(message)
