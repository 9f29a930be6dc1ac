"""Name → class registries, so a new residual, method, probe, metric or component is one decorated class (or
factory), and the parameter convention they share.

Example::

    RESIDUALS = Registry("residual")

    @RESIDUALS.register("highpass")
    class HighPass(Residual): ...

    RESIDUALS.create("highpass", sigma=1.0)

:func:`all_registries` lists every registry with the built-in entries loaded (what ``modelprint list`` prints).
:class:`Parametrised` gives residuals and fingerprint methods scikit-learn's ``get_params``/``set_params``, which
probes and membership attacks get from scikit-learn's ``BaseEstimator``.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

from modelprint.errors import RegistryError

T = TypeVar("T")
P = TypeVar("P", bound="Parametrised")

#: Every registry by kind, filled as the modules that create them are imported.
_REGISTRIES: dict[str, Registry[Any]] = {}
#: The modules whose import creates modelprint's registries and registers their built-in entries.
BUILTIN_MODULES = (
    "modelprint.residuals",
    "modelprint.methods",
    "modelprint.evaluation.metrics",
    "modelprint.synthesis.space",
    "modelprint.zoo.families",
    "modelprint.probes",
    "modelprint.provenance",
    "modelprint.causal",
)


class Registry(Generic[T]):
    """Maps names to classes (or factories) of one kind."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, type[T]] = {}
        _REGISTRIES[kind] = self

    def register(self, name: str) -> Callable[[type[T]], type[T]]:
        """Class (or factory) decorator that registers ``cls`` under ``name`` and sets ``cls.name``."""

        def decorate(cls: type[T]) -> type[T]:
            if name in self._entries and self._entries[name] is not cls:
                raise RegistryError(f"{self.kind} {name!r} is already registered")
            self._entries[name] = cls
            cls.name = name  # type: ignore[attr-defined]
            return cls

        return decorate

    def get(self, name: str) -> type[T]:
        """The class registered as ``name``; a clear error lists the known names otherwise.

        A name not registered yet is looked for once more after importing :data:`BUILTIN_MODULES`: a package may
        register entries in a registry of a lower layer (the causal package's DIRE views and ``decoupled`` are
        fingerprint methods), and ``load_method("dire-stats")`` must find them without the caller importing that
        package."""
        if name not in self._entries:
            discover_builtins()
        try:
            return self._entries[name]
        except KeyError:
            known = ", ".join(sorted(self._entries)) or "none"
            raise RegistryError(f"unknown {self.kind} {name!r}; known: {known}") from None

    def create(self, name: str, /, *args: Any, **params: Any) -> T:
        """Call the class (or factory) registered as ``name`` with ``args`` and ``params``."""
        return self.get(name)(*args, **params)

    def names(self) -> list[str]:
        """Every registered name, built-in entries of higher packages included (see :meth:`get`)."""
        discover_builtins()
        return sorted(self._entries)

    def describe(self) -> dict[str, str]:
        """Every name with the first line of its entry's docstring."""
        return {name: (inspect.getdoc(self._entries[name]) or "").split("\n")[0] for name in self.names()}

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())


def discover_builtins() -> None:
    """Import :data:`BUILTIN_MODULES` (once), so every built-in entry is registered.

    The modules are named, not imported at the top, because they sit above this module: the registries are where
    they register, this only discovers them."""
    for module in BUILTIN_MODULES:
        importlib.import_module(module)


def all_registries() -> dict[str, Registry[Any]]:
    """Every registry by kind (sorted), after :func:`discover_builtins` so the built-in entries are there."""
    discover_builtins()
    return {kind: _REGISTRIES[kind] for kind in sorted(_REGISTRIES)}


class Parametrised:
    """scikit-learn's parameter convention for objects that do their work in ``__init__`` (load weights, build a
    network): every ``__init__`` argument is kept as the attribute of the same name, so :meth:`get_params` returns
    them and ``type(x)(**x.get_params())`` rebuilds an equivalent object; :meth:`set_params` rebuilds through
    ``__init__`` again, so derived state (weights, sub-objects, ``version``) follows the new values."""

    @classmethod
    def _param_names(cls) -> list[str]:
        parameters = list(inspect.signature(cls.__init__).parameters.values())[1:]
        return [p.name for p in parameters if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """The ``__init__`` parameters by name (``deep`` is scikit-learn's; no parameter here nests others)."""
        return {name: getattr(self, name) for name in self._param_names()}

    def set_params(self: P, **params: Any) -> P:
        """Rebuild with some parameters changed; returns ``self``. Unknown names raise ``ValueError``."""
        valid = self._param_names()
        unknown = sorted(set(params) - set(valid))
        if unknown:
            raise ValueError(f"invalid parameter(s) {', '.join(unknown)} for {type(self).__name__}; valid: "
                             f"{', '.join(valid) or 'none'}")
        fresh = type(self)(**{**self.get_params(), **params})  # built aside: a refused value leaves self as it was
        vars(self).clear()
        vars(self).update(vars(fresh))
        return self

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({args})"
