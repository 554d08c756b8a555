"""One registry type for every plugin kind, fed by entry points (lazy: nothing is imported until asked)."""
from __future__ import annotations

from collections.abc import Callable, Iterator
from importlib.metadata import entry_points
from typing import Generic, TypeVar

from optikit.errors import ConfigError, UnknownPluginError

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps kebab-case names to plugins; built-ins and third parties both arrive through `group`."""

    def __init__(self, group: str, kind: str, plural: str | None = None) -> None:
        self.group = group
        self.kind = kind
        self.plural = plural or f"{kind}s"
        self._loaded: dict[str, T] = {}
        self._loaders: dict[str, Callable[[], T]] | None = None

    def _discover(self) -> dict[str, Callable[[], T]]:
        if self._loaders is None:
            loaders: dict[str, Callable[[], T]] = {}
            for ep in entry_points(group=self.group):
                if ep.name in loaders:
                    # Two distributions claiming one name would make the choice depend on install order.
                    raise ConfigError(f"two {self.kind}s are registered as {ep.name!r}: uninstall one of them")
                loaders[ep.name] = ep.load
            self._loaders = loaders
        return self._loaders

    def register(self, name: str, plugin: T) -> None:
        """Registers `plugin` in this process (tests, notebooks); installed plugins use entry points."""
        if name in self.names():
            raise ConfigError(f"a {self.kind} named {name!r} is already registered: choose another name")
        self._loaded[name] = plugin

    def unregister(self, name: str) -> None:
        self._loaded.pop(name, None)

    def names(self) -> list[str]:
        return sorted(set(self._discover()) | set(self._loaded))

    def get(self, name: str) -> T:
        if name in self._loaded:
            return self._loaded[name]
        loader = self._discover().get(name)
        if loader is None:
            known = ", ".join(self.names()) or "none"
            raise UnknownPluginError(f"unknown {self.kind} {name!r}: known {self.plural} are {known}")
        plugin = loader()
        self._loaded[name] = plugin
        return plugin

    def __iter__(self) -> Iterator[tuple[str, T]]:
        for name in self.names():
            yield name, self.get(name)
