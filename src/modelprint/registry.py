"""A small name → class registry, so a new residual, method or metric is one decorated class.

Example::

    RESIDUALS = Registry("residual")

    @RESIDUALS.register("highpass")
    class HighPass(Residual): ...

    RESIDUALS.create("highpass", sigma=1.0)
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

from modelprint.errors import RegistryError

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps names to classes (or factories) of one kind."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, type[T]] = {}

    def register(self, name: str) -> Callable[[type[T]], type[T]]:
        """Class decorator that registers ``cls`` under ``name`` and sets ``cls.name``."""

        def decorate(cls: type[T]) -> type[T]:
            if name in self._entries and self._entries[name] is not cls:
                raise RegistryError(f"{self.kind} {name!r} is already registered")
            self._entries[name] = cls
            cls.name = name  # type: ignore[attr-defined]
            return cls

        return decorate

    def get(self, name: str) -> type[T]:
        """The class registered as ``name``; a clear error lists the known names otherwise."""
        try:
            return self._entries[name]
        except KeyError:
            known = ", ".join(sorted(self._entries)) or "none"
            raise RegistryError(f"unknown {self.kind} {name!r}; known: {known}") from None

    def create(self, name: str, **params: Any) -> T:
        """Instantiate the class registered as ``name`` with ``params``."""
        return self.get(name)(**params)

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
